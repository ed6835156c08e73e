"""The import graph of the CLI: a client command loads what it uses, not the daemon.

Each command runs in a fresh interpreter, as the `extsock` script runs it, against a real
control server (on the fake daemon) or the fake charon; the modules it imported are read
from `sys.modules` once it has finished. `extsock --version` took 0.7-0.8 s when every
command imported app.py (the config reader, the policy schema, the control server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from extsock_py.adapters.control import protocol, wire
from extsock_py.adapters.control.server import ControlServer, attach_control
from extsock_py.cli import failover, swanctl
from extsock_py.cli.root import PRODUCT_COMMANDS, TOOL_COMMANDS, load_command
from extsock_py.domain.notices import ConnectionNotice, NoticeKind
from tests.fakes.fake_charon import FakeCharon
from tests.unit.test_control_support import HOME, Harness, running_daemon, short_dir

REPO = Path(__file__).parents[2]

# What only the daemon needs: a client command that imports one of these pays for it.
DAEMON_ONLY = (
    "extsock_py.app",
    "extsock_py.mainloop",
    "extsock_py.usecases",
    "extsock_py.adapters.config_reader",
    "extsock_py.adapters.policy_conf",
    "extsock_py.adapters.swanctl",
    "extsock_py.adapters.control.server",
    "extsock_py.adapters.control.protocol",
    "extsock_py.cli.daemon",
    "extsock_py.lab",
    "pydantic",
    "cryptography",
)
# What only the commands that talk to charon need.
CHARON_ONLY = ("vici", "extsock_py.adapters.vici.commands", "extsock_py.cli.swanctl")
# What only the commands that talk to the daemon need.
CONTROL_ONLY = ("extsock_py.adapters.control.client", "extsock_py.cli.failover")
# What the commands that log need (cli/root.py's QUIET_COMMANDS do not log).
LOGGING = ("logging", "extsock_py.adapters.logging_setup")

_PROBE = """\
import json, os, sys
try:
    from extsock_py.cli import main
    main(sys.argv[1:], prog_name="extsock")
finally:
    with open(os.environ["EXTSOCK_TEST_MODULES"], "w") as out:
        json.dump(sorted(sys.modules), out)
"""


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str
    modules: frozenset[str]

    def loaded(self, prefixes: tuple[str, ...]) -> list[str]:
        """The modules imported that are one of `prefixes` or inside one of them."""
        return sorted(
            m for m in self.modules if any(m == p or m.startswith(p + ".") for p in prefixes)
        )


def extsock(tmp_path: Path, *args: str) -> Ran:
    """`extsock ARGS` in a fresh interpreter; what it printed and every module it imported."""
    listing = tmp_path / "modules.json"
    env = {**os.environ, "EXTSOCK_TEST_MODULES": str(listing)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    modules = frozenset(json.loads(listing.read_text()))
    return Ran(proc.returncode, proc.stdout, proc.stderr, modules)


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running_daemon() as h:
        yield h


@pytest.fixture
def server(harness: Harness) -> Iterator[ControlServer]:
    with short_dir() as d:
        srv = attach_control(harness.operator, harness.publisher, d / "extsock.sock")
        srv.start()
        yield srv
        srv.close()


def test_version_option_imports_no_command(tmp_path: Path) -> None:
    ran = extsock(tmp_path, "--version")

    assert (ran.code, ran.stdout) == (0, "extsock, version 0.1.0\n")
    assert ran.loaded(DAEMON_ONLY + CHARON_ONLY + CONTROL_ONLY + LOGGING) == []


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("failover", "status"), "CONNECTION"),
        (("failover", "history", "home"), ""),
        (("health",), "healthy"),
    ],
)
def test_daemon_clients_import_the_control_client_only(
    tmp_path: Path, harness: Harness, server: ControlServer, args: tuple[str, ...], expect: str
) -> None:
    harness.bring_up("home")
    ran = extsock(tmp_path, "--control-socket", str(server.path), *args)

    assert ran.code == 0, ran.stderr
    assert expect in ran.stdout
    assert ran.loaded(CONTROL_ONLY) == list(CONTROL_ONLY)  # the probe saw the command run
    assert ran.loaded(DAEMON_ONLY + CHARON_ONLY + LOGGING) == []


def test_watch_imports_the_control_client_only(
    tmp_path: Path, harness: Harness, server: ControlServer
) -> None:
    done = threading.Event()
    notice = ConnectionNotice(NoticeKind.FAILOVER, "home", gateway=HOME[1], from_gateway=HOME[0])

    def publish_until_done() -> None:  # (events before `watch` subscribes reach no one)
        for _ in range(3000):  # bounded: 60 s at most
            if done.wait(0.02):
                return
            harness.publish(notice)

    publisher = threading.Thread(target=publish_until_done)
    publisher.start()
    try:
        ran = extsock(tmp_path, "--control-socket", str(server.path), "watch", "--count", "1")
    finally:
        done.set()
        publisher.join()

    assert ran.code == 0, ran.stderr
    assert f"home: failover {HOME[0]} -> {HOME[1]}" in ran.stdout
    assert ran.loaded(DAEMON_ONLY + CHARON_ONLY + LOGGING) == []


@pytest.mark.parametrize(
    ("args", "expect"),
    [(("version",), "strongSwan 5.9.8 charon"), (("list-sas",), ""), (("stats",), "")],
)
def test_charon_clients_import_no_daemon_part(
    tmp_path: Path, args: tuple[str, ...], expect: str
) -> None:
    with FakeCharon() as fake:
        ran = extsock(tmp_path, "--uri", fake.uri, *args)

    assert ran.code == 0, ran.stderr
    assert expect in ran.stdout
    assert "extsock_py.adapters.vici.commands" in ran.modules
    assert "extsock_py.adapters.logging_setup" in ran.modules  # set up: ViciCharon logs
    assert ran.loaded(DAEMON_ONLY + CONTROL_ONLY) == []


def test_the_daemon_commands_do_import_the_app(tmp_path: Path) -> None:
    """The other side of the check: `run` and `check-config` load the daemon (so the
    probe would see it if a client command did)."""
    ran = extsock(tmp_path, "check-config", "--file", str(tmp_path / "missing.conf"))

    assert ran.code == 1
    assert "extsock_py.app" in ran.modules
    assert "extsock_py.adapters.config_reader" in ran.modules


def test_the_command_table_names_every_command_once() -> None:
    """cli/root.py's table (name -> module, attribute) and the modules' own lists agree."""
    modules = {c.name for c in (*failover.COMMANDS, *swanctl.COMMANDS)} | {
        "run",
        "check-config",
        "xfrmi-updown",
    }

    assert set(PRODUCT_COMMANDS) == modules
    for name in [*PRODUCT_COMMANDS, *TOOL_COMMANDS]:
        command = load_command(name)
        assert isinstance(command, click.Command) and command.name == name
    assert load_command("nosuch") is None


def test_the_clients_event_kinds_are_the_servers() -> None:
    """wire.py names the event kinds without the models; protocol.py has one for each."""
    assert frozenset(protocol.EVENT_MODELS) == wire.EVENT_KINDS
    assert protocol.EVENT_KINDS is wire.EVENT_KINDS
