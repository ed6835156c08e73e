"""Figure 1s: figure 1's reaction with `standby = yes` (issue 18): down event at ini ->
CHILD_SA up on the next gateway, where a childless IKE_SA was kept up beforehand.

The same trial as figure 1 (the gateway DELETEs the tunnel's IKE_SA; an independent
listener on ini timestamps the first down event and the next clone's child-updown up),
run in the same lab right after it. Before each trial the hot standby must be up towards
the next gateway (extsock's status says so), and the CHILD_SA must come up inside the
standby's IKE_SA (same unique id, charon's log: CREATE_CHILD_SA, no IKE_SA_INIT): a trial
where it did not is reported in the notes and not counted. The baseline is figure 1's
extsock row of the same run (the cold load-conn + initiate); the goal is <= 0.6x it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from extsock_py.bench import fig_reaction
from extsock_py.bench.fig_reaction import HOME, _next
from extsock_py.bench.labs import POLICY, BenchRunner, fresh_name, running
from extsock_py.bench.stats import Figure, Summary
from extsock_py.bench.watch import EventWatch, child_up
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI

NAME = "1s reaction with hot standby: down event -> CHILD_SA up on next gateway (gateway DELETE)"
GOAL_RATIO = 0.6
STANDBY_POLICY = POLICY + "    standby = yes\n"
STANDBY_TIMEOUT = 15.0


def standby_up(runner: ExtsockRunner, gateway: str) -> bool:
    """True when extsock's status shows the hot standby established towards `gateway`."""
    hot: Any = runner.status(HOME).get("hot_standby")
    return isinstance(hot, dict) and hot.get("gateway") == gateway and hot.get("phase") == "up"


def ike_id_towards(lab: Lab, ike: str) -> int | None:
    """The unique id of ini's IKE_SA named `ike` (the standby's), None without one."""
    for entry in lab.list_sas(INI):
        for name, sa in entry.items():
            if name == ike:
                return int(sa["uniqueid"])
    return None


def child_ike_id(lab: Lab, ike: str) -> int | None:
    """The unique id of ini's IKE_SA named `ike` that has an INSTALLED CHILD_SA."""
    for entry in lab.list_sas(INI):
        for name, sa in entry.items():
            children = sa.get("child-sas") or {}
            if name == ike and any(c.get("state") == "INSTALLED" for c in children.values()):
                return int(sa["uniqueid"])
    return None


def one_failover(lab: Lab, watch: EventWatch, runner: ExtsockRunner, gateway: str) -> float:
    """DELETE the tunnel's SA on `gateway` with the standby up on the next one; seconds from
    the down event to the CHILD_SA up there. Raises when the standby was not used."""
    target = _next(lab, gateway)
    if not wait_until(lambda: standby_up(runner, target), STANDBY_TIMEOUT, 0.05):
        raise RuntimeError(f"the hot standby towards {target} was not up")
    standby_id = ike_id_towards(lab, f"{HOME}@{target}")
    reaction = fig_reaction.one_failover(lab, watch, HOME, gateway, "ini")  # figure 1's trial
    carried = child_ike_id(lab, f"{HOME}@{target}")
    if standby_id is None or carried != standby_id:
        raise RuntimeError(
            f"the CHILD_SA came up in IKE_SA {carried}, not the standby's {standby_id}"
        )
    return reaction


def measure(lab: Lab, trials: int, log: Callable[[str], None], figure1: Figure | None) -> Figure:
    gw1 = lab.config.remote_addrs()[0]
    values: list[float] = []
    errors: list[str] = []
    with (
        EventWatch(str(lab.vici_path(INI))) as watch,
        running(BenchRunner(lab, STANDBY_POLICY, name=fresh_name())) as runner,
    ):
        if watch.wait_for(child_up(f"{HOME}@{gw1}"), 20.0) is None:
            raise RuntimeError("extsock's tunnel did not come up on segw1")
        active = gw1
        deadline = time.monotonic() + 60.0 + trials * 8.0
        for i in range(trials):
            if time.monotonic() > deadline:
                errors.append(f"stopped after {i} trials: time budget spent")
                break
            try:
                values.append(one_failover(lab, watch, runner, active))
            except RuntimeError as exc:
                errors.append(str(exc))
                log(f"  standby reaction: {exc}")
            active = _next(lab, active)
            time.sleep(0.25)  # the old SA's DELETE exchange settles
    return figure(values, figure1, errors)


def figure(values: list[float], figure1: Figure | None, errors: list[str]) -> Figure:
    baseline = figure1.extsock if figure1 is not None else Summary.of([])
    if figure1 is None or figure1.skipped:
        errors = [*errors, "figure 1 did not run: no baseline"]
    return Figure(
        name=NAME,
        unit="ms",
        extsock=Summary.of([v * 1000 for v in values]),
        baseline=baseline,
        goal=f"ratio <= {GOAL_RATIO} (figure 1's extsock row, cold load-conn + initiate)",
        goal_ratio=GOAL_RATIO,
        baseline_label="figure 1, extsock (cold: IKE_SA_INIT + IKE_AUTH)",
        notes=errors[:10],
    )
