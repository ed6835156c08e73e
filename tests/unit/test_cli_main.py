"""The `extsock` group: the product's commands load without the lab; the lab's on demand."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from extsock_py.cli import main


def test_the_product_cli_does_not_import_the_lab() -> None:
    probe = (
        "import sys, extsock_py.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith('extsock_py.lab')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_the_lab_commands_load_when_asked_for() -> None:
    result = CliRunner().invoke(main, ["lab", "--help"])
    assert result.exit_code == 0, result.output
    assert "network namespaces" in result.output
    listed = CliRunner().invoke(main, ["--help"])
    assert listed.exit_code == 0 and "  lab " in listed.output and "  run " in listed.output


def test_an_unknown_command_is_still_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nosuch"])
    assert result.exit_code == 2 and "No such command" in result.output
