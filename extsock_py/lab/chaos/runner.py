"""Runs a chaos schedule in the lab: three gateways, extsock managing two connections that
share them, traffic through both, a sample every 0.5 s, the faults at their times.

Threads: the traffic (traffic.py), the sampler (this module), and the main one, which applies
the faults and their second halves (a heal, a restart, a SIGCONT) from one queue. Everything
is bounded in time; the lab goes down at the end, also after an error.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from extsock_py.adapters.control.client import ControlClient
from extsock_py.lab import netns
from extsock_py.lab.chaos import invariants, setup
from extsock_py.lab.chaos.observations import (
    ConnSample,
    FaultRun,
    HistoryEntry,
    RunRecord,
    Sample,
)
from extsock_py.lab.chaos.schedule import Fault, Schedule
from extsock_py.lab.chaos.traffic import Traffic
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI, LabConfig

Log = Callable[[str], None]
SAMPLE_EVERY = 0.5
STATUS_TIMEOUT = 2.5  # s: a slower answer is an I3 violation anyway
QUIET_MAX_EXTRA = 120.0  # s the run may go past its duration to end with a full quiet window
_SECRETS = re.compile(r"^secrets \{.*?^\}\n?", re.S | re.M)
# charon's log lines of a rekey: an IKE_SA's completed (ike_rekey.c), a CHILD_SA's as ini
# asks for it (a CREATE_CHILD_SA request with a REKEY_SA notify; the gateways never rekey first,
# their lifetimes are charon's defaults).
IKE_REKEYED = re.compile(r"IKE_SA \S+ rekeyed between")
CHILD_REKEYED = re.compile(r"generating CREATE_CHILD_SA request \d+ \[ N\(REKEY_SA\)")


@dataclass
class Options:
    seed: int
    duration: float
    fault_every: float
    out: Path
    prefix: str = "ch-"
    period: float = 0.005  # figure 7's stream: 200 datagrams/s per connection


@dataclass
class _Pending:
    at: float
    seq: int
    label: str
    action: Callable[[], None]

    def __lt__(self, other: _Pending) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


def _clock(epoch: float) -> str:
    """HH:MM:SS.mmm, local time as the lab's logs write it."""
    return time.strftime("%H:%M:%S", time.localtime(epoch)) + f".{int(epoch % 1 * 1000):03d}"


def _proc(pid: int) -> tuple[int | None, int | None, int | None]:
    """RSS (KiB), open fds, threads of a process; None where /proc says nothing."""
    rss = threads = fds = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


class ChaosRun:
    def __init__(self, options: Options, schedule: Schedule, log: Log) -> None:
        self.o = options
        self.schedule = schedule
        self.log = log
        self.lab = Lab(
            LabConfig(gateways=3, retransmit_timeout=1, prefix=options.prefix),
            state_dir=options.out / "lab",
        )
        self.gateways = self.lab.config.remote_addrs()
        self.node_of = {link.gw_v4: f"segw{link.index}" for link in self.lab.config.links}
        self.conns = {c.name: c for c in setup.CONNS}
        self.child_conn = {c.child: c.name for c in setup.CONNS}
        self.extsock: ExtsockRunner | None = None
        self.t0 = 0.0
        self.wall0 = 0.0
        self.traffic: Traffic | None = None
        self.samples: list[Sample] = []
        self.faults: list[FaultRun] = []
        self.exits: list[tuple[float, str]] = []
        self.down_nodes: set[str] = set()
        self.stalled = False
        self.expected_down = False
        self.epoch = 0  # changes at each stall, SIGCONT, kill and start of extsock
        self.exit_seen = False
        self.variant = False  # the file as written at the start
        self.secrets = ""
        self._stop = threading.Event()
        self._pending: list[_Pending] = []
        self._seq = 0

    # ------------------------------------------------------------------ the run

    def run(self) -> RunRecord:
        reason = Lab.preflight()
        if reason:
            raise RuntimeError(f"the chaos run needs the lab: {reason}")
        try:
            self._up()
            self._loop()
            return self._finish()
        finally:
            self._stop.set()
            self._teardown()

    def _up(self) -> None:
        self.log(f"lab up ({self.o.prefix}, state in {self.lab.state_dir})")
        self.lab.up(timeout=60.0)
        for conn in setup.CONNS:  # each connection's traffic source, inside its local_ts
            if conn.source != "10.100.0.1":
                netns.add_addr(self.lab.namespace(INI), "lo", f"{conn.source}/32")
        secrets = _SECRETS.search(self.lab.ini_conf.read_text())
        text = secrets.group(0) if secrets else ""
        self.secrets = text
        self.extsock = ExtsockRunner(
            self.lab, "", name="chaos",
            conf_transform=lambda _: setup.swanctl_conf(self.gateways, text),
        )  # fmt: skip
        self.extsock.write_config()
        self.extsock.start(timeout=30.0)
        if not wait_until(self._all_installed, 60.0, interval=0.2):
            raise RuntimeError(f"the tunnels did not come up:\n{self.extsock.log_tail()}")
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.log(f"t=0 at {_clock(self.wall0)} (the clock of charon's and extsock's logs)")
        sources = [(c.name, c.source) for c in setup.CONNS]
        longest = self.o.duration + QUIET_MAX_EXTRA + 60
        self.traffic = Traffic(
            self.lab.namespace(INI), sources, self.t0, self.o.period, max_seconds=longest
        ).start()
        threading.Thread(target=self._sampler, daemon=True).start()

    def _all_installed(self) -> bool:
        counts, _ = self._installed()
        return all(counts.get(name, 0) >= 1 for name in self.conns)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _loop(self) -> None:
        faults = list(self.schedule.faults)
        end = self.o.duration
        hard_end = self.o.duration + QUIET_MAX_EXTRA
        for _ in range(10_000_000):  # bounded by hard_end in time
            now = self.now()
            if self.exit_seen and not self.expected_down:
                self._restart_after_exit()
            if now >= end and not self._pending and not faults:
                quiet_end = self._quiet_start() + invariants.QUIET + 2.0
                if now >= min(max(end, quiet_end), hard_end):
                    return
            due = [p.at for p in self._pending[:1]] + [f.at for f in faults[:1]]
            if self._pending and self._pending[0].at <= now:
                item = heapq.heappop(self._pending)
                self._safely(item.label, item.action)
                continue
            if faults and faults[0].at <= now:
                self._apply(faults.pop(0))
                continue
            wait = min([*due, now + 0.2]) - now
            time.sleep(max(0.0, min(wait, 0.2)))

    def _quiet_start(self) -> float:
        return invariants.quiet_start(self._record(final=False))

    def _later(self, delay: float, label: str, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._pending, _Pending(self.now() + delay, self._seq, label, action))

    def _safely(self, label: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # a failed heal or restart is logged; the run goes on
            self.log(f"{self.now():8.2f}s {label} failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ faults

    def _apply(self, fault: Fault) -> None:
        at = self.now()
        conn = setup.CONNS[fault.conn % len(setup.CONNS)].name
        index = len(self.faults)
        self.faults.append(FaultRun(at, fault.kind, at, at, detail=f"{conn}"))
        try:
            detail, end_in = self._do(fault, conn, index)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.faults[index] = replace(self.faults[index], done=self.now(), end=self.now(),
                                         error=error)  # fmt: skip
            self.log(f"{at:8.2f}s {fault.kind} {conn}: NOT APPLIED: {error}")
            return
        done = self.now()
        self.faults[index] = replace(self.faults[index], done=done, end=done + end_in,
                                     detail=detail)  # fmt: skip
        self.log(f"{at:8.2f}s {fault.kind}: {detail} (took {done - at:.2f}s; at "
                 f"{_clock(self.wall0 + at)})")  # fmt: skip

    def _ended(self, index: int) -> None:
        self.faults[index] = replace(self.faults[index], end=self.now())

    def _do(self, fault: Fault, conn: str, index: int) -> tuple[str, float]:
        """Apply a fault; its detail and how long after its action it is over."""
        runner = self.extsock
        assert runner is not None
        if fault.kind == "sighup":
            if fault.changed:  # each change flips the file between its two variants
                self.variant = not self.variant
                text = setup.swanctl_conf(self.gateways, self.secrets, changed=self.variant)
                runner.conf.write_text(text)
            self._signal(signal.SIGHUP)
            return ("file changed" if fault.changed else "file unchanged"), 0.0
        if fault.kind == "stall":
            self.stalled = True
            self.epoch += 1
            self._signal(signal.SIGSTOP)
            self._later(fault.lasts, "SIGCONT", lambda: self._cont(index))
            return f"SIGSTOP for {fault.lasts:.1f}s", fault.lasts
        if fault.kind == "extsock-kill":
            self.expected_down = True
            self.epoch += 1
            runner.kill9()
            self._later(fault.lasts, "extsock start", lambda: self._start_extsock(index))
            return f"kill -9, start after {fault.lasts:.1f}s", fault.lasts
        if fault.kind == "ini-restart":
            self.lab.kill(INI)
            self._later(fault.lasts, "ini start", lambda: self._start_node(INI, index))
            return f"kill -9 of ini's charon, start after {fault.lasts:.1f}s", fault.lasts
        active = self._active_of(conn)
        node = self.node_of[active]
        if fault.kind == "link-cut":
            self.lab.fail(node, "link")
            self.down_nodes.add(node)
            self._later(fault.lasts, f"heal {node}", lambda: self._heal(node, index))
            return f"{conn} on {node}: link cut, heal after {fault.lasts:.1f}s", fault.lasts
        if fault.kind == "gateway-restart":
            self.down_nodes.add(node)
            self.lab.kill(node)
            self._later(fault.lasts, f"{node} start", lambda: self._start_node(node, index))
            return f"{conn} on {node}: kill -9, start after {fault.lasts:.1f}s", fault.lasts
        if fault.kind == "delete":
            ike, child = self._gateway_sa(node, conn)
            args = ("--ike-id", ike) if fault.scope == "ike" else ("--child-id", child)
            self.lab.swanctl(node, "--terminate", *args, "--timeout", "5", timeout=10.0,
                             check=False)  # fmt: skip
            return f"{conn} on {node}: DELETE of its {fault.scope.upper()}_SA", 0.0
        healthy = [
            g for g in self.gateways if g != active and self.node_of[g] not in self.down_nodes
        ]
        if not healthy:
            raise RuntimeError(f"no healthy gateway but {active}")
        target = healthy[fault.pick % len(healthy)]
        if fault.kind == "switch":
            answer = runner.request("switch", conn=conn, to=target)
            changed = answer.get("changed") if isinstance(answer, dict) else None
            return f"{conn}: switch {node} -> {self.node_of[target]} (changed {changed})", 0.0
        ike, _ = self._gateway_sa(node, conn)
        self.lab.swanctl(node, "--redirect", "--ike-id", ike, "--gateway", target,
                         timeout=10.0)  # fmt: skip
        return f"{conn}: redirect {node} -> {self.node_of[target]}", 0.0

    def _signal(self, sig: signal.Signals) -> None:
        runner = self.extsock
        if runner is None or runner.process is None or runner.process.poll() is not None:
            raise RuntimeError("extsock is not running")
        os.kill(runner.process.pid, sig)

    def _cont(self, index: int) -> None:
        with contextlib.suppress(RuntimeError):
            self._signal(signal.SIGCONT)
        self.stalled = False
        self.epoch += 1
        self._ended(index)

    def _start_extsock(self, index: int) -> None:
        assert self.extsock is not None
        try:
            self.extsock.start(timeout=20.0)
        finally:
            self.epoch += 1
            self.expected_down = False
            self.exit_seen = False
            self._ended(index)

    def _restart_after_exit(self) -> None:
        self.log(f"{self.now():8.2f}s extsock died unasked: started again")
        self.expected_down = True
        self.epoch += 1
        self._safely("extsock start", lambda: self._start_extsock(-1))

    def _start_node(self, node: str, index: int) -> None:
        try:
            self.lab.start(node, timeout=20.0)
        finally:
            self.down_nodes.discard(node)
            self._ended(index)

    def _heal(self, node: str, index: int) -> None:
        try:
            self.lab.heal(node)
        finally:
            self.down_nodes.discard(node)
            self._ended(index)

    def _active_of(self, conn: str) -> str:
        """extsock's active gateway of `conn`; else (extsock stalled, killed, the connection
        down) the gateway whose IKE_SA carries its installed CHILD_SA in ini's charon, else
        the other connection's."""
        if not (self.stalled or self.expected_down):
            with contextlib.suppress(Exception):
                active = self._status_rows().get(conn, {}).get("active_gateway")
                if active in self.node_of:
                    return str(active)
        _, carriers = self._installed()
        for name in (conn, *self.conns):
            if carriers.get(name):
                return sorted(carriers[name])[0]
        raise RuntimeError(f"{conn}: no tunnel up to aim at")

    def _gateway_sa(self, node: str, conn: str) -> tuple[str, str]:
        """(IKE_SA id, CHILD_SA id) in a gateway's charon of the tunnel of `conn`."""
        net = self.conns[conn].net
        for entry in self.lab.list_sas(node, timeout=2.0):
            for ike in entry.values():
                for child in (ike.get("child-sas") or {}).values():
                    if net in (child.get("remote-ts") or []) and child.get("state") == "INSTALLED":
                        return str(ike.get("uniqueid")), str(child.get("uniqueid"))
        raise RuntimeError(f"{node} holds no CHILD_SA of {conn} ({net})")

    # ------------------------------------------------------------------ sampling

    def _installed(self) -> tuple[dict[str, int], dict[str, set[str]]]:
        counts: dict[str, int] = {}
        carriers: dict[str, set[str]] = {}
        for entry in self.lab.list_sas(INI, timeout=2.0):
            for ike in entry.values():
                for child in (ike.get("child-sas") or {}).values():
                    conn = self.child_conn.get(str(child.get("name")))
                    if conn is None or child.get("state") != "INSTALLED":
                        continue
                    counts[conn] = counts.get(conn, 0) + 1
                    carriers.setdefault(conn, set()).add(str(ike.get("remote-host")))
        return counts, carriers

    def _clones(self) -> dict[str, int]:
        with self.lab.vici_session(INI, timeout=2.0) as session:
            names = [str(k) for conn in session.list_conns() for k in conn]
        return {c: sum(1 for n in names if n.startswith(f"{c}@")) for c in self.conns}

    def _status_rows(self) -> dict[str, dict[str, Any]]:
        assert self.extsock is not None
        client = ControlClient(self.extsock.control_socket, timeout=STATUS_TIMEOUT)
        try:
            result = client.request("status")
        finally:
            client.close()
        rows = result.get("connections", []) if isinstance(result, dict) else result
        return {str(r.get("connection")): dict(r) for r in rows}

    def _sampler(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # one bad sample must not end the sampling
                self.samples.append(self._sample())
            next_at += SAMPLE_EVERY
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def _sample(self) -> Sample:
        runner = self.extsock
        assert runner is not None
        epoch, stalled, down = self.epoch, self.stalled, self.expected_down
        proc = runner.process
        alive = proc is not None and proc.poll() is None
        if proc is not None and not alive and not down and not self.exit_seen:
            self.exit_seen = True
            why = f"exit code {proc.returncode}: {runner.log_tail(5)}"
            self.exits.append((self.now(), why))
        t = self.now()
        rows: dict[str, dict[str, Any]] = {}
        status_s: float | None = None
        error = ""
        if alive and not stalled and not down:
            began = time.monotonic()
            try:
                rows = self._status_rows()
                status_s = time.monotonic() - began
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        if self.epoch != epoch:  # a stall, a kill or a start came in between: not judged
            stalled = True
        counts: dict[str, int] | None = None
        carriers: dict[str, set[str]] = {}
        clones: dict[str, int] = {}
        with contextlib.suppress(OSError):
            counts, carriers = self._installed()
        with contextlib.suppress(OSError):
            clones = self._clones()
        conns = {
            name: ConnSample(
                phase=rows.get(name, {}).get("phase"),
                active=rows.get(name, {}).get("active_gateway"),
                installed=-1 if counts is None else counts.get(name, 0),
                carriers=tuple(sorted(carriers.get(name, ()))),
                clones=clones.get(name, -1),
            )
            for name in self.conns
        }
        pid = proc.pid if alive and proc is not None else None
        rss, fds, threads = _proc(pid) if pid is not None else (None, None, None)
        return Sample(t, conns, alive, down, stalled, status_s, error, pid, rss, fds, threads)

    # ------------------------------------------------------------------ the end

    def _history(self) -> list[HistoryEntry]:
        assert self.extsock is not None
        out: list[HistoryEntry] = []
        for conn in self.conns:
            answer = self.extsock.request("history", conn=conn, limit=10000)
            for r in answer.get("records", []):
                out.append(
                    HistoryEntry(float(r["time"]) - self.wall0, conn, r.get("from"), r.get("to"),
                                 str(r.get("reason")), str(r.get("result")))
                )  # fmt: skip
        return sorted(out, key=lambda e: e.t)

    def _rekeys(self) -> tuple[int, int]:
        try:
            text = self.lab.log_path(INI).read_text(errors="replace")
        except OSError:
            return 0, 0
        return len(IKE_REKEYED.findall(text)), len(CHILD_REKEYED.findall(text))

    def _record(self, final: bool) -> RunRecord:
        assert self.traffic is not None
        history = self._history() if final else []
        ike, child = self._rekeys() if final else (0, 0)
        return RunRecord(
            seed=self.o.seed,
            duration=self.o.duration,
            conns=tuple(self.conns),
            drain=setup.DRAIN,
            samples=list(self.samples),
            faults=list(self.faults),
            answers=self.traffic.answers,
            history=history,
            unexpected_exits=list(self.exits),
            ike_rekeys=ike,
            child_rekeys=child,
            gateway_names=dict(self.node_of),
        )

    def _finish(self) -> RunRecord:
        self._stop.set()
        time.sleep(SAMPLE_EVERY * 2)
        if self.traffic is not None:
            self.traffic.stop()
        return self._record(final=True)

    def _teardown(self) -> None:
        runner = self.extsock
        if runner is not None:
            if self.stalled:
                with contextlib.suppress(Exception):
                    self._signal(signal.SIGCONT)
            with contextlib.suppress(Exception):
                runner.stop()
        if self.traffic is not None:
            self.traffic.stop()
        with contextlib.suppress(Exception):
            for node in self.down_nodes:
                self.lab.heal(node)
        logs = self.o.out / "logs"  # the lab's own dir goes with the lab: keep charon's logs
        logs.mkdir(parents=True, exist_ok=True)
        for node in self.lab.nodes:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.lab.log_path(node), logs / f"{node}-charon.log")
        self.lab.down()


@contextlib.contextmanager
def timed(log: Log, what: str) -> Iterator[None]:
    began = time.monotonic()
    yield
    log(f"{what}: {time.monotonic() - began:.1f} s")
