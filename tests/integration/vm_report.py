"""A pytest plugin for the pytest run in the XFRM VM (``-p tests.integration.vm_report``):
each test's outcome, as JSON, to the file ``$EXTSOCK_VM_REPORT`` (in the VM's control
directory, which the host reads; see vm_support.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_OUTCOMES: dict[str, dict[str, object]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _OUTCOMES.setdefault(report.nodeid, {"outcome": "passed", "text": "", "seconds": 0.0})
    entry["seconds"] = float(str(entry["seconds"])) + report.duration
    if report.failed:
        entry["outcome"] = "failed"
        entry["text"] = f"{entry['text']}[{report.when}] {report.longreprtext}\n"
        if report.capstdout:
            entry["text"] = f"{entry['text']}--- stdout ---\n{report.capstdout[-4000:]}\n"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        entry["text"] = f"in the VM: {reason}"
    elif report.when == "call" and report.passed and report.capstdout:
        entry["text"] = report.capstdout[-2000:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("EXTSOCK_VM_REPORT")
    if path:
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(_OUTCOMES))
        tmp.replace(path)
