"""The tunnel monitor: probes through each monitored connection's CHILD_SA, on the main loop.

It runs as one of the daemon's `on_iteration` callbacks, with `next_wake` among the loop's
`wakers`, so every decision is taken on the main loop and in the pure core
(`domain/monitor.py`); the sockets (`adapters/monitor_prober.py`) never block. Each
iteration it:

1. follows the failover machines: a connection whose policy enables the monitor and whose
   phase is UP gets a tunnel key (gateway, IKE_SA id); a new key is a new tunnel (socket
   opened again, counters reset: `Start`), no key stops the monitor (`Stop`);
2. drains each socket: answers become `ReplySeen`;
3. when a probe is due somewhere (or, while traffic flows, every half interval), reads the
   inbound packet counters with one `list-sas` for all connections (`InboundPackets`:
   real traffic counts as life, and postpones the probe);
4. ticks each core and carries out its actions: `SendProbe` on the socket, `DeclareDead`
   as `MonitorDead(gateway)` to the failover manager (which fails over, reason `monitor`).
"""

from __future__ import annotations

import logging
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


@dataclass
class _Track:
    policy: MonitorPolicy
    state: mon.MonitorState
    probe: ProbePort
    key: TunnelKey | None = None
    retry_open_at: float | None = None


class TunnelMonitor:
    def __init__(
        self,
        manager: FailoverManager,
        charon: CharonPort,
        clock: Clock,
        publisher: EventPublisher,
        make_probe: MakeProbe,
    ) -> None:
        self._manager = manager
        self._charon = charon
        self._clock = clock
        self._publisher = publisher
        self._make_probe = make_probe
        self._tracks: dict[str, _Track] = {}
        self._seen_revision = -1

    # --- the daemon's hooks ------------------------------------------------------------

    def next_wake(self) -> float | None:
        times = [mon.wake_at(t.state) for t in self._tracks.values()]
        times += [t.retry_open_at for t in self._tracks.values()]
        pending = [t for t in times if t is not None]
        return min(pending) if pending else None

    @property
    def running(self) -> bool:
        """Whether any connection is being probed now."""
        return any(t.state.running for t in self._tracks.values())

    def run_once(self) -> None:
        """One pass (see the module docstring); never raises into the loop."""
        try:
            self._run_once()
        except CharonUnreachable as exc:  # the daemon hears of it from its event stream too
            log.warning("tunnel monitor: charon unreachable: %s", exc)
        except Exception:
            log.exception("tunnel monitor: unexpected error; it keeps running")

    def close(self) -> None:
        for track in self._tracks.values():
            track.probe.close()
        self._tracks.clear()

    def status(self) -> dict[str, dict[str, object]]:
        """What the monitor knows of each monitored connection (for operators and tests)."""
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
        now = self._clock.monotonic()
        retry_due = any(
            t.retry_open_at is not None and now >= t.retry_open_at for t in self._tracks.values()
        )
        if self._manager.revision != self._seen_revision or retry_due:
            self._seen_revision = self._manager.revision  # nothing changed: nothing to follow
            self._follow_tunnels(now)
        running = {n: t for n, t in self._tracks.items() if t.state.running}
        if not running:
            return
        for name, track in running.items():
            self._drain(name, track, now)
        if any(mon.look_due(t.state, now) for t in running.values()):
            self._read_counters(running, now)
            # list-sas waits for charon (hundreds of ms when it is busy): the verdict and the
            # probes go by the clock after it, with what came back meanwhile.
            now = self._clock.monotonic()
            for name, track in running.items():
                self._drain(name, track, now)
        for name, track in running.items():
            self._feed(name, track, mon.Tick(), now)

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

    def _read_counters(self, running: dict[str, _Track], now: float) -> None:
        try:
            sas = self._charon.list_sas()
        except CharonError as exc:  # counters are a bonus: the probes still decide
            log.debug("monitor: list-sas failed: %s", exc)
            for name, track in running.items():
                self._feed(name, track, mon.InboundUnknown(), now)
            if isinstance(exc, CharonUnreachable):
                raise
            return
        for name, track in running.items():
            count = _packets_in(sas, name, track.key)
            if count is not None:
                self._feed(name, track, mon.InboundPackets(count), now)

    def _feed(self, name: str, track: _Track, event: mon.Event, now: float) -> None:
        before = track.state
        track.state, actions = mon.step(track.state, event, now)
        if track.state.stalls > before.stalls and before.last_tick is not None:
            log.warning(
                "%s: monitor: %s (interval %.3fs): the verdict waits for one more probe",
                name,
                "no probe out since the last sign of life" if before.unanswered == 0
                else f"this process did not run for {now - before.last_tick:.3f}s",
                track.policy.interval,
            )  # fmt: skip
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
        log.debug(
            "%s: monitor probe #%d to %s (%d unanswered)",
            name, track.state.probes_total, _target(track.policy), track.state.unanswered,
        )  # fmt: skip

    def _declare_dead(self, name: str, track: _Track, silence: float, unanswered: int) -> None:
        assert track.key is not None
        gateway = track.key[0]
        log.warning(
            "%s: monitor: no answer through %s for %.3fs (%d probes unanswered): gateway dead",
            name, gateway, silence, unanswered,
        )  # fmt: skip
        self._publisher.publish(MonitorDeadNotice(name, gateway, silence, unanswered))
        track.probe.close()
        self._manager.handle(name, ev.MonitorDead(gateway, silence))


def _target(policy: MonitorPolicy) -> str:
    """Where the probes go: `remote:port` (UDP) or `remote` (ICMP echo)."""
    return f"{policy.remote}:{policy.port}" if policy.probe == "udp" else f"{policy.remote}"


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
