"""The main loop's own behaviour: it wakes at once when asked to stop."""

from __future__ import annotations

import time

import pytest

from extsock_py import mainloop as daemon_module
from tests.unit.test_control_support import running_daemon


def test_request_stop_wakes_the_loop_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a poll this long, a loop that only noticed the flag at its next poll would
    # still be asleep when the join below gives up (no deadline of the harness is sooner).
    monkeypatch.setattr(daemon_module, "_POLL", 60.0)
    with running_daemon() as harness:
        harness.on_loop(lambda: None)  # the loop is in its sleep now, or about to be
        started = time.monotonic()
        harness.daemon.request_stop()
        assert harness.thread is not None
        harness.thread.join(timeout=2.5)
        assert not harness.thread.is_alive()
        assert time.monotonic() - started < 2.5
