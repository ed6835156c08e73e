"""A failover during a flood of the control socket, against real charon daemons.

Eight unprivileged uids, members of the socket's group, open every connection they are
allowed (32 each: 256 attempts for 255 non-root slots), subscribe and never read, and stay.
The gateway then goes silent: the tunnel must still move to the next gateway, traffic must
flow, and root must still get answers, while the flood holds its slots.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from extsock_py.adapters.control.client import ControlClient
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until

pytestmark = pytest.mark.integration

GW2 = "10.99.2.2"
POLICY = """
    connect_timeout = 5s
    dead_after_retransmits = 1
"""
UIDS = range(64101, 64109)
PER_UID = 32
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
FLOOD = """
import json, socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
        s.sendall(b'{"cmd": "subscribe"}\\n')
    except OSError:
        s.close()
        continue
    held.append(s)
time.sleep(1.0)  # every answer (ok, or the refusal line) is in by then
kept = 0
for s in held:
    try:
        data = s.recv(4096, socket.MSG_DONTWAIT)
    except BlockingIOError:
        data = b"?"
    except OSError:
        data = b""
    kept += bool(data) and b"TooManyClients" not in data
print(kept, flush=True)
time.sleep(120)  # bounded: the test kills it long before
"""


def _group() -> str | None:
    for name in ("nogroup", "nobody"):
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        return name
    return None


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="h15f", dir="/tmp"))  # short: socket paths < 108 B
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no python3 that another uid can run")
def test_a_failover_happens_while_the_control_socket_is_flooded(
    fresh_lab: Lab, socket_dir: Path
) -> None:
    group = _group()
    if group is None:
        pytest.skip("no nogroup/nobody group to give the socket")
    runner = ExtsockRunner(fresh_lab, POLICY, name="x-flood", extra_args=("--control-group", group))
    runner.control_socket = socket_dir / "s"
    runner.write_config()
    floods: list[subprocess.Popen[str]] = []
    try:
        runner.start()
        assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), runner.log_tail()
        gid = grp.getgrnam(group).gr_gid
        for uid in UIDS:
            floods.append(
                subprocess.Popen(
                    [str(SYSTEM_PYTHON), "-c", FLOOD, str(runner.control_socket), str(PER_UID)],
                    user=uid,
                    group=gid,
                    extra_groups=[],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env={"PATH": "/usr/bin:/bin"},
                )
            )
        held = []
        for flood in floods:
            assert flood.stdout is not None
            held.append(int(flood.stdout.readline() or 0))
        assert sum(held) == 255, held  # every non-root slot taken; one left for root
        with ControlClient(runner.control_socket, timeout=5) as root:  # the slot for root
            assert root.request("status", conn="home")["connections"][0]["phase"] == "up"
        fresh_lab.fail("segw1", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), runner.log_tail()
        assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
        status = runner.status()
        assert status["phase"] == "up" and status["active_gateway"] == GW2
        assert all(flood.poll() is None for flood in floods)  # the flood held on throughout
        log = runner.log_text()
        assert log.count("refused uid") <= 2, "refusals must not flood the log"
    finally:
        for flood in floods:
            flood.kill()
            flood.wait(timeout=10)
        runner.stop()
    assert os.path.exists(socket_dir)
