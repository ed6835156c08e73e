"""The demo: lab up, tunnel up through segw1, segw1's charon killed, tunnel up through segw2.

Exit code 0 only when the tunnel really moved to segw2 and carried traffic there.
Run as root: `make demo` (or `python -m extsock_py.demo`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import LabConfig

POLICY = """
    connect_timeout = 5s
    dead_after_retransmits = 1
"""


class Timeline:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.lines: list[str] = []

    def mark(self, text: str) -> float:
        at = time.monotonic() - self.start
        line = f"  {at:7.3f}s  {text}"
        self.lines.append(line)
        print(line, flush=True)
        return at


def run_demo(state_dir: Path, fault: str) -> bool:
    reason = Lab.preflight()
    if reason:
        print(f"demo: cannot run the lab here: {reason}", file=sys.stderr)
        return False
    lab = Lab(LabConfig(), state_dir=state_dir)
    runner = ExtsockRunner(lab, POLICY)
    tl = Timeline()
    print("extsock demo: two gateways (segw1, segw2), one initiator (ini), real charon daemons")
    try:
        lab.up()
        tl.mark("lab up: ini, segw1, segw2 running charon in their own namespaces")
        runner.write_config()
        runner.start()
        tl.mark("extsock running against ini's charon (managed connection 'home')")
        if not wait_until(lambda: lab.child_installed("segw1"), 15.0):
            tl.mark("FAILED: no tunnel through segw1")
            return False
        tl.mark("tunnel up through segw1")
        via = lab.udp_echo(timeout=1.0, tries=3)
        tl.mark(f"UDP echo 10.100.0.1 -> 10.200.0.1 answered by {via}")
        if fault == "kill":
            lab.kill("segw1")
            failed_at = tl.mark("segw1's charon killed (SIGKILL): it goes silent, sends no DELETE")
        else:
            lab.fail("segw1", "link")
            failed_at = tl.mark("segw1's link cut")
        if not wait_until(lambda: lab.child_installed("segw2"), 30.0, interval=0.05):
            tl.mark("FAILED: the tunnel did not move to segw2")
            print(runner.log_tail(), file=sys.stderr)
            return False
        up_at = tl.mark("tunnel up through segw2")
        via = lab.udp_echo(timeout=1.0, tries=5)
        tl.mark(f"UDP echo answered by {via}")
        moved = via == "segw2"
        status = runner.status()
        print(
            f"\nresult: tunnel moved segw1 -> segw2 in {up_at - failed_at:.2f}s after the fault "
            f"(charon alone: never; 165 s even to notice); traffic through segw2: "
            f"{'yes' if moved else 'NO'}; extsock phase {status.get('phase')}, "
            f"active gateway {status.get('active_gateway')}"
        )
        return moved
    finally:
        runner.stop()
        lab.down()
        tl.mark("extsock stopped, lab down")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fault", choices=["kill", "link"], default="kill")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="extsock-demo-") as tmp:
        ok = run_demo(Path(tmp), args.fault)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
