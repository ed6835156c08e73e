"""The floor: a minimal reactor with the ``vici`` package, the baseline extsock is compared to.

It listens on one session to the same events as extsock and, when ``<name>@<gateway>`` goes
down (``ike-updown`` without ``up``), sends ``load-conn`` of ``<name>@<next gateway>`` and
``initiate`` (``timeout = -1``, as extsock does) on a second session.  Nothing else: no
policy, no state, no logging.  Run as ``python -m extsock_py.bench.floor SPEC.json``; prints
``ready`` once registered; exits on SIGTERM, on stdin closing, or after ``max_seconds``.
SPEC: ``{"socket": PATH, "name": "base", "gateways": [...], "child": "net", "body": {...},
"react": true, "max_seconds": 3600}``.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from typing import Any

import vici

EVENTS = ["ike-updown", "child-updown", "ike-rekey", "ike-update", "log"]


def _session(path: str) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return vici.Session(sock)


def _react(cmd: Any, spec: dict[str, Any], name: str) -> None:
    base, _, gateway = name.partition("@")
    gateways: list[str] = spec["gateways"]
    if base != spec["name"] or gateway not in gateways:
        return
    nxt = gateways[(gateways.index(gateway) + 1) % len(gateways)]
    clone = f"{base}@{nxt}"
    cmd.load_conn({clone: {**spec["body"], "remote_addrs": [nxt]}})
    list(cmd.initiate({"ike": clone, "child": spec["child"], "timeout": -1}))


def run(spec: dict[str, Any]) -> None:
    deadline = time.monotonic() + float(spec.get("max_seconds", 3600))
    events = _session(spec["socket"])
    cmd = _session(spec["socket"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def stdin_closed() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stdin_closed, daemon=True).start()
    announced = False
    for kind, msg in events.listen(EVENTS, timeout=0.2):
        if not announced:
            print("ready", flush=True)
            announced = True
        if stop.is_set() or time.monotonic() > deadline:
            break
        if kind != b"ike-updown" or msg.get("up") == b"yes" or not spec.get("react", True):
            continue
        for name, value in msg.items():
            if isinstance(value, dict):
                _react(cmd, spec, name)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        run(json.load(f))


if __name__ == "__main__":
    main()
