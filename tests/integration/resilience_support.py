"""Helpers of the lab tests: the fast failover policy, what ini's charon holds, socket
watches, /proc."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import INI

GW1, GW2 = "10.99.1.2", "10.99.2.2"
GATEWAY_NODE = {GW1: "segw1", GW2: "segw2"}
# The policy most lab tests run extsock with: fail fast, retry soon, give up after two cycles.
FAST_POLICY = """
    connect_timeout = 5s
    dead_after_retransmits = 1
    max_cycles = 2
    backoff {
        initial = 500ms
        maximum = 1s
    }
"""


def runner_tag(request: pytest.FixtureRequest) -> str:
    """A short tag per test for an extsock runner's name: its own state dir per test, and the
    control socket's path under 108 bytes."""
    return hashlib.blake2b(request.node.name.encode(), digest_size=4).hexdigest()


def conn_names(lab: Lab, node: str = INI) -> list[str]:
    """The connections loaded into a node's charon (`list-conns`)."""
    with lab.vici_session(node) as session:
        names: list[str] = []
        for conn in session.list_conns():
            names.extend(str(k) for k in conn)
    return sorted(names)


def ike_sas(lab: Lab, node: str = INI) -> list[tuple[str, int, str, list[str]]]:
    """(config name, unique id, state, CHILD_SA states) of each IKE_SA of a node."""
    out = []
    for entry in lab.list_sas(node, timeout=2.0):
        for name, ike in entry.items():
            children = [str(c.get("state")) for c in (ike.get("child-sas") or {}).values()]
            out.append((name, int(ike.get("uniqueid", 0)), str(ike.get("state")), children))
    return out


def installed_on_ini(lab: Lab, conn: str) -> tuple[int, str] | None:
    """(unique id, gateway) of the IKE_SA of `conn`'s clone with an INSTALLED CHILD_SA."""
    try:
        sas = ike_sas(lab)
    except OSError:
        return None
    for name, uid, state, children in sas:
        if name.startswith(f"{conn}@") and state == "ESTABLISHED" and "INSTALLED" in children:
            return uid, name.partition("@")[2]
    return None


class SocketWatch:
    """Notes, from a thread, the first moment a unix socket accepts connections."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.at: float | None = None
        self._timeout = timeout
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import socket

        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except OSError:
                time.sleep(0.002)
                continue
            finally:
                sock.close()
            self.at = time.monotonic()
            return

    def wait(self) -> float | None:
        self._thread.join(self._timeout + 1.0)
        return self.at


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def charon_requests(lab: Lab, node: str, command: str) -> int:
    """How many times a node's charon logged `vici client N requests: <command>`."""
    try:
        text = lab.log_path(node).read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if f"requests: {command}" in line)
