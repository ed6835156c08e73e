"""How long charon's threads have waited for a CPU: the tunnel monitor's evidence that the
probes' path through this host stalled (issue 28).

The probes go through charon on this host (with kernel-libipsec, charon itself carries the
ESP; with XFRM it is the kernel, and charon waiting then proves less). When the host is so
busy that charon's threads wait on the run queue while the answers are due, a late answer
says nothing about the gateway. The scheduler counts that wait per thread: the second field
of /proc/PID/task/TID/schedstat (run_delay, ns; CONFIG_SCHED_INFO, on in Debian's kernels).

charon's pid is asked of the kernel, not guessed: SO_PEERCRED of a connection to its VICI
socket (several charons may run on one host, one per namespace). Every failure (a TCP VICI
URI, no schedstat, a sandbox hiding /proc) makes the reading None: the monitor then goes by
its own timer alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from pathlib import Path

from extsock_py.adapters.vici.transport import parse_uri
from extsock_py.domain.errors import CharonUnreachable

PROC = Path("/proc")
_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_pid(path: str) -> int | None:
    """The pid of the process listening on the unix socket `path` (None if unknown)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(path)
        pid, _uid, _gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        return pid if pid > 0 else None
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def run_delay(pid: int, proc: Path = PROC) -> float | None:
    """Seconds the threads of `pid` have waited on a run queue, summed (None if unreadable)."""
    try:
        tasks = os.listdir(proc / str(pid) / "task")
    except OSError:
        return None
    total = 0
    for tid in tasks:
        try:
            fields = (proc / str(pid) / "task" / tid / "schedstat").read_text().split()
            total += int(fields[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread gone meanwhile
    return total / 1e9


class CharonRunDelay:
    """`()` -> charon's threads' summed run_delay in seconds, or None; charon found again
    (SO_PEERCRED) when its pid is gone (a restart)."""

    def __init__(self, uri: str, proc: Path = PROC) -> None:
        self._path: str | None = None
        with contextlib.suppress(CharonUnreachable):
            address = parse_uri(uri)
            self._path = address.path if address.scheme == "unix" else None
        self._proc = proc
        self._pid: int | None = None

    def __call__(self) -> float | None:
        if self._path is None:
            return None
        if self._pid is None or not (self._proc / str(self._pid)).exists():
            self._pid = peer_pid(self._path)
            if self._pid is None:
                return None
        return run_delay(self._pid, self._proc)
