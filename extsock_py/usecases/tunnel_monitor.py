"""The tunnel monitor: probes through each monitored connection's CHILD_SA, on its own timer.

Two sides, one lock (every decision still in the pure core, `domain/monitor.py`; the sockets,
`adapters/monitor_prober.py` and `adapters/icmp_prober.py`, never block):

- the probe side, `probe_pass`, runs on a thread of its own (`adapters/probe_timer.py`) at
  `timer_wake`: each pass drains each socket (answers become `ReplySeen`), ticks each core
  and carries out its actions: `SendProbe` on the socket at once, `DeclareDead` as a
  verdict posted to the main loop with priority (`post_verdict`: the loop runs it before
  anything else in its inbox), where it becomes `MonitorDead(gateway)` to the failover
  manager (which fails over, reason `monitor`). So the probes keep their schedule and the
  verdict goes out whatever the main loop is busy with (a flood of events, a slow list-sas);
  at a 30 ms interval that is the difference between 0.1 s and 0.3 s. At the first miss
  it notes how long charon's threads have waited for a CPU (`run_delay`), and a wait of
  HOST_STALL intervals by the time a verdict is due is `HostStalled`: the probes' path
  through this host stalled, that window's misses do not count (domain/monitor.py).
- the loop side, `run_once` (one of the main loop's `on_iteration` callbacks, `next_wake`
  among its `wakers`), follows the failover machines: a connection whose policy enables the
  monitor and whose phase is UP gets a tunnel key (gateway, IKE_SA id); a new key is a new
  tunnel (socket opened again, counters reset: `Start`), no key stops the monitor (`Stop`).
  It also reads the inbound packet counters with one `list-sas` for all connections
  (`InboundPackets`: real traffic counts as life and postpones the probes) when a look is
  due, at most every `LOOK_MIN` seconds, outside the lock: a slow charon never holds a probe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from extsock_py.domain import events as ev
from extsock_py.domain import monitor as mon
from extsock_py.domain.errors import CharonError, CharonUnreachable
from extsock_py.domain.failover import Phase
from extsock_py.domain.notices import MonitorDeadNotice
from extsock_py.domain.observations import IkeSaInfo
from extsock_py.domain.policy import MonitorPolicy
from extsock_py.domain.profile import clone_name
from extsock_py.interfaces.ports import CharonPort, Clock, EventPublisher, ProbePort
from extsock_py.usecases.failover_manager import FailoverManager

log = logging.getLogger("extsock.monitor")

TunnelKey = tuple[str, int | None]  # (gateway, IKE_SA unique id)
MakeProbe = Callable[[MonitorPolicy], ProbePort]
_ICMP_RATE = 1.0  # seconds between ICMP errors a Linux host sends one source by default
# Shortest time between two looks at the counters. At 100 ms and more, the looks keep their
# schedule (just before each probe, every half interval while traffic flows), limited to
# LOOK_MIN. Below (BFD-class intervals) a list-sas before every probe would cost charon and
# extsock more than the probes themselves (measured at 30 ms: 10 looks a second took
# extsock from ~1.2 % to ~1.9 % of a core): the probes decide and the counters are looked
# at once every FAST_LOOK_MIN.
LOOK_MIN = 0.1
FAST_LOOK_MIN = 1.0
LOOK_LEAD = 0.05  # seconds a look at the counters comes before the probe it may spare
STALL_LOG_EVERY = 10.0  # seconds between two warnings of a stall, per connection
# A verdict is not believed when charon's threads (the probes' path through this host)
# waited for a CPU this many intervals, summed, while the answers were due.
HOST_STALL = 1.0
Verdict = Callable[[], None]
PostVerdict = Callable[[Verdict], None]
RunDelay = Callable[[], "float | None"]  # charon's threads' summed run-queue wait, seconds


def _run_now(work: Verdict) -> None:
    work()


@dataclass
class _Track:
    policy: MonitorPolicy
    state: mon.MonitorState
    probe: ProbePort
    key: TunnelKey | None = None
    retry_open_at: float | None = None
    stall_logged_at: float | None = None
    suspect: tuple[float, float] | None = None  # (when, charon's run_delay) at a first miss


class TunnelMonitor:
    def __init__(
        self,
        manager: FailoverManager,
        charon: CharonPort,
        clock: Clock,
        publisher: EventPublisher,
        make_probe: MakeProbe,
        post_verdict: PostVerdict = _run_now,
        run_delay: RunDelay | None = None,
    ) -> None:
        self._manager = manager
        self._charon = charon
        self._clock = clock
        self._publisher = publisher
        self._make_probe = make_probe
        self._post_verdict = post_verdict
        self._run_delay = run_delay
        self._tracks: dict[str, _Track] = {}
        self._seen_revision = -1
        self._lock = threading.RLock()  # the tracks: the loop side and the probe side
        self._looked_at: float | None = None
        # Called when the probe side's schedule changed (a tunnel started): its timer wakes.
        self.schedule_changed: Callable[[], None] = lambda: None

    # --- the daemon's hooks ------------------------------------------------------------

    def next_wake(self) -> float | None:
        """When the loop side has work: a look at the counters, a socket to open again."""
        with self._lock:
            times = [t.retry_open_at for t in self._tracks.values()]
            looks = [_look_at(t.state) for t in self._tracks.values() if t.state.running]
            due = [t for t in looks if t is not None]
            if due:
                times.append(self._rate_limited(min(due)))
        pending = [t for t in times if t is not None]
        return min(pending) if pending else None

    def timer_wake(self) -> float | None:
        """When the probe side has work: a probe due, a dead-line (None: no tunnel probed)."""
        with self._lock:
            times = [mon.timer_at(t.state) for t in self._tracks.values()]
        pending = [t for t in times if t is not None]
        return min(pending) if pending else None

    def _rate_limited(self, when: float) -> float:
        if self._looked_at is None:
            return when
        fast = any(t.policy.interval < LOOK_MIN for t in self._tracks.values())
        return max(when, self._looked_at + (FAST_LOOK_MIN if fast else LOOK_MIN))

    @property
    def running(self) -> bool:
        """Whether any connection is being probed now."""
        with self._lock:
            return any(t.state.running for t in self._tracks.values())

    def run_once(self) -> None:
        """The loop side's pass (see the module docstring); never raises into the loop."""
        try:
            self._run_once()
        except CharonUnreachable as exc:  # the daemon hears of it from its event stream too
            log.warning("tunnel monitor: charon unreachable: %s", exc)
        except Exception:
            log.exception("tunnel monitor: unexpected error; it keeps running")

    def probe_pass(self) -> None:
        """The probe side's pass (see the module docstring), on the probe timer's thread:
        answers drained, then each core ticked, then its probes sent; never raises."""
        try:
            with self._lock:
                now = self._clock.monotonic()
                for name, track in self._tracks.items():
                    if track.state.running:
                        self._drain(name, track, now)
                        self._watch_host(name, track, now)
                        self._feed(name, track, mon.Tick(), now)
        except Exception:
            log.exception("tunnel monitor: unexpected error in a probe pass; it keeps running")

    def close(self) -> None:
        with self._lock:
            for track in self._tracks.values():
                track.probe.close()
            self._tracks.clear()

    def status(self) -> dict[str, dict[str, object]]:
        """What the monitor knows of each monitored connection (for operators and tests)."""
        with self._lock:
            return self._status()

    def _status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, t in self._tracks.items():
            out[name] = {
                "running": t.state.running,
                "gateway": t.key[0] if t.key else None,
                "unanswered": t.state.unanswered,
                "probes_total": t.state.probes_total,
                "replies_total": t.state.replies_total,
                "packets_in": t.state.packets_in,
                "probe": t.policy.probe,
                "stalls": t.state.stalls,
            }
        return out

    # --- one pass --------------------------------------------------------------------------

    def _run_once(self) -> None:
        with self._lock:
            now = self._clock.monotonic()
            retry_due = any(
                t.retry_open_at is not None and now >= t.retry_open_at
                for t in self._tracks.values()
            )
            if self._manager.revision != self._seen_revision or retry_due:
                self._seen_revision = self._manager.revision  # nothing changed: nothing new
                self._follow_tunnels(now)
            running = {n: t.key for n, t in self._tracks.items() if t.state.running}
            due = any(mon.look_due(t.state, now) for t in self._tracks.values())
            if not running or not due or now < self._rate_limited(now):
                return
            self._looked_at = now
        self._read_counters(running)

    def _follow_tunnels(self, now: float) -> None:
        names = set(self._manager.names())
        for gone in set(self._tracks) - names:
            self._drop(gone)
        for name in names:
            managed = self._manager.get(name)
            if managed is None:
                continue
            policy = managed.profile.policy.monitor
            track = self._tracks.get(name)
            if not policy.enabled or policy.local is None or policy.remote is None:
                if track is not None:
                    self._drop(name)
                continue
            if track is not None and track.policy != policy:  # changed by a reload
                self._drop(name)
                track = None
            if track is None:
                if policy.probe == "udp" and policy.interval * policy.misses <= _ICMP_RATE:
                    log.warning(
                        "%s: monitor: misses x interval = %.3fs; a Linux remote answers port-"
                        "unreachable about once a second (net.ipv4.icmp_ratelimit): expect "
                        "false failovers below ~%.0fs",
                        name, policy.interval * policy.misses, _ICMP_RATE,
                    )  # fmt: skip
                track = _Track(
                    policy,
                    mon.initial_state(policy.interval, policy.misses),
                    self._make_probe(policy),
                )
                self._tracks[name] = track
            s = managed.state
            key = (s.gateway, s.ike_id) if s.phase is Phase.UP and s.gateway else None
            retry = track.retry_open_at
            if key != track.key or (key is not None and retry is not None and now >= retry):
                self._retarget(name, track, key, now)

    def _retarget(self, name: str, track: _Track, key: TunnelKey | None, now: float) -> None:
        if track.state.running:
            self._feed(name, track, mon.Stop(), now)
        track.probe.close()
        track.key = key
        track.retry_open_at = None
        if key is None:
            return
        try:
            track.probe.open()
        except OSError as exc:
            # The tunnel is up but the socket cannot be made (its route not there yet?): try
            # again an interval later; the failover machine's own detection still runs.
            log.warning("%s: monitor cannot open its probe socket: %s", name, exc)
            track.retry_open_at = now + track.policy.interval
            return
        log.info(
            "%s: monitoring the tunnel via %s: probes (%s) %s -> %s every %.3fs, dead after %d",
            name, key[0], track.policy.probe, track.policy.local, _target(track.policy),
            track.policy.interval, track.policy.misses,
        )  # fmt: skip
        self._feed(name, track, mon.Start(), now)
        self.schedule_changed()

    def _drop(self, name: str) -> None:
        track = self._tracks.pop(name, None)
        if track is not None:
            track.probe.close()

    def _drain(self, name: str, track: _Track, now: float) -> None:
        try:
            answers = track.probe.poll()
        except OSError as exc:
            log.debug("%s: monitor poll: %s", name, exc)
            return
        if answers:
            self._feed(name, track, mon.ReplySeen(), now)

    def _read_counters(self, running: dict[str, TunnelKey | None]) -> None:
        """One list-sas, outside the lock (charon may take hundreds of ms); what it found is
        fed to the tunnels that are still the ones it was asked for."""
        try:
            sas: list[IkeSaInfo] | None = self._charon.list_sas()
            failure: CharonError | None = None
        except CharonError as exc:  # counters are a bonus: the probes still decide
            log.debug("monitor: list-sas failed: %s", exc)
            sas, failure = None, exc
        with self._lock:
            now = self._clock.monotonic()
            for name, key in running.items():
                track = self._tracks.get(name)
                if track is None or track.key != key or not track.state.running:
                    continue
                if sas is None:
                    self._feed(name, track, mon.InboundUnknown(), now)
                    continue
                count = _packets_in(sas, name, key)
                if count is not None:
                    self._feed(name, track, mon.InboundPackets(count), now)
        if isinstance(failure, CharonUnreachable):
            raise failure

    def _feed(self, name: str, track: _Track, event: mon.Event, now: float) -> None:
        before = track.state
        track.state, actions = mon.step(track.state, event, now)
        if track.state.stalls > before.stalls and before.last_tick is not None:
            self._log_stall(name, track, before, now)
        for action in actions:
            match action:
                case mon.SendProbe():
                    self._send(name, track, now)
                case mon.DeclareDead(silence, unanswered):
                    self._declare_dead(name, track, silence, unanswered)

    def _send(self, name: str, track: _Track, now: float) -> None:
        try:
            answers = track.probe.send()
        except OSError as exc:
            answers = 0
            log.debug("%s: monitor probe not sent: %s", name, exc)
        if answers:
            track.state, _ = mon.step(track.state, mon.ReplySeen(), now)
        track.state, _ = mon.step(track.state, mon.ProbeSent(), now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: monitor probe #%d to %s (%d unanswered)",
                name, track.state.probes_total, _target(track.policy), track.state.unanswered,
            )  # fmt: skip

    def _watch_host(self, name: str, track: _Track, now: float) -> None:
        """At the first miss, note how long charon's threads have waited for a CPU; when a
        verdict falls due, a wait of HOST_STALL intervals or more since then means the path
        through this host stalled (`HostStalled`): that window's misses do not count."""
        state = track.state
        if self._run_delay is None or state.last_life is None:
            return
        if state.unanswered == 0 or now - state.last_life < state.interval:
            track.suspect = None  # answered: nothing to suspect
            return
        if track.suspect is None:
            delay = self._run_delay()
            track.suspect = None if delay is None else (now, delay)
            return
        if not mon.verdict_due(state, now):
            return
        since, before = track.suspect
        track.suspect = None
        delay = self._run_delay()
        if delay is None:
            return
        stalled = delay - before >= HOST_STALL * state.interval
        log.debug(
            "%s: monitor: verdict due; charon waited %.3fs for a CPU in the last %.3fs (%s)",
            name, delay - before, now - since, "a stall of this host" if stalled else "on time",
        )  # fmt: skip
        if stalled:
            self._feed(name, track, mon.HostStalled(), now)

    def _log_stall(self, name: str, track: _Track, before: mon.MonitorState, now: float) -> None:
        """A window discounted (see domain/monitor.py): a warning, at most every
        STALL_LOG_EVERY seconds per connection (at 30 ms a starved host stalls often)."""
        late = mon.stall_of(before, now)
        if late is not None:
            why = f"this process ran {late:.3f}s late: the misses of that window do not count"
        elif before.unanswered == 0:
            why = "no probe out since the last sign of life: the verdict waits for one more"
        else:
            why = "charon waited for a CPU while the answers were due: those misses do not count"
        quiet = track.stall_logged_at is not None and now - track.stall_logged_at < STALL_LOG_EVERY
        level = logging.DEBUG if quiet else logging.WARNING
        if not quiet:
            track.stall_logged_at = now
        log.log(
            level, "%s: monitor: %s (interval %.3fs, %d so far)",
            name, why, track.policy.interval, track.state.stalls,
        )  # fmt: skip

    def _declare_dead(self, name: str, track: _Track, silence: float, unanswered: int) -> None:
        assert track.key is not None
        gateway = track.key[0]
        track.probe.close()

        def verdict() -> None:  # on the main loop, before anything else waiting there
            log.warning(
                "%s: monitor: no answer through %s for %.3fs (%d probes unanswered): "
                "gateway dead",
                name, gateway, silence, unanswered,
            )  # fmt: skip
            self._publisher.publish(MonitorDeadNotice(name, gateway, silence, unanswered))
            self._manager.handle(name, ev.MonitorDead(gateway, silence))

        self._post_verdict(verdict)


def _target(policy: MonitorPolicy) -> str:
    """Where the probes go: `remote:port` (UDP) or `remote` (ICMP echo)."""
    return f"{policy.remote}:{policy.port}" if policy.probe == "udp" else f"{policy.remote}"


def _look_at(state: mon.MonitorState) -> float | None:
    """When the loop side should next look at the counters for this tunnel: a little before
    each probe is due (the probe side sends on its own timer: a look at the same instant
    could come after the probe, and a flowing tunnel be probed for nothing), and while
    traffic flows every half interval."""
    before_probe = None
    if state.next_probe_at is not None:
        before_probe = state.next_probe_at - min(LOOK_LEAD, state.interval / 4)
    looks = [t for t in (before_probe, mon.next_look(state)) if t is not None]
    return min(looks) if looks else None


def _packets_in(sas: list[IkeSaInfo], name: str, key: TunnelKey | None) -> int | None:
    """Inbound packets of the current clone's CHILD_SAs (summed: a rekey may list two)."""
    if key is None:
        return None
    gateway, ike_id = key
    clone = clone_name(name, gateway)
    for sa in sas:
        if sa.name != clone or (ike_id is not None and sa.unique_id != ike_id):
            continue
        return sum(c.packets_in for c in sa.children)
    return None
