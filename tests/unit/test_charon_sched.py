"""charon's run-queue wait, read from a fake /proc and from this process itself."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from extsock_py.adapters.charon_sched import CharonRunDelay, peer_pid, run_delay
from tests.unit.test_control_support import short_dir


def fake_proc(root: Path, pid: int, delays: dict[int, int]) -> None:
    for tid, ns in delays.items():
        task = root / str(pid) / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "schedstat").write_text(f"123 {ns} 4\n")


def test_run_delay_sums_every_thread_in_seconds(tmp_path: Path) -> None:
    fake_proc(tmp_path, 42, {42: 1_500_000_000, 43: 250_000_000, 44: 0})
    assert run_delay(42, tmp_path) == 1.75
    (tmp_path / "42" / "task" / "44" / "schedstat").write_text("garbage")
    assert run_delay(42, tmp_path) == 1.75  # an unreadable thread is skipped
    assert run_delay(7, tmp_path) is None  # no such process


def test_this_process_has_a_run_delay_on_this_kernel() -> None:
    got = run_delay(os.getpid())
    assert got is not None and got >= 0.0


def test_peer_pid_is_the_listener_of_the_unix_socket() -> None:
    with short_dir() as d:
        path = str(Path(d) / "v.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        try:
            assert peer_pid(path) == os.getpid()
            reader = CharonRunDelay(f"unix://{path}")
            value = reader()
            assert value is not None and value >= 0.0
        finally:
            server.close()
        assert peer_pid(path) is None  # nobody listens: unknown


def test_a_tcp_uri_or_a_missing_socket_reads_nothing(tmp_path: Path) -> None:
    assert CharonRunDelay("tcp://127.0.0.1:4502")() is None
    assert CharonRunDelay(f"unix://{tmp_path / 'none.vici'}")() is None
