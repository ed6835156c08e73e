"""Labs for the bench: always downed, extsock at its production log level, gateway-side actions.

Every lab the bench builds has a prefix starting with ``ex7`` (the main one ``ex7-``;
``$EXTSOCK_BENCH_PREFIX`` changes it): other engineers' labs run on the same machine with
other prefixes and are never touched.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, LabError
from extsock_py.lab.netns import CommandError
from extsock_py.lab.topology import INI, LabConfig

# Every bench lab's namespaces start with BASE (``$EXTSOCK_BENCH_PREFIX``, default ex7): a
# second bench on the same machine sets its own, and the two never touch each other's labs.
BASE = os.environ.get("EXTSOCK_BENCH_PREFIX") or "ex7"
MAIN_PREFIX = f"{BASE}-"
ALONE_PREFIX = f"{BASE}a-"  # charon alone, default retransmission (the 165 s baseline)
ALONE_FAST_PREFIX = f"{BASE}b-"  # charon alone, retransmit_timeout = 1
RELEASE_PREFIX = f"{BASE}r-"  # figures 2 and 3 with ini on another strongSwan release
LAB_UP_TIMEOUT = 40.0

POLICY = """
    connect_timeout = 5s
    dead_after_retransmits = 1
    max_cycles = 0
    backoff {
        initial = 500ms
        maximum = 2s
    }
"""


@contextlib.contextmanager
def bench_lab(config: LabConfig) -> Iterator[Lab]:
    """A lab up for the duration of the block, in its own temporary state dir; always downed."""
    if not config.prefix.startswith(BASE):
        raise ValueError(f"the bench only builds {BASE}* labs, not {config.prefix!r}")
    with tempfile.TemporaryDirectory(prefix=f"extsock-bench-{config.prefix}") as tmp:
        lab = Lab(config, state_dir=Path(tmp) / "lab")
        try:
            try:
                lab.up(timeout=LAB_UP_TIMEOUT)
            except (LabError, CommandError):  # seen once: a namespace gone just after `add`
                lab.up(timeout=LAB_UP_TIMEOUT)
            yield lab
        finally:
            lab.down()


_RUNS = itertools.count(1)


def fresh_name(base: str = "extsock") -> str:
    """A runner name never used before in this process: its own state dir, no history."""
    return f"{base}-{next(_RUNS)}"


class BenchRunner(ExtsockRunner):
    """`extsock run` at the log level a deployment uses (info), not the tests' debug."""

    def command(self) -> list[str]:
        argv = super().command()
        if "--log-level" in argv:
            argv[argv.index("--log-level") + 1] = "info"
        return argv


@contextlib.contextmanager
def running(runner: ExtsockRunner, timeout: float = 60.0) -> Iterator[ExtsockRunner]:
    runner.write_config()
    runner.start(timeout=timeout)
    try:
        yield runner
    finally:
        runner.stop()


def add_local_addrs(lab: Lab, node: str, addrs: list[str]) -> None:
    """Put /32 addresses on a node's lo in one `ip -batch` (libipsec routes need them)."""
    if not addrs:
        return
    script = "".join(f"address add {a}/32 dev lo\n" for a in addrs)
    subprocess.run(
        ["ip", "-n", lab.namespace(node), "-force", "-batch", "-"],
        input=script.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )


def gateway_sa_ids(lab: Lab, gateway: str, remote_id: str | None = None) -> list[int]:
    """Unique ids of the gateway's IKE_SAs (of peer ``remote_id`` if given)."""
    ids = []
    for entry in lab.list_sas(gateway):
        for ike in entry.values():
            if remote_id is None or ike.get("remote-id") == remote_id:
                ids.append(int(ike["uniqueid"]))
    return ids


def gateway_terminate(lab: Lab, gateway: str, ike_id: int) -> None:
    """The gateway deletes one IKE_SA (a DELETE reaches ini); returns without waiting."""
    with lab.vici_session(gateway) as session:
        list(session.terminate({"ike-id": str(ike_id), "timeout": "-1"}))


def ini_command(lab: Lab, command: str, message: dict[str, Any]) -> Any:
    with lab.vici_session(INI, timeout=30.0) as session:
        return session.request(command, message)


def ini_initiate(lab: Lab, ike: str, child: str = "net") -> None:
    with lab.vici_session(INI, timeout=30.0) as session:
        list(session.initiate({"ike": ike, "child": child, "timeout": "-1"}))
