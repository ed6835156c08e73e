"""Figures 4 and 5: many managed connections, failed over at once, and what extsock costs.

extsock trial: ``n`` connections up on segw1 (optionally: idle CPU over a window, beside the
floor listener, which is stopped before the fault), segw1 silenced, until every CHILD_SA is up
on segw2.  Its figure runs from
the first failure signal at ini (the first ``retransmit`` of any clone: what extsock reacts
to; the per-SA DPD timers spread over ``dpd_delay``) to the last CHILD_SA up; silence ->
last up is reported too.  Baseline trial: the same connections loaded straight towards
segw2, then ``initiate`` from several VICI sessions in threads; first initiate -> last up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from extsock_py.bench import confgen
from extsock_py.bench.floorproc import floor_process, load_psk
from extsock_py.bench.labs import BenchRunner, add_local_addrs, fresh_name, running
from extsock_py.bench.proc import cpu_percent, rss_mb
from extsock_py.bench.watch import EventWatch, Seen
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import INI

MASS_POLICY = """
    connect_timeout = 60s
    dead_after_retransmits = 1
    max_cycles = 0
    backoff {
        initial = 500ms
        maximum = 2s
    }
"""
THREADS = 4
START_TIMEOUT = 300.0  # extsock answers its control socket once every connection is started


@dataclass
class MassTrial:
    failover_s: float | None = None  # first failure signal -> last CHILD_SA up on segw2
    silence_s: float | None = None  # silencing -> last CHILD_SA up
    up_on_gw2: int = 0
    startup_s: float | None = None  # process spawn -> first initiate
    rss_mb: float | None = None
    floor_rss_mb: float | None = None
    cpu_pct: list[float] = field(default_factory=list)
    floor_cpu_pct: list[float] = field(default_factory=list)
    events_per_s: float | None = None
    errors: list[str] = field(default_factory=list)


def _up_at(gateway: str) -> Callable[[Seen], bool]:
    suffix = f"@{gateway}"
    return lambda s: s.kind == "child-updown" and s.up and s.conn.endswith(suffix)


def _up_anywhere(s: Seen) -> bool:
    return s.kind == "child-updown" and s.up and "@" in s.conn


def _conn(s: Seen) -> str:
    return s.conn.partition("@")[0]


def _first_retransmit(gateway: str) -> Callable[[Seen], bool]:
    suffix = f"@{gateway}"
    return lambda s: s.kind == "log" and s.conn.endswith(suffix) and s.text.startswith("retransmit")


def _went_down(gateway: str) -> Callable[[Seen], bool]:
    suffix = f"@{gateway}"
    return lambda s: (
        s.kind in ("ike-updown", "child-updown") and not s.up and s.conn.endswith(suffix)
    )


def prepare(lab: Lab, n: int) -> None:
    confgen.widen_gateways(lab)
    add_local_addrs(lab, INI, [confgen.conn_addr(i) for i in range(n)])


def extsock_trial(
    lab: Lab,
    n: int,
    timeout: float,
    idle_window: float = 0.0,
    idle_parts: int = 6,
    dpd_delay: str | None = None,
    delete: bool = False,
) -> MassTrial:
    """segw1 silenced (or, with `delete`, deleting every SA at once) with `n` tunnels on it."""
    gw1, gw2 = lab.config.remote_addrs()[:2]
    out = MassTrial()
    lab.reset()
    runner = BenchRunner(
        lab,
        MASS_POLICY,
        name=fresh_name("extsock-mass"),
        conf_transform=lambda _text: confgen.swanctl_conf(lab, n, MASS_POLICY, dpd_delay),
    )
    with EventWatch(str(lab.vici_path(INI))) as watch, contextlib.ExitStack() as floor_stack:
        floor = floor_stack.enter_context(floor_process(lab, react=False))
        spawned = time.monotonic()
        with running(runner, timeout=START_TIMEOUT):
            assert runner.process is not None
            pid = runner.process.pid
            first = watch.wait_for(lambda s: s.text.startswith("initiating"), 60.0)
            out.startup_s = None if first is None else first.at - spawned
            up = watch.wait_count(_up_anywhere, n, timeout, key=_conn)
            out.rss_mb, out.floor_rss_mb = rss_mb(pid), rss_mb(floor)

            if len({_conn(s) for s in up}) < n:
                out.errors.append(f"only {len(up)} of {n} up within {timeout:.0f} s")
                return out

            time.sleep(2.0)  # steady state: every SA's DPD timer running
            if idle_window > 0:
                events_before = sum(watch.counts.values())
                out.cpu_pct, out.floor_cpu_pct = cpu_samples([pid, floor], idle_window, idle_parts)
                out.events_per_s = (sum(watch.counts.values()) - events_before) / idle_window
            # The floor listener is only the baseline of 5a/5b (idle CPU, RSS), both sampled
            # by now. Left running through the failure it decodes every event charon sends
            # (each log line of a thousand DELETEs and handshakes, with the `vici` package):
            # CPU taken from charon on this 2-core machine, in the extsock trial only, as the
            # baseline trial has no such listener. An instrument must not load what it times.
            floor_stack.close()
            mark = watch.mark()
            # Where each connection is now: a few moved during the bring-up (a slow answer
            # under the load of n simultaneous IKE_SA_INITs is a retransmit, hence dead).
            latest = {_conn(s): s.conn for s in watch.all(_up_anywhere)}
            on_gw1 = {c for c, clone in latest.items() if clone.endswith(f"@{gw1}")}
            if len(on_gw1) < n:
                out.errors.append(f"{n - len(on_gw1)} of {n} were on segw2 before the fault")
            t0 = time.monotonic()
            if delete:
                with lab.vici_session("segw1", timeout=60.0) as session:
                    list(session.terminate({"ike": "lab-ini", "timeout": "-1"}))
            else:
                lab.fail("segw1", "link")
            # Silenced, segw1 can only be left for segw2; after a DELETE it stays usable and
            # a connection may land on it again: restored anywhere is what counts then.
            target = _up_anywhere if delete else _up_at(gw2)
            try:
                moved = watch.wait_count(
                    lambda s: target(s) and _conn(s) in on_gw1, len(on_gw1), timeout, mark, _conn
                )
                signal = watch.find(_went_down(gw1) if delete else _first_retransmit(gw1), mark)
            finally:
                lab.heal("segw1")
            out.up_on_gw2 = sum(1 for s in moved if s.conn.endswith(f"@{gw2}"))
            if out.up_on_gw2 < len(moved):
                out.errors.append(f"{len(moved) - out.up_on_gw2} came back up on segw1")
            if len(moved) < len(on_gw1) or signal is None:
                out.errors.append(
                    f"only {len(moved)} of {len(on_gw1)} "
                    f"{'up again' if delete else 'up on segw2'} within {timeout:.0f} s"
                    + _missing(lab, runner, on_gw1 - {_conn(s) for s in moved})
                )
                return out
            out.failover_s = moved[-1].at - signal.at
            out.silence_s = moved[-1].at - t0
    return out


def _missing(lab: Lab, runner: BenchRunner, conns: set[str]) -> str:
    """What extsock and ini's charon say of (a few of) the connections the bench missed."""
    installed: dict[str, str] = {}
    for entry in lab.list_sas(INI, timeout=30.0):
        for name, ike in entry.items():
            states = [c.get("state", "?") for c in (ike.get("child-sas") or {}).values()]
            installed[name.partition("@")[0]] = f"{name} {ike.get('state')} {states}"
    parts = []
    for conn in sorted(conns)[:3]:
        try:
            st = runner.status(conn)
            said = f"extsock {st.get('phase')} on {st.get('target_gateway')}"
        except Exception as exc:
            said = f"extsock status failed: {exc}"
        parts.append(f"{conn}: {said}; ini {installed.get(conn, 'no SA')}")
    return " (" + "; ".join(parts) + ")" if parts else ""


def direct_trial(
    lab: Lab, n: int, timeout: float, dpd_delay: str | None = None
) -> tuple[float | None, str | None]:
    """charon asked directly: n connections towards segw2, initiated from THREADS sessions."""
    gw2 = lab.config.remote_addrs()[1]
    lab.reset()
    load_psk(lab)
    with lab.vici_session(INI, timeout=60.0) as session:
        for i in range(n):
            session.load_conn({confgen.conn_name(i): confgen.direct_body(lab, i, gw2, dpd_delay)})
    names = [confgen.conn_name(i) for i in range(n)]
    errors: list[str] = []
    with EventWatch(str(lab.vici_path(INI))) as watch:
        t0, up = timed_fan_out(watch, names, lambda part: _initiate_all(lab, part, errors), timeout)
    if len(up) < n:
        return None, f"baseline: only {len(up)} of {n} up within {timeout:.0f} s {errors[:1]}"
    return up[-1].at - t0, None


def timed_fan_out(
    watch: EventWatch, names: list[str], work: Callable[[list[str]], None], timeout: float
) -> tuple[float, list[Seen]]:
    """`work` in THREADS threads, each on its share of `names`, then wait (bounded) until every
    one of `names` has its CHILD_SA up: (when the threads started, the child-updown ups seen)."""
    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(names[k::THREADS],)) for k in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    wanted = set(names)
    up = watch.wait_count(
        lambda s: s.kind == "child-updown" and s.up and s.conn in wanted, len(names), timeout
    )
    return t0, up


def _initiate_all(lab: Lab, names: list[str], errors: list[str]) -> None:
    try:
        with lab.vici_session(INI, timeout=60.0) as session:
            for name in names:
                list(session.initiate({"ike": name, "child": "net", "timeout": "-1"}))
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


def startup_trial(lab: Lab, n: int) -> MassTrial:
    """extsock started with `n` connections: spawn -> first initiate; RSS once all is loaded.

    Every gateway is silent: charon only sends IKE_SA_INITs into the void, so what is timed
    is extsock loading and initiating, not charon negotiating `n` SAs meanwhile.
    """
    out = MassTrial()
    lab.reset()
    for gw in lab.gateways:
        lab.fail(gw, "link")
    try:
        return _startup(lab, n, out)
    finally:
        for gw in lab.gateways:
            lab.heal(gw)


def _startup(lab: Lab, n: int, out: MassTrial) -> MassTrial:
    runner = BenchRunner(
        lab,
        MASS_POLICY,
        name=fresh_name("extsock-start"),
        conf_transform=lambda _text: confgen.swanctl_conf(lab, n, MASS_POLICY),
    )
    with EventWatch(str(lab.vici_path(INI))) as watch, floor_process(lab, react=False) as floor:
        spawned = time.monotonic()
        with running(runner, timeout=START_TIMEOUT):
            assert runner.process is not None
            first = watch.wait_for(lambda s: s.text.startswith("initiating"), 60.0)
            out.startup_s = None if first is None else first.at - spawned
            _wait_loaded(lab, n, 60.0)
            out.rss_mb, out.floor_rss_mb = rss_mb(runner.process.pid), rss_mb(floor)
    return out


def _wait_loaded(lab: Lab, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.5) + 1):
        with lab.vici_session(INI, timeout=30.0) as session:
            loaded = len(session.request("get-conns").get("conns", []))
        if loaded >= n or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def swanctl_load(lab: Lab, n: int, conf: str) -> float:
    """`swanctl --load-all` of the same `n` connections into a fresh ini: seconds."""
    lab.reset()
    path = lab.node_dir(INI) / f"bench-{n}.conf"
    path.write_text(conf)
    began = time.monotonic()
    lab.swanctl(INI, "--load-all", "--file", str(path), timeout=300.0)
    return time.monotonic() - began


def cpu_samples(pids: list[int], window: float, parts: int) -> list[list[float]]:
    """`parts` consecutive samples over `window` seconds: one list per pid."""
    per = [cpu_percent(pids, window / parts) for _ in range(parts)]
    return [[sample[k] for sample in per] for k in range(len(pids))]
