"""Record a mix of real charon events (5.9.8, the lab's ini) during failovers, for figure 6.

``python -m extsock_py.bench.record [OUT]`` (root): a lab, extsock, an independent listener
keeping every event; failovers by gateway DELETE and by silencing; the events are saved
decoded to JSON-safe form (bytes as text) in ``extsock_py/bench/data/events-5.9.8.json``.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

from extsock_py.bench.fig_reaction import one_failover
from extsock_py.bench.labs import MAIN_PREFIX, POLICY, BenchRunner, bench_lab, running
from extsock_py.bench.watch import EventWatch, child_up
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import INI, LabConfig

DATA = Path(__file__).parent / "data" / "events-5.9.8.json"


def record(lab: Lab) -> list[dict[str, object]]:
    addrs = lab.config.remote_addrs()
    with EventWatch(str(lab.vici_path(INI)), raw=True) as watch, running(BenchRunner(lab, POLICY)):
        if watch.wait_for(child_up(f"home@{addrs[0]}"), 20.0) is None:
            raise RuntimeError("no tunnel on segw1")
        one_failover(lab, watch, "home", addrs[0], "ini")  # DELETE: segw1 -> segw2
        time.sleep(2.5)  # a few DPD exchanges
        one_failover(lab, watch, "home", addrs[1], "ini")  # DELETE: segw2 -> segw1
        mark = watch.mark()
        lab.fail("segw1", "link")  # silence: DPD, retransmit, failover to segw2
        try:
            watch.wait_for(child_up(f"home@{addrs[1]}"), 20.0, mark)
        finally:
            lab.heal("segw1")
        time.sleep(1.5)
        return list(watch.raw)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
    with bench_lab(LabConfig(prefix=MAIN_PREFIX)) as lab:
        with lab.vici_session(INI) as session:
            version = session.version()["version"].decode()
        events = record(lab)
    kinds: dict[str, int] = {}
    for e in events:
        kinds[str(e["event"])] = kinds.get(str(e["event"]), 0) + 1
    doc = {
        "strongswan": version,
        "recorded": datetime.date.today().isoformat(),
        "how": "lab ini, independent listener; 2 gateway DELETEs and 1 silenced gateway",
        "counts": kinds,
        "events": events,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(events)} events {kinds} -> {out}")


if __name__ == "__main__":
    main()
