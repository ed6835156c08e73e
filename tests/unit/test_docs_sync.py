"""The man pages and the bash completion are generated (tools/) and committed: they match
what the code says now, they read the code (a new option, key or bound shows up), the
troff is clean for groff, and the completion completes with the real `extsock`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import click
import pytest

from extsock_py.domain.policy import Accepts, FailoverPolicy, Form
from tools import completion, man_conf, man_extsock
from tools.__main__ import TARGETS, main

ROOT = Path(__file__).resolve().parents[2]
GENERATED = [(path, render) for targets in TARGETS.values() for path, render in targets.items()]


@pytest.mark.parametrize(("shown", "render"), GENERATED, ids=[p for p, _ in GENERATED])
def test_the_committed_file_is_what_the_code_generates(
    shown: str, render: Callable[[], str]
) -> None:
    path = ROOT / shown
    assert path.exists(), f"{shown} is missing: run make man / make completion"
    assert path.read_text() == render(), f"{shown} is out of date: run make man / make completion"


def test_the_check_mode_names_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["man"], root=tmp_path) == 0
    assert main(["man", "--check"], root=tmp_path) == 0
    page = tmp_path / "docs/man/extsock.conf.5"
    page.write_text(page.read_text().replace("connect_timeout", "connect_timeout_old", 1))
    assert main(["man", "--check"], root=tmp_path) == 1
    assert "docs/man/extsock.conf.5: out of date; run make man" in capsys.readouterr().err
    assert main(["completion", "--check"], root=tmp_path) == 1  # never written there


def test_the_command_page_reads_the_click_commands() -> None:
    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--uri", envvar="X_URI", default="unix:///x", show_default=True, help="Where.")
    def group(uri: str) -> None:
        """Top text."""

    @group.command("do-it")
    @click.argument("conn")
    @click.option("--dry-run", is_flag=True, help="Only say what `would` happen.")
    def do_it(conn: str, dry_run: bool) -> None:
        """Does it.

        \b
        keep  these
          lines
        """

    page = man_extsock.render(group)
    assert '.SS "extsock do-it"' in page
    assert "\\fBextsock\\fR \\fBdo\\-it\\fR \\fI[OPTIONS]\\fR \\fICONN\\fR" in page
    assert "\\fB\\-\\-dry\\-run\\fR\nOnly say what \\fBwould\\fR happen." in page
    assert ".nf\nkeep  these\n  lines\n.fi" in page
    assert "[default: unix:///x] Environment: \\fBX_URI\\fR." in page
    assert "\\fBX_URI\\fR\nAs \\-\\-uri" not in page and "\\fBX_URI\\fR\nAs --uri: Where." in page
    # -h/--help once, at the top, not under every command
    assert page.count("\\fB\\-h\\fR, \\fB\\-\\-help\\fR") == 1


def test_every_command_of_the_product_is_in_the_page() -> None:
    from extsock_py.cli.root import PRODUCT_COMMANDS, load_command

    page = (ROOT / "docs/man/extsock.8").read_text()
    assert len(PRODUCT_COMMANDS) >= 15
    for name in PRODUCT_COMMANDS:
        command = load_command(name)
        assert command is not None
        assert f'.SS "extsock {name}"' in page
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert f'.SS "extsock {name} {sub}"' in page
    assert '.SS "extsock lab"' not in page  # the lab is a tool around the product


@dataclass(frozen=True)
class _Wider(Accepts):
    """Accepts with a bound of a kind it does not have today."""

    lt: float | None = None


@dataclass(frozen=True)
class _Inner:
    """Inner things."""

    pause: Annotated[float, Accepts(Form.DURATION, ge=0.5, le=60.0)] = 2.0


@dataclass(frozen=True)
class _Policy:
    tries: Annotated[int, _Wider(ge=1, lt=5)] = 3
    mode: Annotated[str, Accepts(Form.CHOICE)] = "fast"
    inner: _Inner = field(default_factory=_Inner)


def test_the_config_page_reads_keys_defaults_and_bounds_from_the_schema() -> None:
    page = man_conf.render(_Policy)
    assert "\\fBtries\\fR\n\n.br\nWhole number; default 3; at least 1, less than 5." in page
    assert "\\fBinner.pause\\fR\n\n.br\nDuration; default 2s; at least 500ms, at most 1m." in page
    assert '.SS "inner { }"' in page
    assert "    inner {\n        pause = 2s\n    }" in page


def test_every_key_has_its_sentence_and_no_sentence_is_stale() -> None:
    paths = {".".join(item.path) for item in man_conf.walk(FailoverPolicy)}
    assert paths - set(man_conf.DESCRIPTIONS) == set(), "keys without a description"
    assert set(man_conf.DESCRIPTIONS) - paths == set(), "descriptions of keys that are gone"
    for item in man_conf.walk(FailoverPolicy):
        if isinstance(item, man_conf.Key):
            for name, _ in item.bounds:
                assert name in man_conf.BOUND_WORDS, f"{name}: say how this bound reads"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff (groff-base) not installed")
@pytest.mark.parametrize("name", ["extsock.8", "extsock.conf.5"])
@pytest.mark.parametrize("width", ["", "-rLL=80n"])  # as printed; as man shows it (lintian)
def test_groff_formats_the_page_without_a_warning(name: str, width: str) -> None:
    device = ["-Tutf8", width] if width else []
    out = subprocess.run(
        ["groff", "-man", *device, "-ww", "-z", str(ROOT / "docs/man" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr


def _complete(words: str) -> list[str]:
    """What bash offers after `words` (the last one is being completed), with the committed
    script and the installed `extsock`."""
    script = ROOT / "contrib/bash-completion/extsock"
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({words})\n"
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        f'[[ "{words}" == *" " ]] && COMP_WORDS+=("") && COMP_CWORD=${{#COMP_WORDS[@]}}-1\n'
        '_extsock_completion extsock\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return [line for line in out.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_choices() -> None:
    assert completion.PROG == "extsock"
    assert _complete("extsock fail") == ["failover"]
    assert set(_complete("extsock failover s")) == {"status", "switch"}
    assert "--down-on-exit" in _complete("extsock run --d")
    assert _complete("extsock --log-level w") == ["warning"]
