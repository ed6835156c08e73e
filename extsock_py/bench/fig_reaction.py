"""Figure 1: reaction, from the down event at ini to the CHILD_SA up on the next gateway.

The gateway deletes the IKE_SA (a DELETE, which charon at ini turns into child-updown and
ike-updown); an independent listener on ini timestamps the first down event and the new
clone's child-updown up.  extsock (`home`) and the floor reactor (`base`, load-conn +
initiate with the vici package) hold a tunnel each, side by side; trials alternate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from extsock_py.bench.floorproc import BASE, BASE_ADDR, base_body, floor_process, load_psk
from extsock_py.bench.labs import (
    POLICY,
    BenchRunner,
    add_local_addrs,
    fresh_name,
    gateway_sa_ids,
    gateway_terminate,
    ini_command,
    ini_initiate,
    running,
)
from extsock_py.bench.stats import Figure, Summary
from extsock_py.bench.watch import EventWatch, child_up, went_down
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import ID_DOMAIN, INI, gateway_name

HOME = "home"
EVENT_TIMEOUT = 10.0
GOAL_RATIO = 1.3
GOAL_OVERHEAD_MS = 3.0


def _node(lab: Lab, address: str) -> str:
    return gateway_name(lab.config.remote_addrs().index(address) + 1)


def _next(lab: Lab, address: str) -> str:
    addrs = lab.config.remote_addrs()
    return addrs[(addrs.index(address) + 1) % len(addrs)]


def one_failover(lab: Lab, watch: EventWatch, conn: str, gateway: str, ident: str) -> float:
    """DELETE `conn`'s SA from `gateway`; seconds from its down event to the next clone's up."""
    ids = gateway_sa_ids(lab, _node(lab, gateway), f"{ident}.{ID_DOMAIN}")
    if not ids:
        raise RuntimeError(f"no SA of {ident} on {gateway}")
    mark = watch.mark()
    gateway_terminate(lab, _node(lab, gateway), max(ids))
    down = watch.wait_for(went_down(f"{conn}@{gateway}"), EVENT_TIMEOUT, mark)
    up = watch.wait_for(child_up(f"{conn}@{_next(lab, gateway)}"), EVENT_TIMEOUT, mark)
    if down is None or up is None:
        raise RuntimeError(f"{conn}: no {'down' if down is None else 'up'} event after DELETE")
    return up.at - down.at


def measure(lab: Lab, trials: int, log: Callable[[str], None]) -> Figure:
    gw1 = lab.config.remote_addrs()[0]
    add_local_addrs(lab, INI, [BASE_ADDR])
    ext: list[float] = []
    base: list[float] = []
    errors: list[str] = []
    with (
        EventWatch(str(lab.vici_path(INI))) as watch,
        running(BenchRunner(lab, POLICY, name=fresh_name())),
        floor_process(lab),
    ):
        if watch.wait_for(child_up(f"{HOME}@{gw1}"), 20.0) is None:
            raise RuntimeError("extsock's tunnel did not come up on segw1")
        load_psk(lab)
        ini_command(lab, "load-conn", {f"{BASE}@{gw1}": {**base_body(lab), "remote_addrs": [gw1]}})
        ini_initiate(lab, f"{BASE}@{gw1}")
        if watch.wait_for(child_up(f"{BASE}@{gw1}"), 20.0) is None:
            raise RuntimeError("the floor's tunnel did not come up on segw1")
        active = {HOME: gw1, BASE: gw1}
        idents = {HOME: "ini", BASE: BASE}
        results = {HOME: ext, BASE: base}
        deadline = time.monotonic() + 60.0 + trials * 8.0
        for i in range(trials):
            if time.monotonic() > deadline:
                errors.append(f"stopped after {i} trials: time budget spent")
                break
            for conn in (HOME, BASE) if i % 2 == 0 else (BASE, HOME):
                try:
                    results[conn].append(one_failover(lab, watch, conn, active[conn], idents[conn]))
                except RuntimeError as exc:
                    errors.append(str(exc))
                    log(f"  reaction: {exc}")
                active[conn] = _next(lab, active[conn])
                time.sleep(0.25)  # the old SA's DELETE exchange and unload settle
    return _figure(ext, base, errors)


def _figure(ext: list[float], base: list[float], errors: list[str]) -> Figure:
    ms = [v * 1000 for v in ext]
    floor = [v * 1000 for v in base]
    e, b = Summary.of(ms), Summary.of(floor)
    overhead = None if e.median is None or b.median is None else e.median - b.median
    fig = Figure(
        name="1 reaction: down event -> CHILD_SA up on next gateway (gateway DELETE)",
        unit="ms",
        extsock=e,
        baseline=b,
        goal=f"ratio <= {GOAL_RATIO} and overhead <= {GOAL_OVERHEAD_MS} ms (median)",
        goal_ratio=GOAL_RATIO,
        baseline_label="vici script: load-conn + initiate",
        notes=errors[:10],
    )
    fig.extra["overhead_ms"] = None if overhead is None else round(overhead, 3)
    fig.extra["also_required"] = [
        {
            "what": f"overhead <= {GOAL_OVERHEAD_MS} ms",
            "met": overhead is not None and overhead <= GOAL_OVERHEAD_MS,
        }
    ]
    return fig
