"""Lab checks of the tunnel monitor, shared by the integration tests and the benchmarks.

- `monitor_policy(lab)`: the `extsock` policy text enabling the monitor on the lab's
  tunnel (probes 10.100.0.1 -> 10.200.0.1, a closed port or, with `probe="icmp"`, echo
  requests, from ini's namespace).
- `measure_detection(lab)`: tunnel up on segw1, segw1 made silent, seconds until the
  echo server behind segw2 answers.
- `false_failover_check(lab, seconds, load_period)`: tunnel up, then `seconds` of idle
  (or of a UDP stream through the tunnel); counts failovers, probes and answers. The
  integration tests run it for 30 s; `make bench` may run it for 10 minutes.
"""

from __future__ import annotations

import re
import time
from typing import Any

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI, INI_ADDR, PROTECTED_ADDR
from extsock_py.lab.traffic import EchoStream, echo_stream

MONITOR_PORT = 33434  # closed on the gateways: they answer ICMP port unreachable
_PROBE_LINE = re.compile(r"monitor probe #(\d+)")


def monitor_policy(
    lab: Lab,
    interval: str = "500ms",
    misses: int = 3,
    extra: str = "",
    local: str = INI_ADDR,
    probe: str = "udp",
    remote: str = PROTECTED_ADDR,
) -> str:
    return f"""
    connect_timeout = 5s
    max_cycles = 2
    backoff {{
        initial = 500ms
        maximum = 1s
    }}
    monitor {{
        enabled = yes
        local = {local}
        remote = {remote}
        port = {MONITOR_PORT}
        interval = {interval}
        misses = {misses}
        netns = {lab.namespace(INI)}
        probe = {probe}
    }}
{extra}"""


def probes_logged(runner: ExtsockRunner) -> int:
    """The number of the last probe the (debug) log reports, 0 if none."""
    found = _PROBE_LINE.findall(runner.log_text())
    return int(found[-1]) if found else 0


def _tunnel_on_segw1(lab: Lab, runner: ExtsockRunner) -> None:
    runner.start()
    if not wait_until(lambda: lab.child_installed("segw1"), 10.0):
        raise RuntimeError("no tunnel on segw1:\n" + runner.log_tail())
    if not wait_until(lambda: "monitoring the tunnel via" in runner.log_text(), 5.0):
        raise RuntimeError("the monitor did not start:\n" + runner.log_tail())


def measure_detection(
    lab: Lab, runner: ExtsockRunner, settle: float = 2.0, idle: bool = False, ipv6: bool = False
) -> dict[str, Any]:
    """segw1 made silent (link down) with the tunnel on it: seconds until segw2 answers.

    With traffic through the tunnel until the failure (a UDP echo every 20 ms), or, with
    `idle`, none before it (only the probes then tell); that echo over IPv6 with `ipv6` (a
    lab with `inner_ipv6`). `runner` carries a monitor policy and is not started yet; the
    lab is fresh."""
    _tunnel_on_segw1(lab, runner)
    time.sleep(settle)  # probes answered for a while: the monitor is in its steady state
    failed_at = time.monotonic()
    if idle:
        lab.fail("segw1", "link")
    with echo_stream(lab, ipv6=ipv6) as stream:
        if not idle:
            if not wait_until(lambda: stream.first_from("segw1", 0.0) is not None, 3.0):
                raise RuntimeError("no echo through segw1")
            failed_at = time.monotonic()
            lab.fail("segw1", "link")
        wait_until(lambda: stream.first_from("segw2", failed_at) is not None, 10.0, 0.01)
        first = stream.first_from("segw2", failed_at)
    history = runner.request("history", conn="home")["records"]
    took = None if first is None else first - failed_at
    duration = history[-1].get("duration") if history else None
    return {
        "traffic_on_segw2_after": took,
        # fault -> failure declared: the detection part (the rest is the new tunnel's set-up)
        "detected_after": None if took is None or duration is None else took - duration,
        "reason": history[-1]["reason"] if history else None,
        "from": history[-1]["from"] if history else None,
        "to": history[-1]["to"] if history else None,
        "duration": history[-1].get("duration") if history else None,
        "outage": history[-1].get("outage") if history else None,
    }


def false_failover_check(
    lab: Lab, runner: ExtsockRunner, seconds: float, load_period: float | None = None
) -> dict[str, Any]:
    """Tunnel up on segw1, then `seconds` idle or under a UDP stream (one request every
    `load_period` s, each echoed back through the tunnel). `runner` is not started yet."""
    _tunnel_on_segw1(lab, runner)
    probes_before = probes_logged(runner)
    stream: EchoStream | None = None
    if load_period is not None:
        stream = EchoStream(lab, load_period)
        stream.start()
    try:
        time.sleep(seconds)
    finally:
        if stream is not None:
            stream.stop()
    status = runner.status()
    return {
        "seconds": seconds,
        "failures_total": status["failures_total"],
        "active_gateway": status["active_gateway"],
        "history": runner.request("history", conn="home")["records"],
        "probes": probes_logged(runner) - probes_before,
        "load_sent": stream.sent if stream else 0,
        "load_answered": len(stream.answers) if stream else 0,
        "load_longest_gap": stream.longest_gap()[0] if stream and len(stream.answers) > 1 else None,
    }


def main() -> None:
    """`python -m extsock_py.lab.monitor_check --seconds 600 [--loaded]`: the no-false-
    failover run of the tunnel monitor (500 ms x 3) in a lab of its own; prints one line."""
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from extsock_py.lab.topology import LabConfig

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--loaded", action="store_true", help="a UDP echo every 50 ms")
    parser.add_argument("--prefix", default="exm-")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="extsock-monitor-") as tmp:
        lab = Lab(LabConfig(prefix=args.prefix), state_dir=Path(tmp))
        lab.up()
        runner = ExtsockRunner(lab, monitor_policy(lab))
        runner.write_config()
        try:
            result = false_failover_check(lab, runner, args.seconds, 0.05 if args.loaded else None)
            result["history"] = len(result["history"])
            print("loaded" if args.loaded else "idle", json.dumps(result))
        finally:
            runner.stop()
            lab.down()


if __name__ == "__main__":
    main()
