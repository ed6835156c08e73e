"""Start and stop the floor reactor (``extsock_py.bench.floor``) as its own process."""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import ID_DOMAIN, INI, PROTECTED_NET

BASE = "base"
BASE_ADDR = "10.100.0.77"  # the floor's tunnel: its own /32 beside extsock's 10.100.0.0/24


def base_body(lab: Lab, local_ts: str = f"{BASE_ADDR}/32", ident: str = BASE) -> dict[str, Any]:
    """The floor's connection: the lab's `home` as a one-gateway clone, its own id and TS."""
    return {
        "version": "2",
        "local_addrs": ["%any"],
        "dpd_delay": lab.config.dpd_delay,
        "keyingtries": "1",
        "local": {"auth": "psk", "id": f"{ident}.{ID_DOMAIN}"},
        "remote": {"auth": "psk", "id": f"*.{ID_DOMAIN}"},
        "children": {
            "net": {
                "local_ts": [local_ts],
                "remote_ts": [PROTECTED_NET],
                "esp_proposals": ["default"],
                "dpd_action": "clear",
                "start_action": "none",
                "close_action": "none",
            }
        },
    }


def load_psk(lab: Lab) -> None:
    """The lab's PSK for any identity (what extsock loads from `secrets`)."""
    with lab.vici_session(INI) as session:
        session.load_shared(
            {"id": "bench-psk", "type": "IKE", "data": lab.config.psk, "owners": []}
        )


@contextlib.contextmanager
def floor_process(lab: Lab, react: bool = True, ready_timeout: float = 15.0) -> Iterator[int]:
    """The floor reactor running against ini; yields its pid; always stopped."""
    spec = {
        "socket": str(lab.vici_path(INI)),
        "name": BASE,
        "gateways": lab.config.remote_addrs(),
        "child": "net",
        "body": base_body(lab),
        "react": react,
        "max_seconds": 3600,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    proc = subprocess.Popen(
        [sys.executable, "-m", "extsock_py.bench.floor", f.name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(proc, ready_timeout)
        yield proc.pid
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        Path(f.name).unlink(missing_ok=True)


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for _ in range(100):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if readable and proc.stdout.readline().strip() == b"ready":
            return
        if proc.poll() is not None:
            break
    raise RuntimeError("the floor reactor did not become ready")
