"""The failover manager: runs each managed connection's state machine and carries out its actions.

It is the only place that turns the machine's actions into charon commands. A command
that fails is fed back to the machine as an event (an `initiate` charon refuses is an
`InitiateFailed`), so the machine stays the single decision-maker.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import fields, is_dataclass
from typing import Any

from extsock_py.domain import events as ev
from extsock_py.domain.actions import (
    Action,
    Initiate,
    LoadClone,
    Notify,
    StartProbe,
    StartStandby,
    StopProbe,
    StopStandby,
    Terminate,
    UnloadClone,
)
from extsock_py.domain.failover import ConnState, Phase, initial_state, step, wake_at
from extsock_py.domain.gateways import expand, is_name
from extsock_py.domain.notices import ConnectionNotice, NoticeKind
from extsock_py.domain.persisted import SavedConnection
from extsock_py.domain.profile import ConnectionProfile, clone_name
from extsock_py.domain.reports import ConnectionStatus, HistoryRecord
from extsock_py.domain.sas import SaTable
from extsock_py.interfaces.ports import (
    CharonPort,
    Clock,
    CommandLanes,
    EventPublisher,
    Resolver,
    StateStore,
)
from extsock_py.usecases import charon_commands as cmd

log = logging.getLogger("extsock.failover")

# Events after which the machine may start an attempt: DNS names are resolved again first.
_RESOLVE_ON = (
    ev.Start,
    ev.Retry,
    ev.Switch,
    ev.Release,
    ev.Tick,
    ev.TunnelDown,
    ev.InitiateFailed,
    ev.RetransmitSeen,
    ev.MonitorDead,
)
# Events that one event may cause through failed commands, handled in the same call.
_MAX_CASCADE = 64
_HISTORY_KINDS = frozenset(
    {NoticeKind.FAILOVER, NoticeKind.GAVE_UP, NoticeKind.SWITCH_FAILED, NoticeKind.REDIRECTED}
)


class Managed:
    """A managed connection; a new state or profile tells the manager (deadlines may move).

    Its state is the machine's: only the manager writes it (`_set_state`), with what `step`
    returned; everything else reads it."""

    __slots__ = ("_on_change", "_profile", "_state")

    def __init__(
        self,
        profile: ConnectionProfile,
        state: ConnState,
        on_change: Callable[[ConnState | None, ConnState | None], None] | None = None,
    ) -> None:
        """`on_change(old, new)` after a new state; `on_change(None, None)` after a new
        profile."""
        self._profile = profile
        self._state = state
        self._on_change = on_change

    @property
    def profile(self) -> ConnectionProfile:
        return self._profile

    @profile.setter
    def profile(self, value: ConnectionProfile) -> None:
        if value is not self._profile:
            self._profile = value
            if self._on_change is not None:
                self._on_change(None, None)

    @property
    def state(self) -> ConnState:
        return self._state

    def _set_state(self, value: ConnState) -> None:
        if value is not self._state:
            old, self._state = self._state, value
            if self._on_change is not None:
                self._on_change(old, value)


class FailoverManager:
    """Owns the managed connections' states; every change goes through `handle`."""

    def __init__(
        self,
        charon: CharonPort,
        clock: Clock,
        publisher: EventPublisher,
        store: StateStore | None = None,
        sas: SaTable | None = None,
        resolver: Resolver | None = None,
        lanes: CommandLanes | None = None,
    ) -> None:
        self._charon = charon
        # Where connections' commands run: charon's main session, in the loop (None), or
        # a few sessions of their own, so a storm's attempts reach charon side by side.
        self._lanes = lanes
        self._resolver = resolver
        # charon's SAs as the event usecase learns them (read here, written there).
        self.sas = sas if sas is not None else SaTable()
        self._clock = clock
        self._publisher = publisher
        self._store = store
        self._conns: dict[str, Managed] = {}
        # The gateway each connection was last up on as the last run persisted it: a tunnel
        # adopted on another one failed over while extsock was away.
        self._last_up: dict[str, str] = {}
        self._saved: dict[str, SavedConnection] = {}  # what _persist wrote last, per name
        # Bumped on every state or membership change: lets the loop and the tunnel monitor
        # skip work when nothing changed (an idle daemon with many tunnels sees many events
        # that change nothing).
        self.revision = 0
        self._wake: float | None = None
        self._wake_stale = False
        self.observers: list[Callable[[str, Action], None]] = []

    # --- the set of managed connections -------------------------------------------------

    def names(self) -> list[str]:
        return list(self._conns)

    def get(self, name: str) -> Managed | None:
        return self._conns.get(name)

    def is_managed(self, name: str) -> bool:
        return name in self._conns

    def children(self, name: str) -> tuple[str, ...]:
        """The CHILD_SA names of managed connection `name` (none when not managed)."""
        managed = self._conns.get(name)
        return managed.profile.children if managed is not None else ()

    def ike_id_of(self, name: str) -> int | None:
        """The IKE_SA carrying `name`'s tunnel, as its machine knows it."""
        managed = self._conns.get(name)
        return managed.state.ike_id if managed is not None else None

    def gateways(self, name: str) -> tuple[str, ...]:
        """The gateways `name` lists: as configured, and as last resolved (none when not
        managed)."""
        managed = self._conns.get(name)
        if managed is None:
            return ()
        return tuple(dict.fromkeys((*managed.profile.gateways, *managed.state.gateways)))

    def standby_gateway(self, name: str) -> str | None:
        """Where `name`'s hot standby stands, as its machine knows it."""
        managed = self._conns.get(name)
        hot = managed.state.hot_standby if managed is not None else None
        return hot.gateway if hot is not None else None

    def expects(self, name: str, gateway: str) -> bool:
        """True when `name` waits for a CHILD_SA through its clone towards `gateway`
        (connecting, switching there, or following a redirect)."""
        managed = self._conns.get(name)
        if managed is None:
            return False
        s = managed.state
        if s.switch is not None and s.switch.gateway == gateway:
            return True
        if s.gateway != gateway:
            return False
        following = s.redirects.pending is not None
        return s.phase is Phase.CONNECTING or (s.phase is Phase.UP and following)

    def manage(self, profile: ConnectionProfile) -> bool:
        """Add or update a connection; True when it is new and must be started."""
        current = self._conns.get(profile.name)
        if current is None:
            state = initial_state(profile.name, self._gateways(profile), profile.policy)
            self._conns[profile.name] = Managed(profile, state, self._changed)
            self._changed()
            return True
        if current.profile.gateways == profile.gateways:
            if current.profile.policy != profile.policy:
                log.info(
                    "%s: policy changed: %s",
                    profile.name,
                    ", ".join(_policy_diff(current.profile.policy, profile.policy)),
                )
            current.profile = profile
            self._apply(current, ev.PolicyChanged(profile.policy))
            return False
        # The gateway list changed: bring the connection down and start over on the new list.
        self.handle(profile.name, ev.Stop())
        state = initial_state(profile.name, self._gateways(profile), profile.policy)
        self._conns[profile.name] = Managed(profile, state, self._changed)
        self._changed()
        return True

    def restore_persisted(self, names: Iterable[str]) -> list[str]:
        """Bring back what the last run persisted for `names` (still IDLE): the operator's
        hold and the failure count. Which gateway is up is charon's to say (resync adopts
        it); the failover history stays in the store. Returns the names restored."""
        if self._store is None:
            return []
        saved = self._store.load_connections()
        restored = []
        for name in names:
            stored, managed = saved.get(name), self._conns.get(name)
            if stored is None or stored == SavedConnection() or managed is None:
                continue
            if managed.state.phase is not Phase.IDLE:
                continue
            total = stored.failures_total
            if total is None or total < 0:
                total = managed.state.kept.failures_total
            self._apply(managed, ev.Restored(held=stored.held is True, failures_total=total))
            last_up = stored.last_up
            if last_up is None and stored.phase == str(Phase.UP):
                last_up = stored.gateway
            if last_up is not None:
                self._last_up[name] = last_up
            restored.append(name)
            log.info(
                "%s: last run left it %s on %s%s, %d failures so far",
                name,
                stored.phase,
                stored.gateway,
                ", held" if managed.state.kept.held else "",
                total,
            )
        return restored

    def charon_restarted(self) -> None:
        """charon came back after being away, without any of its SAs: every machine starts
        over (holds and failure counts survive); resync then adopts or starts each one."""
        for managed in self._conns.values():
            self._apply(managed, ev.CharonRestarted(managed.profile.gateways))

    def _apply(self, managed: Managed, event: ev.Event) -> None:
        """Feed the machine an event that only updates its records (a restart, a reload,
        a restore): it asks for no action, and nothing is persisted for it."""
        state, actions = step(managed.state, event, self._clock.monotonic())
        if actions:  # a fault of the machine: never drop what it decided silently
            raise RuntimeError(f"{managed.profile.name}: {event} asked for {actions}")
        managed._set_state(state)

    def note_adopted(self, name: str, gateway: str) -> None:
        """A tunnel of `name` was found up on `gateway` at start: if the last run had it up
        on another gateway, charon moved it while extsock was away (a failover extsock began
        and charon finished, or one made by hand): it goes into the history as such."""
        before = self._last_up.get(name)
        if before is None or before == gateway:
            return
        log.info("%s: found up on %s, was up on %s before: moved while away", name, gateway, before)
        self._publisher.publish(
            ConnectionNotice(NoticeKind.FAILOVER, name, gateway, before, reason="while-away")
        )
        if self._store is not None:
            self._store.append_history(
                HistoryRecord(
                    time=self._clock.wall(),
                    connection=name,
                    from_gateway=before,
                    to_gateway=gateway,
                    reason="while-away",
                    result="up",
                )
            )

    def forget(self, name: str) -> None:
        """Stop managing `name`: its tunnel goes down and its clone is unloaded."""
        if name in self._conns:
            self.handle(name, ev.Stop())
            del self._conns[name]
            self._saved.pop(name, None)
            self._changed()

    def _changed(self, old: ConnState | None = None, new: ConnState | None = None) -> None:
        """A connection's state changed from `old` to `new` (both None: the set of
        connections or a profile changed, the earliest deadline is counted again)."""
        self.revision += 1
        if old is None or new is None or self._wake_stale:
            self._wake_stale = True
            return
        self._follow_wake(wake_at(old), wake_at(new))

    def _follow_wake(self, before: float | None, after: float | None) -> None:
        """Keep the earliest deadline current when one connection's moved from `before` to
        `after`, in O(1). Counted again over every connection (next_wake) only when the one
        that may have held it moved it later or dropped it: in a storm of a thousand
        failovers, a recount on every change cost seconds of the main loop's CPU."""
        if before == after:
            return
        current = self._wake
        if after is not None and (current is None or after <= current):
            self._wake = after
        elif before is not None and (current is None or before <= current):
            self._wake_stale = True

    # --- events -------------------------------------------------------------------------

    def handle(self, name: str, event: ev.Event) -> None:
        """Feed one event to `name`'s machine and carry out what it decides."""
        pending: deque[tuple[str, ev.Event]] = deque([(name, event)])
        handled = 0
        while pending and handled < _MAX_CASCADE:
            conn, current = pending.popleft()
            handled += 1
            managed = self._conns.get(conn)
            if managed is None:
                continue
            now = self._clock.monotonic()
            if isinstance(current, _RESOLVE_ON):
                self._resolve(managed, now)
            before = managed.state
            after, actions = step(before, current, now)
            managed._set_state(after)
            if before.phase is not managed.state.phase or actions:
                log.debug("%s: %s -> %s on %s", conn, before.phase, managed.state.phase, current)
            todo = deque(actions)
            while todo:
                action = todo.popleft()
                # The machine always asks for a clone's load right before its initiate: the
                # two go as one exchange, and a failed load means no initiate.
                if isinstance(action, LoadClone) and todo and todo[0] == Initiate(action.gateway):
                    todo.popleft()
                    failures = self._load_and_initiate(managed, action.gateway)
                else:
                    failures = self._execute(managed, action)
                pending.extend((conn, e) for e in failures)
            if managed.state != before:
                self._persist(managed)
        if pending:
            log.error("%s: stopped a cascade of %d events", name, _MAX_CASCADE)

    def resolve_name(self, name: str) -> tuple[str, ...]:
        """The addresses DNS name `name` has now (none without a resolver)."""
        return self._resolver.resolve(name) if self._resolver is not None else ()

    def _gateways(self, profile: ConnectionProfile) -> tuple[str, ...]:
        """The gateways to try: the list with its DNS names resolved now."""
        names = [g for g in profile.gateways if is_name(g)]
        if not names or self._resolver is None:
            return profile.gateways
        return expand(profile.gateways, {n: self._resolver.resolve(n) for n in names})

    def _resolve(self, managed: Managed, now: float) -> None:
        gateways = self._gateways(managed.profile)
        if gateways != managed.state.gateways:
            log.info("%s: gateways now %s", managed.profile.name, ", ".join(gateways))
            managed._set_state(step(managed.state, ev.GatewaysResolved(gateways), now)[0])

    def tick(self) -> None:
        """Deliver a Tick to every connection whose deadline has come."""
        now = self._clock.monotonic()
        earliest = self.next_wake()
        if earliest is None or earliest > now:
            return  # the common case, in O(1)
        for name, managed in list(self._conns.items()):
            due = wake_at(managed.state)
            if due is not None and due <= now:
                self.handle(name, ev.Tick())

    def next_wake(self) -> float | None:
        """The earliest deadline of all connections; recomputed only after a change."""
        if self._wake_stale:
            times = [wake_at(m.state) for m in self._conns.values()]
            pending = [t for t in times if t is not None]
            self._wake = min(pending) if pending else None
            self._wake_stale = False
        return self._wake

    def start_all(self, names: Iterable[str] | None = None) -> None:
        for name in list(names if names is not None else self._conns):
            self.handle(name, ev.Start())

    # --- actions ------------------------------------------------------------------------

    def _execute(self, managed: Managed, action: Action) -> list[ev.Event]:
        """Carry out one action; return the events its failure means to the machine (none
        when it runs on a lane: they come back later, through the loop, to `_outcome`)."""
        profile = managed.profile
        for observer in self.observers:
            observer(profile.name, action)
        match action:
            case LoadClone(gateway):
                command = cmd.load_clone(profile, gateway)
            case UnloadClone(gateway):
                command = cmd.unload_clone(profile, gateway)
            case Initiate(gateway):
                command = cmd.initiate(profile, gateway)
            case Terminate(gateway, ike_id, child_only):
                selectors = self._terminations(profile.name, gateway, ike_id, child_only)
                command = cmd.terminate(selectors)
            case StartProbe(gateway):
                command = cmd.start_probe(profile, gateway)
            case StopProbe(gateway, ike_id):
                command = cmd.stop_probe(profile, gateway)
            case StartStandby(gateway):
                command = cmd.start_standby(profile, gateway)
            case StopStandby(gateway, ike_id, unload):
                selectors = self._standby_terminations(profile.name, gateway, ike_id)
                command = cmd.stop_standby(profile, gateway, selectors, unload)
            case Notify():
                self._notify(profile.name, action)
                return []
        return self._run(profile.name, command)

    def _load_and_initiate(self, managed: Managed, gateway: str) -> list[ev.Event]:
        """LoadClone + Initiate of one gateway as one exchange with charon (the common
        case of every attempt: one round trip instead of two)."""
        profile = managed.profile
        for observer in self.observers:
            observer(profile.name, LoadClone(gateway))
            observer(profile.name, Initiate(gateway))
        return self._run(profile.name, cmd.load_and_initiate(profile, gateway))

    def _run(self, conn: str, command: cmd.Command) -> list[ev.Event]:
        """On the main session now, or on `conn`'s lane after its earlier commands."""
        if self._lanes is None:
            return command(self._charon)
        self._lanes.submit(conn, command, lambda outcome: self._outcome(conn, outcome))
        return []

    def _outcome(self, conn: str, outcome: Future[list[ev.Event]]) -> None:
        """A lane's command is done (called on the main loop): its failure, as events."""
        for event in outcome.result():  # CharonUnreachable: the daemon's loop handles it
            self.handle(conn, event)

    def _standby_terminations(
        self, conn: str, gateway: str, ike_id: int | None
    ) -> list[cmd.Selector]:
        if ike_id is None:
            return [cmd.Selector(ike=clone_name(conn, gateway))]
        if self.sas.connections_on(ike_id):
            # Another connection's CHILD_SA came to ride in it (charon's reuse_ikesa):
            # it is that tunnel's IKE_SA now.
            return []
        return [cmd.Selector(ike_id=ike_id)]

    def _terminations(
        self, conn: str, gateway: str, ike_id: int | None, child_only: bool
    ) -> list[cmd.Selector]:
        if ike_id is None:
            name = clone_name(conn, gateway)
            named = [sa.unique_id for sa in self.sas.named(name)]
            if not any(self.sas.shared_with_others(i, conn) for i in named):
                return [cmd.Selector(ike=name)]  # every IKE_SA of the clone, known or not
            # An IKE_SA named after the clone carries another connection's tunnel (a drain
            # left it, charon's reuse_ikesa): by name it would go too. Ours, one by one.
            out: list[cmd.Selector] = []
            for i in named:
                if self.sas.shared_with_others(i, conn):
                    out += [cmd.Selector(child_id=c) for c in self.sas.children_of(i, conn)]
                else:
                    out.append(cmd.Selector(ike_id=i))
            return out
        if child_only and self.sas.shared_with_others(ike_id, conn):
            # The IKE_SA carries another connection's tunnel: end only ours in it.
            return [cmd.Selector(child_id=c) for c in self.sas.children_of(ike_id, conn)]
        return [cmd.Selector(ike_id=ike_id)]

    def _notify(self, name: str, notice: Notify) -> None:
        vips = self._vips(name) if notice.kind == NoticeKind.TUNNEL_UP else ()
        published = ConnectionNotice(
            notice.kind,
            name,
            notice.gateway,
            notice.from_gateway,
            notice.reason,
            notice.duration,
            notice.outage,
            virtual_ips=vips or None,
        )
        if notice.kind in (NoticeKind.FAILOVER, NoticeKind.FAILOVER_STARTED, NoticeKind.REDIRECTED):
            arrow = f"{notice.from_gateway} -> {notice.gateway}"
            took = f" in {notice.duration:.3f}s" if notice.duration is not None else ""
            log.info("%s: %s %s (reason %s)%s", name, notice.kind, arrow, notice.reason, took)
        else:
            log.info("%s: %s %s", name, notice.kind, notice.gateway or "")
        self._publisher.publish(published)
        if self._store is not None and notice.kind in _HISTORY_KINDS:
            self._store.append_history(
                HistoryRecord(
                    time=self._clock.wall(),
                    connection=name,
                    from_gateway=notice.from_gateway,
                    to_gateway=notice.gateway,
                    reason=notice.reason,
                    result="up"
                    if notice.kind in (NoticeKind.FAILOVER, NoticeKind.REDIRECTED)
                    else str(notice.kind),
                    duration=notice.duration,
                    outage=notice.outage,
                )
            )

    def _vips(self, name: str) -> tuple[str, ...]:
        """The virtual IPs of the IKE_SA carrying `name`'s tunnel (vips = 0.0.0.0)."""
        managed = self._conns.get(name)
        ike_id = managed.state.ike_id if managed is not None else None
        sa = self.sas.get(ike_id) if ike_id is not None else None
        return sa.vips if sa is not None else ()

    def _persist(self, managed: Managed) -> None:
        if self._store is None:
            return
        s = managed.state
        if s.phase is Phase.UP and s.gateway is not None:
            self._last_up[s.name] = s.gateway
        saved = SavedConnection(
            last_up=self._last_up.get(s.name),
            gateway=s.gateway,
            phase=str(s.phase),
            held=s.kept.held,
            failures_total=s.kept.failures_total,
            cycles_failed=s.attempt.cycles_failed,
            attempts_on_gateway=s.attempt.tries,
        )
        # Most changes of a state (an IKE_SA's id, a deadline, a retransmit counted) leave
        # what is stored as it is: no write then. The manager is the only writer of these
        # rows, so what it wrote last is what the store holds.
        if self._saved.get(s.name) == saved:
            return
        self._saved[s.name] = saved
        self._store.save_connection(s.name, saved)

    # --- views --------------------------------------------------------------------------

    def status(self, name: str | None = None) -> list[ConnectionStatus]:
        now = self._clock.monotonic()
        out = []
        for conn, managed in self._conns.items():
            if name is not None and conn != name:
                continue
            s = managed.state
            due = wake_at(s)
            out.append(
                ConnectionStatus(
                    connection=conn,
                    gateways=s.gateways,
                    active_gateway=s.peer if s.phase is Phase.UP else None,
                    target_gateway=s.gateway,
                    phase=str(s.phase),
                    ike_id=s.ike_id,
                    held=s.kept.held,
                    failures_total=s.kept.failures_total,
                    failures_in_cycle=s.attempt.failed_in_cycle,
                    cycles_failed=s.attempt.cycles_failed,
                    next_action=_next_action(s),
                    next_action_in=None if due is None else round(max(0.0, due - now), 3),
                    switch_gateway=s.switch.gateway if s.switch else None,
                    hot_standby_gateway=s.hot_standby.gateway if s.hot_standby else None,
                    hot_standby_phase=str(s.hot_standby.phase) if s.hot_standby else None,
                    draining_gateway=s.drain.gateway if s.drain else None,
                    draining_ike_id=s.drain.ike_id if s.drain else None,
                    draining_in=round(max(0.0, s.drain.until - now), 3) if s.drain else None,
                    redirected_to=s.redirects.remote,
                    virtual_ips=self._vips(conn) if s.phase is Phase.UP else (),
                )
            )
        return out


def _policy_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """`key old -> new` for each policy value that differs (nested sections dotted)."""
    out: list[str] = []
    for f in fields(old):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        if is_dataclass(before):
            out.extend(_policy_diff(before, after, f"{prefix}{f.name}."))
        else:
            out.append(f"{prefix}{f.name} {before} -> {after}")
    return out


def _next_action(s: ConnState) -> str | None:
    if s.kept.held:
        return "held by operator"
    if s.switch is not None:
        return f"switching to {s.switch.gateway} ({s.switch.reason})"
    if s.redirects.pending is not None:
        return f"following a redirect to {s.redirects.pending.target}"
    if s.failback.probe is not None:
        return f"probing {s.failback.probe.gateway}"
    if s.phase is Phase.CONNECTING:
        return f"connect timeout on {s.gateway}"
    if s.phase is Phase.BACKOFF:
        return "next cycle after backoff"
    if s.failback.next_probe_at is not None:
        return f"probe primary {s.primary}"
    if s.phase is Phase.GAVE_UP:
        return "waiting for retry or reload"
    return None
