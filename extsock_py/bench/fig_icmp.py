"""Figures of the ICMP echo monitor (issue 18): 2i, and the no-false-failover windows 2f, 2p.

2i: the same silent gateway as figures 2 and 2m (``lab.fail(gw, "link")`` at t0, trials
alternating gateways, the tunnel idle before the fault), with the tunnel monitor on
``probe = icmp``, 100 ms x 3, charon's default settings. The figure is t0 -> the first
datagram ANSWERED THROUGH THE NEXT GATEWAY: the lab's UDP echo stream (one datagram every
10 ms from ini's protected address, started right after the fault) gets an answer tagged
by the next gateway's echo server. The CHILD_SA up on the next gateway (child-updown on an
independent listener, as figures 2 and 2m measure) is in the JSON beside it
(``child_up_s``). Baseline: figure 2m (UDP monitor 500 ms x 3) of the same run; figure 2
(DPD + first retransmit) is noted.

2f / 2p: two labs of their own (``<base>i-`` idle, ``<base>l-`` loaded), in threads beside
the rest of the bench and beside each other, each with one tunnel monitored by ICMP
100 ms x 3 for a window (600 s full, 60 s quick, 5 s smoke; ``--icmp-window``). Loaded: the
lab's echo stream, one UDP datagram every 50 ms through the tunnel, answered. 2f: failovers
in the window (goal 0). 2p: probes per second, counted where they arrive (``Icmp InEchos``
in every gateway's namespace, not from extsock's own log): loaded beside idle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from extsock_py.bench.fig_detection import Durations
from extsock_py.bench.labs import BASE, POLICY, BenchRunner, bench_lab, fresh_name, running
from extsock_py.bench.stats import Figure, Summary
from extsock_py.bench.watch import EventWatch, child_up
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI, INI_ADDR, PROTECTED_ADDR, LabConfig, gateway_name
from extsock_py.lab.traffic import EchoStream, echo_stream

Log = Callable[[str], None]
HOME = "home"
GOAL_S = 0.5
STREAM_PERIOD = 0.01  # s between datagrams of 2i's stream: the first answer is the figure
LOAD_PERIOD = 0.05  # s between datagrams of the loaded window (the lab's traffic stream)
WINDOWS = {"full": 600.0, "quick": 60.0, "smoke": 5.0}
IDLE_PREFIX = f"{BASE}i-"
LOADED_PREFIX = f"{BASE}l-"


def icmp_policy(lab: Lab) -> str:
    return POLICY + (
        "    monitor {\n"
        "        enabled = yes\n"
        f"        local = {INI_ADDR}\n"
        f"        remote = {PROTECTED_ADDR}\n"
        "        probe = icmp\n"
        "        interval = 100ms\n"
        "        misses = 3\n"
        f"        netns = {lab.namespace(INI)}\n"
        "    }\n"
    )


def window_for(mode: str, override: float | None) -> float:
    if override is not None:
        return override
    return WINDOWS.get(mode.split()[0], WINDOWS["quick"])


# --- 2i ------------------------------------------------------------------------------------


def detection(lab: Lab, trials: int, timeout: float) -> Durations:
    """Figure 2i: fault -> first echo answered through the next gateway (`total`); the
    CHILD_SA up there, on the listener, in `noticed`."""
    addrs = lab.config.remote_addrs()
    out = Durations()
    with (
        EventWatch(str(lab.vici_path(INI))) as watch,
        running(BenchRunner(lab, icmp_policy(lab), name=fresh_name())),
    ):
        if watch.wait_for(child_up(f"{HOME}@{addrs[0]}"), 20.0) is None:
            raise RuntimeError("extsock's tunnel did not come up on segw1")
        active = 0
        for _ in range(trials):
            nxt = (active + 1) % len(addrs)
            node, nxt_node = gateway_name(active + 1), gateway_name(nxt + 1)
            time.sleep(1.5)  # a steady state: probes answered on the new tunnel
            mark = watch.mark()
            t0 = time.monotonic()
            lab.fail(node, "link")
            try:
                first = _first_through(lab, nxt_node, t0, timeout)
                up = watch.find(child_up(f"{HOME}@{addrs[nxt]}"), mark)
                if up is not None:
                    out.noticed.append(up.at - t0)
                    active = nxt  # the tunnel moved, whatever the stream saw
                if first is None:
                    where = "CHILD_SA up there" if up else "no CHILD_SA up there either"
                    out.errors.append(
                        f"no datagram answered through {addrs[nxt]} within {timeout:.0f} s "
                        f"({where})"
                    )
                    continue
                out.total.append(first - t0)
            finally:
                lab.heal(node)
    return out


def _first_through(lab: Lab, node: str, since: float, timeout: float) -> float | None:
    """When the first echo answered through `node` after `since` came (a stream started now)."""
    with echo_stream(lab, STREAM_PERIOD) as stream:
        wait_until(lambda: stream.first_from(node, since) is not None, timeout, 0.005)
        return stream.first_from(node, since)


def detection_figure(
    got: Durations | str, udp_monitor: Durations | None, dpd: Durations | None
) -> Figure:
    """2i beside 2m (its baseline) and 2 (noted) of the same run."""
    name = (
        "2i ICMP monitor: gateway silenced -> first datagram through the next gateway "
        "(monitor 100ms x 3, charon defaults)"
    )
    fig = Figure(
        name=name,
        unit="s",
        extsock=Summary.of(got.total if isinstance(got, Durations) else []),
        baseline=Summary.of(udp_monitor.total if udp_monitor else []),
        goal=f"<= {GOAL_S:g} s median",
        goal_value=GOAL_S,
        baseline_label="figure 2m of this run (UDP monitor 500ms x 3: fault -> CHILD_SA up)",
        skipped=got if isinstance(got, str) else None,
    )
    if isinstance(got, Durations):
        fig.notes = got.errors[:5]
        fig.extra["child_up_s"] = Summary.of(got.noticed).to_dict()
        up = Summary.of(got.noticed).median
        if up is not None:
            fig.notes.append(f"fault -> CHILD_SA up on the next gateway: median {up:.3f} s")
    fig.extra["figure_2_s"] = Summary.of(dpd.total if dpd else []).to_dict()
    if dpd and dpd.total:
        fig.notes.append(
            f"figure 2 (DPD 1s + retransmit) median {Summary.of(dpd.total).median:.2f} s"
        )
    return fig


# --- 2f and 2p: the windows ----------------------------------------------------------------


@dataclass
class WindowResult:
    loaded: bool
    seconds: float = 0.0
    failovers: int | None = None
    history: int | None = None
    active_gateway: str | None = None
    echoes: int | None = None  # echo requests the gateways received in the window
    load_sent: int = 0
    load_answered: int = 0
    load_longest_gap: float | None = None
    error: str | None = None
    verdicts: list[str] = field(default_factory=list)  # extsock's "gateway dead" log lines
    held: int = 0  # verdicts held back after a stall of extsock itself

    @property
    def probes_per_s(self) -> float | None:
        if self.echoes is None or self.seconds <= 0:
            return None
        return self.echoes / self.seconds


def _in_echoes(lab: Lab) -> int:
    """Echo requests received by every gateway's namespace (Icmp InEchos of /proc/net/snmp)."""
    total = 0
    for node in lab.config.gateway_names:
        text = lab.ns_exec(node, ["cat", "/proc/net/snmp"], check=True).stdout
        rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Icmp:")]
        if len(rows) < 2:
            raise RuntimeError(f"no Icmp counters in {node}'s /proc/net/snmp")
        total += int(dict(zip(rows[0], rows[1], strict=True))["InEchos"])
    return total


def window(prefix: str, seconds: float, loaded: bool, stop: threading.Event) -> WindowResult:
    """One lab, one tunnel monitored by ICMP 100 ms x 3, `seconds` idle or loaded."""
    result = WindowResult(loaded)
    try:
        with (
            bench_lab(LabConfig(prefix=prefix)) as lab,
            running(BenchRunner(lab, icmp_policy(lab), name=fresh_name())) as runner,
        ):
            if not wait_until(lambda: lab.child_installed("segw1"), 20.0):
                raise RuntimeError("no tunnel on segw1")
            if not wait_until(lambda: "monitoring the tunnel via" in runner.log_text(), 5.0):
                raise RuntimeError("the monitor did not start")
            time.sleep(1.0)
            _observe(lab, runner, result, seconds, stop)
    except Exception as exc:  # reported in the figure's notes; the bench goes on
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _observe(
    lab: Lab, runner: ExtsockRunner, result: WindowResult, seconds: float, stop: threading.Event
) -> None:
    before = runner.status()["failures_total"]
    echoes = _in_echoes(lab)
    stream = EchoStream(lab, LOAD_PERIOD) if result.loaded else None
    t0 = time.monotonic()
    if stream is not None:
        stream.start()
    try:
        stop.wait(seconds)
    finally:
        result.echoes = _in_echoes(lab) - echoes
        result.seconds = time.monotonic() - t0
        if stream is not None:
            stream.stop()
    status = runner.status()
    result.failovers = int(status["failures_total"]) - int(before)
    result.active_gateway = status["active_gateway"]
    result.history = len(runner.request("history", conn=HOME)["records"])
    if stream is not None:
        result.load_sent, result.load_answered = stream.sent, len(stream.answers)
        if len(stream.answers) > 1:
            result.load_longest_gap = round(stream.longest_gap()[0], 3)
    lines = runner.log_text().splitlines()
    result.verdicts = [line for line in lines if ": gateway dead" in line][:5]
    result.held = sum(1 for line in lines if "the verdict waits for one more probe" in line)
    if stop.is_set():
        result.error = "interrupted"


class Windows:
    """The idle and loaded windows, each in a thread and a lab of its own."""

    def __init__(self, seconds: float, log: Log) -> None:
        self.seconds = seconds
        self.log = log
        self.results: dict[bool, WindowResult] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> Windows:
        for prefix, loaded in ((IDLE_PREFIX, False), (LOADED_PREFIX, True)):
            thread = threading.Thread(target=self._one, args=(prefix, loaded), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _one(self, prefix: str, loaded: bool) -> None:
        what = "loaded" if loaded else "idle"
        self.log(f"  ICMP monitor window ({prefix}, {what}, {self.seconds:.0f} s) started")
        self.results[loaded] = window(prefix, self.seconds, loaded, self._stop)
        self.log(f"  ICMP monitor window ({prefix}, {what}) done: {self.results[loaded]}")

    def join(self, timeout: float) -> dict[bool, WindowResult]:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self._stop.set()  # cut short; each lab is downed by its own thread
            for thread in self._threads:
                thread.join(60.0)
        return dict(self.results)

    def figures(self, timeout: float) -> list[Figure]:
        got = self.join(timeout)
        return window_figures(got.get(False), got.get(True), self.seconds)


def _one_value(value: float | int | None) -> Summary:
    return Summary.of([] if value is None else [float(value)])


def _why_not(result: WindowResult | None) -> str:
    return (result.error if result is not None else None) or "window not run"


def window_figures(
    idle: WindowResult | None, loaded: WindowResult | None, seconds: float
) -> list[Figure]:
    out = []
    for result, what in ((idle, "idle"), (loaded, "loaded: UDP echo every 50 ms")):
        failovers = None if result is None else result.failovers
        fig = Figure(
            name=f"2f false failovers in {seconds:.0f} s, ICMP monitor 100ms x 3, {what}",
            unit="failovers",
            extsock=_one_value(failovers),
            baseline=Summary.of([]),
            goal="0",
            goal_value=0.0,
            baseline_label="none (goal: no failover while the gateway is alive)",
            skipped=None if failovers is not None else _why_not(result),
        )
        if result is not None:
            fig.extra["window"] = result.__dict__ | {"probes_per_s": result.probes_per_s}
            if result.error and failovers is not None:
                fig.notes.append(result.error)
            fig.notes += [f"verdicts held after a stall of extsock: {result.held}"]
            fig.notes += [f"extsock: {line}" for line in result.verdicts[:3]]
            if result.loaded and failovers is not None:
                gap = result.load_longest_gap
                fig.notes.append(
                    f"stream: {result.load_sent} sent, {result.load_answered} answered, "
                    f"longest gap {gap if gap is not None else '-'} s"
                )
        out.append(fig)
    loaded_rate = None if loaded is None else loaded.probes_per_s
    rate = Figure(
        name="2p ICMP monitor probes/s (100ms x 3), with traffic (loaded) beside idle",
        unit="probes/s",
        extsock=_one_value(loaded_rate),
        baseline=_one_value(None if idle is None else idle.probes_per_s),
        goal="(reported)",
        baseline_label="the idle window (one probe per interval: ~10/s)",
        notes=["echo requests counted where they arrive: Icmp InEchos of the gateways"],
        skipped=None if loaded_rate is not None else _why_not(loaded),
    )
    out.append(rate)
    return out
