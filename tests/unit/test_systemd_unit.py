"""systemd/extsock.service as `systemd-analyze security` scores it (issue 24: 2.2 or lower).

The score is systemd's own, computed offline from the unit file (nothing is installed or
started); tests/integration/test_systemd.py runs the daemon under the same unit."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "extsock.service"
MAX_EXPOSURE = 2.2
SCORE = re.compile(r"Overall exposure level for extsock\.service: (\d+\.\d+)")


def directives(name: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{name}=")
    ]


def exposure() -> tuple[float, str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    proc = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = SCORE.search(proc.stdout)
    assert found, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return float(found[1]), proc.stdout


def test_exposure_is_at_most_2_2() -> None:
    score, report = exposure()
    print(f"systemd-analyze security --offline=yes systemd/extsock.service: {score}")
    failing = [line for line in report.splitlines() if line.startswith("✗")]
    assert score <= MAX_EXPOSURE, "\n".join(failing)


def test_the_settings_that_bring_it_there() -> None:
    _, report = exposure()
    passed = {line.split()[1] for line in report.splitlines() if line.startswith("✓")}
    for setting in (
        "PrivateMounts=",
        "ProcSubset=",
        "MemoryDenyWriteExecute=",
        "SystemCallFilter=~@resources",
    ):
        assert setting in passed, setting
    capabilities = " ".join(directives("CapabilityBoundingSet")).split()
    assert "CAP_FOWNER" not in capabilities
    assert directives("DevicePolicy") == ["closed"]
