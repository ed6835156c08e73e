"""Figures of the ICMP echo monitor (issues 18 and 28): 2i, 2s, and the windows 2f, 2p, 2c.

2i: the same silent gateway as figures 2 and 2m (``lab.fail(gw, "link")`` at t0, trials
alternating gateways, the tunnel idle before the fault), with the tunnel monitor on
``probe = icmp``, 100 ms x 3, charon's default settings. The figure is t0 -> the first
datagram ANSWERED THROUGH THE NEXT GATEWAY: the lab's UDP echo stream (one datagram every
10 ms from ini's protected address, started right after the fault) gets an answer tagged
by the next gateway's echo server. The CHILD_SA up on the next gateway (child-updown on an
independent listener, as figures 2 and 2m measure) is in the JSON beside it
(``child_up_s``). Baseline: figure 2m (UDP monitor 500 ms x 3) of the same run; figure 2
(DPD + first retransmit) is noted.

2s (issue 28): the same trial, BFD-class: ICMP 30 ms x 3 with ``standby = yes``. Before each
trial the hot standby must be up towards the next gateway, and the CHILD_SA must come up in
the standby's IKE_SA (one CREATE_CHILD_SA, no IKE_SA_INIT): a trial where it did not is in
the notes. Goal 0.12 s median; baseline 2i of the same run.

2f / 2p / 2c: labs of their own, each with one tunnel monitored by ICMP 30 ms x 3 for a
window (600 s full, 60 s quick, 5 s smoke; ``--icmp-window``). Rows: idle; loaded (the
lab's echo stream, one UDP datagram every 50 ms through the tunnel, answered); rekey (the
tunnel's IKE_SA and CHILD_SA rekeyed every 30 s, ``rekey_time = 30s``); those three in
threads beside the rest of the bench and beside each other (``<base>i-``, ``l-``, ``k-``);
and busy (``<base>s-``): both cores of the host busy with ``stress-ng --cpu 2`` (nice 0),
run alone after every other figure so that it moves none of them. 2f: failovers in the
window (goal 0). 2p: probes per second, counted where they arrive (``Icmp InEchos`` in
every gateway's namespace, not from extsock's own log): loaded beside idle. 2c: extsock's
CPU (utime + stime of its process over the idle window) in % of one core (goal <= 1 %).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from extsock_py.bench.fig_detection import Durations
from extsock_py.bench.fig_standby import child_ike_id, ike_id_towards, standby_up
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
REKEY_PREFIX = f"{BASE}k-"
BUSY_PREFIX = f"{BASE}s-"
FAST_INTERVAL = "30ms"  # figures 2s, 2f, 2p, 2c (issue 28): BFD-class, 3 x 30 ms
STANDBY_GOAL_S = 0.12
CPU_GOAL_PCT = 1.0
REKEY_TIME = "30s"
ROWS = ("idle", "loaded", "rekey", "busy")
ROW_LABELS = {
    "idle": "idle",
    "loaded": "loaded: UDP echo every 50 ms",
    "rekey": f"IKE_SA and CHILD_SA rekeyed every {REKEY_TIME}",
    "busy": "busy host: stress-ng --cpu 2 (nice 0)",
}
PREFIXES = {
    "idle": IDLE_PREFIX,
    "loaded": LOADED_PREFIX,
    "rekey": REKEY_PREFIX,
    "busy": BUSY_PREFIX,
}


def icmp_policy(lab: Lab, interval: str = "100ms", misses: int = 3, standby: bool = False) -> str:
    return (
        POLICY
        + ("    standby = yes\n" if standby else "")
        + (
            "    monitor {\n"
            "        enabled = yes\n"
            f"        local = {INI_ADDR}\n"
            f"        remote = {PROTECTED_ADDR}\n"
            "        probe = icmp\n"
            f"        interval = {interval}\n"
            f"        misses = {misses}\n"
            f"        netns = {lab.namespace(INI)}\n"
            "    }\n"
        )
    )


def with_rekeys(text: str, every: str = REKEY_TIME) -> str:
    """ini's swanctl.conf with `home`'s IKE_SA and its CHILD_SA `net` rekeyed `every`."""
    text, n = re.subn(r"(\n    home \{\n)", rf"\1        rekey_time = {every}\n", text, count=1)
    text, m = re.subn(
        r"(\n            net \{\n)", rf"\1                rekey_time = {every}\n", text, count=1
    )
    if n != 1 or m != 1:
        raise RuntimeError("ini's swanctl.conf: no `home` or `net` section to set rekey_time in")
    return text


def window_for(mode: str, override: float | None) -> float:
    if override is not None:
        return override
    return WINDOWS.get(mode.split()[0], WINDOWS["quick"])


# --- 2i ------------------------------------------------------------------------------------


def detection(
    lab: Lab, trials: int, timeout: float, interval: str = "100ms", standby: bool = False
) -> Durations:
    """Figure 2i (2s with `standby` at 30 ms): fault -> first echo answered through the next
    gateway (`total`); the CHILD_SA up there, on the listener, in `noticed`. With `standby`,
    each trial waits for the hot standby up towards the next gateway first, and one whose
    CHILD_SA did not come up in the standby's IKE_SA is an error, not a value."""
    addrs = lab.config.remote_addrs()
    out = Durations()
    policy = icmp_policy(lab, interval, 3, standby)
    with (
        EventWatch(str(lab.vici_path(INI))) as watch,
        running(BenchRunner(lab, policy, name=fresh_name())) as runner,
    ):
        if watch.wait_for(child_up(f"{HOME}@{addrs[0]}"), 20.0) is None:
            raise RuntimeError("extsock's tunnel did not come up on segw1")
        active = 0
        for _ in range(trials):
            nxt = (active + 1) % len(addrs)
            node, nxt_node = gateway_name(active + 1), gateway_name(nxt + 1)
            time.sleep(1.5)  # a steady state: probes answered on the new tunnel
            standby_id = None
            if standby:
                target = addrs[nxt]

                def ready(target: str = target) -> bool:
                    return standby_up(runner, target)

                if not wait_until(ready, 15.0, 0.05):
                    out.errors.append(f"the hot standby towards {addrs[nxt]} was not up")
                standby_id = ike_id_towards(lab, f"{HOME}@{addrs[nxt]}")
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
                if standby:
                    carried = child_ike_id(lab, f"{HOME}@{addrs[nxt]}")
                    if standby_id is None or carried != standby_id:
                        out.errors.append(
                            f"the CHILD_SA came up in IKE_SA {carried}, not the standby's "
                            f"{standby_id}"
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
    _child_up_notes(fig, got)
    fig.extra["figure_2_s"] = Summary.of(dpd.total if dpd else []).to_dict()
    if dpd and dpd.total:
        fig.notes.append(
            f"figure 2 (DPD 1s + retransmit) median {Summary.of(dpd.total).median:.2f} s"
        )
    return fig


def _child_up_notes(fig: Figure, got: Durations | str) -> None:
    """A figure's first errors and, beside its traffic figure, when the CHILD_SA was up."""
    if isinstance(got, Durations):
        fig.notes = got.errors[:5]
        fig.extra["child_up_s"] = Summary.of(got.noticed).to_dict()
        up = Summary.of(got.noticed).median
        if up is not None:
            fig.notes.append(f"fault -> CHILD_SA up on the next gateway: median {up:.3f} s")


def standby_figure(got: Durations | str, icmp: Durations | str | None) -> Figure:
    """2s beside 2i (its baseline) of the same run."""
    name = (
        "2s ICMP monitor 30ms x 3 with hot standby: gateway silenced -> first datagram "
        "through the next gateway"
    )
    baseline = icmp.total if isinstance(icmp, Durations) else []
    fig = Figure(
        name=name,
        unit="s",
        extsock=Summary.of(got.total if isinstance(got, Durations) else []),
        baseline=Summary.of(baseline),
        goal=f"<= {STANDBY_GOAL_S:g} s median",
        goal_value=STANDBY_GOAL_S,
        baseline_label="figure 2i of this run (ICMP 100ms x 3, no standby)",
        skipped=got if isinstance(got, str) else None,
    )
    _child_up_notes(fig, got)
    return fig


# --- 2f, 2p and 2c: the windows --------------------------------------------------------


@dataclass
class WindowResult:
    row: str  # one of ROWS
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
    held: int = 0  # windows discounted after a stall of extsock itself (logged ones)
    cpu_pct: float | None = None  # extsock's CPU over the window, % of one core
    ike_rekeys: int | None = None  # new IKE_SA unique ids on ini in the window
    child_rekeys: int | None = None  # new CHILD_SA unique ids on ini in the window

    @property
    def loaded(self) -> bool:
        return self.row == "loaded"

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


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


_CLK_TCK = 100.0


def _sa_ids(lab: Lab) -> tuple[int, int]:
    """The highest IKE_SA and CHILD_SA unique ids on ini (they only grow: a rekey adds one)."""
    ike, child = 0, 0
    for entry in lab.list_sas(INI):
        for sa in entry.values():
            ike = max(ike, int(sa["uniqueid"]))
            for c in (sa.get("child-sas") or {}).values():
                child = max(child, int(c["uniqueid"]))
    return ike, child


def window(prefix: str, seconds: float, row: str, stop: threading.Event) -> WindowResult:
    """One lab, one tunnel monitored by ICMP 30 ms x 3, `seconds` in the row's conditions."""
    result = WindowResult(row)
    try:
        with bench_lab(LabConfig(prefix=prefix)) as lab:
            runner = BenchRunner(
                lab,
                icmp_policy(lab, FAST_INTERVAL, 3),
                name=fresh_name(),
                conf_transform=with_rekeys if row == "rekey" else None,
            )
            with running(runner):
                if not wait_until(lambda: lab.child_installed("segw1"), 20.0):
                    raise RuntimeError("no tunnel on segw1")
                if not wait_until(lambda: "monitoring the tunnel via" in runner.log_text(), 5.0):
                    raise RuntimeError("the monitor did not start")
                time.sleep(1.0)
                _observe(lab, runner, result, seconds, stop)
    except Exception as exc:  # reported in the figure's notes; the bench goes on
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _busy(seconds: float) -> subprocess.Popen[bytes] | None:
    """stress-ng keeping both cores busy (nice 0) for `seconds` (+ a margin), or None."""
    if shutil.which("stress-ng") is None:
        raise RuntimeError("stress-ng missing (scripts/install-deps.sh installs it)")
    return subprocess.Popen(
        ["stress-ng", "--cpu", "2", "--timeout", f"{int(seconds) + 30}s", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _observe(
    lab: Lab, runner: ExtsockRunner, result: WindowResult, seconds: float, stop: threading.Event
) -> None:
    before = runner.status()["failures_total"]
    echoes = _in_echoes(lab)
    ids = _sa_ids(lab)
    stream = EchoStream(lab, LOAD_PERIOD) if result.loaded else None
    stress = _busy(seconds) if result.row == "busy" else None
    assert runner.process is not None
    pid = runner.process.pid
    cpu = _cpu_seconds(pid)
    t0 = time.monotonic()
    if stream is not None:
        stream.start()
    try:
        stop.wait(seconds)
    finally:
        result.seconds = time.monotonic() - t0
        result.cpu_pct = round(100.0 * (_cpu_seconds(pid) - cpu) / result.seconds, 3)
        if stress is not None:
            stress.terminate()
            try:
                stress.wait(10.0)
            except subprocess.TimeoutExpired:
                stress.kill()
                stress.wait(10.0)
        result.echoes = _in_echoes(lab) - echoes
        if stream is not None:
            stream.stop()
    after = _sa_ids(lab)
    result.ike_rekeys, result.child_rekeys = after[0] - ids[0], after[1] - ids[1]
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
    result.held = sum(1 for line in lines if "do not count" in line or "waits for one" in line)
    if stop.is_set():
        result.error = "interrupted"


class Windows:
    """The idle, loaded and rekey windows, each in a thread and a lab of its own; the busy
    window (stress-ng) after them, alone, when the figures are asked for."""

    def __init__(self, seconds: float, log: Log) -> None:
        self.seconds = seconds
        self.log = log
        self.results: dict[str, WindowResult] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> Windows:
        for row in ("idle", "loaded", "rekey"):
            thread = threading.Thread(target=self._one, args=(row,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _one(self, row: str) -> None:
        prefix = PREFIXES[row]
        self.log(f"  ICMP monitor window ({prefix}, {row}, {self.seconds:.0f} s) started")
        self.results[row] = window(prefix, self.seconds, row, self._stop)
        self.log(f"  ICMP monitor window ({prefix}, {row}) done: {self.results[row]}")

    def join(self, timeout: float) -> dict[str, WindowResult]:
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
        if not self._stop.is_set():
            self._one("busy")  # alone: both cores busy would move every other figure
            got = dict(self.results)
        return window_figures(got, self.seconds)


def _one_value(value: float | int | None) -> Summary:
    return Summary.of([] if value is None else [float(value)])


def _why_not(result: WindowResult | None) -> str:
    return (result.error if result is not None else None) or "window not run"


def window_figures(results: dict[str, WindowResult], seconds: float) -> list[Figure]:
    out = []
    for row in ROWS:
        result = results.get(row)
        failovers = None if result is None else result.failovers
        fig = Figure(
            name=f"2f false failovers in {seconds:.0f} s, ICMP monitor {FAST_INTERVAL} x 3, "
            f"{ROW_LABELS[row]}",
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
            fig.notes += [f"windows discounted after a stall of extsock (logged): {result.held}"]
            if result.cpu_pct is not None:
                fig.notes.append(f"extsock CPU {result.cpu_pct:.2f} % of a core")
            if row == "rekey":
                fig.notes.append(
                    f"rekeys on ini: {result.ike_rekeys} IKE_SA, {result.child_rekeys} CHILD_SA"
                )
            fig.notes += [f"extsock: {line}" for line in result.verdicts[:3]]
            if result.loaded and failovers is not None:
                gap = result.load_longest_gap
                fig.notes.append(
                    f"stream: {result.load_sent} sent, {result.load_answered} answered, "
                    f"longest gap {gap if gap is not None else '-'} s"
                )
        out.append(fig)
    idle, loaded = results.get("idle"), results.get("loaded")
    loaded_rate = None if loaded is None else loaded.probes_per_s
    rate = Figure(
        name=f"2p ICMP monitor probes/s ({FAST_INTERVAL} x 3), with traffic (loaded) beside idle",
        unit="probes/s",
        extsock=_one_value(loaded_rate),
        baseline=_one_value(None if idle is None else idle.probes_per_s),
        goal="(reported)",
        baseline_label="the idle window (one probe per interval: ~33/s)",
        notes=["echo requests counted where they arrive: Icmp InEchos of the gateways"],
        skipped=None if loaded_rate is not None else _why_not(loaded),
    )
    out.append(rate)
    cpu = None if idle is None else idle.cpu_pct
    out.append(
        Figure(
            name=f"2c extsock CPU, one idle tunnel probed by ICMP at {FAST_INTERVAL}",
            unit="% of a core",
            extsock=_one_value(cpu),
            baseline=Summary.of([]),
            goal=f"<= {CPU_GOAL_PCT:g} %",
            goal_value=CPU_GOAL_PCT,
            baseline_label="none (utime + stime of extsock over the idle 2f window)",
            skipped=None if cpu is not None else _why_not(idle),
        )
    )
    return out
