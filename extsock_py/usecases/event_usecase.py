"""The event usecase: attributes charon's observations to managed connections and gateways.

Clone and probe names carry their connection and gateway (`home@10.99.1.2`). A CHILD_SA
belongs to the connection that has a child of that name and waits for a tunnel through that
gateway, whatever IKE_SA carries it (charon puts a second connection's CHILD_SA into the
first's IKE_SA when their configs are equal but for the children). News about an IKE_SA
goes to the connection it is named after and to every connection with a CHILD_SA in it.
It keeps charon's SAs in a `SaTable`, publishes each IKE_SA's `ike-state` transitions,
and turns what matters for failover into domain events for the failover manager.

It knows nothing of how a charon release words its log or which alerts it has: the vici
adapter's dialect hands it `IkeSignal`s (initiating, retransmit, gave up...) whatever the
release.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from extsock_py.domain import events as ev
from extsock_py.domain import observations as ob
from extsock_py.domain.notices import IkeStateNotice
from extsock_py.domain.profile import CloneName, parse_clone_name
from extsock_py.domain.sas import DESTROYING, IkeTransition, SaTable
from extsock_py.interfaces.ports import EventPublisher

log = logging.getLogger("extsock.events")


@dataclass
class IkeView:
    """What operators see of a managed connection's IKE_SA."""

    state: str = "NONE"
    gateway: str | None = None
    ike_id: int | None = None


Sink = Callable[[str, ev.Event], None]


class Connections(Protocol):
    """What the usecase needs to know of the managed connections (read only)."""

    def is_managed(self, name: str) -> bool: ...

    def children(self, name: str) -> tuple[str, ...]: ...

    def expects(self, name: str, gateway: str) -> bool: ...

    def ike_id_of(self, name: str) -> int | None: ...

    def gateways(self, name: str) -> tuple[str, ...]:
        """The gateways `name` lists (its DNS names resolved as last tried)."""
        ...

    def standby_gateway(self, name: str) -> str | None:
        """Where `name`'s hot standby stands (its IKE_SA is not the tunnel's), or None."""
        ...

    def names(self) -> list[str]: ...


class _ByName:
    """Connections known by `is_managed` alone: no child names, no expectations."""

    def __init__(self, is_managed: Callable[[str], bool]) -> None:
        self.is_managed = is_managed

    def children(self, name: str) -> tuple[str, ...]:
        return ()

    def expects(self, name: str, gateway: str) -> bool:
        return False

    def ike_id_of(self, name: str) -> int | None:
        return None

    def gateways(self, name: str) -> tuple[str, ...]:
        return ()

    def standby_gateway(self, name: str) -> str | None:
        return None

    def names(self) -> list[str]:
        return []


class EventUsecase:
    """Routes observations: `sink(connection, event)` receives the domain events."""

    def __init__(
        self,
        is_managed: Callable[[str], bool],
        sink: Sink,
        publisher: EventPublisher,
        connections: Connections | None = None,
        sas: SaTable | None = None,
    ) -> None:
        self._conns: Connections = connections if connections is not None else _ByName(is_managed)
        self._is_managed = is_managed
        self._sink = sink
        self._publisher = publisher
        self.sas = sas if sas is not None else SaTable()
        self.ike: dict[str, IkeView] = {}
        self.processed = 0
        self.skipped = 0

    @staticmethod
    def wants(obs: ob.Observation) -> bool:
        """False for what cannot matter: raw log lines and alerts (the dialect turns those
        that matter into IkeSignals), signals about SAs that are neither clones nor probes.
        The listener thread drops these before they are queued, so the main loop does not
        wake for them. Safe to call from any thread."""
        if isinstance(obs, ob.LogLine | ob.Alert):
            return False
        if isinstance(obs, ob.IkeSignal):
            return "@" in obs.ike_name  # only clones and probes matter
        return True

    def observe(self, obs: ob.Observation) -> None:
        self.processed += 1
        match obs:
            case ob.IkeUpdown(sa, up):
                self._ike_updown(sa, up)
            case ob.ChildUpdown(sa, child, up):
                self._child_updown(sa, child, up)
            case ob.IkeRekey(old, new):
                self._rekey(old, new)
            case ob.ChildRekey(sa, old, new):
                self._child_rekey(sa, old, new)
            case ob.IkeUpdate(sa, _local, remote):
                self._state(
                    sa.unique_id, sa.name, sa.state, remote or sa.remote_host, sa.local_vips
                )
            case ob.IkeSignal():
                self._signal(obs)
            case ob.Undecodable(name, reason):
                self.skipped += 1
                log.warning("skipped an undecodable %s event: %s", name, reason)
            case _:
                pass

    def sync(self, sas: list[ob.IkeSaInfo]) -> None:
        """list-sas answered: learn what events did not tell, forget what is gone."""
        for sa in sas:
            self._state(sa.unique_id, sa.name, sa.state, sa.remote_host, sa.local_vips)
            # CHILD_SAs charon no longer lists went without a word (a lost child-updown or
            # child-rekey): a child-only terminate must not name them.
            self.sas.keep_children(sa.unique_id, {child.unique_id for child in sa.children})
            self._children(sa)
        self._publish(self.sas.sync({sa.unique_id for sa in sas}))

    def charon_restarted(self) -> None:
        """charon came back after being away: the SAs it had are gone (their ike-state ends
        with DESTROYING) and their unique ids will be charon's new IKE_SAs'."""
        self._publish(self.sas.restarted())

    def _children(self, sa: ob.IkeSaInfo) -> None:
        for child in sa.children:
            if child.state == "INSTALLED" and (
                self.sas.owner_of_child(sa.unique_id, child.unique_id) is None
            ):
                owner = self._child_owner(sa.name, sa.unique_id, child.name)
                self.sas.child_up(sa.unique_id, child.unique_id, child.name, owner)

    # --- attribution --------------------------------------------------------------------

    def _owner(self, ike_name: str | None) -> CloneName | None:
        if not ike_name:
            return None
        parsed = parse_clone_name(ike_name)
        if parsed is None or not self._is_managed(parsed.connection):
            return None
        return parsed

    def _child_owner(self, ike_name: str, ike_id: int, child_name: str) -> str | None:
        """The managed connection a CHILD_SA named `child_name` in IKE_SA `ike_name` is of:
        one that waits for a tunnel through that gateway, has a child of that name and none
        in this IKE_SA yet (the IKE_SA's own connection first), else one whose tunnel rides
        in this IKE_SA, else the IKE_SA's own when it has a child of that name, else one
        that has and lists that gateway, else the IKE_SA's own."""
        owner = self._owner(ike_name)
        if owner is None or owner.probe:
            return None
        names = self._conns.names()
        if not names:  # connections known by name alone
            return owner.connection
        has_one = set(self.sas.connections_on(ike_id))

        def waits(name: str) -> bool:
            return (
                child_name in self._conns.children(name)
                and self._conns.expects(name, owner.gateway)
                and name not in has_one
            )

        # The IKE_SA's own connection first, without a look at the others: in a storm of a
        # thousand CHILD_SAs up, a scan of every connection per CHILD_SA is the loop's work.
        if waits(owner.connection):
            return owner.connection
        waiting = [name for name in names if waits(name)]
        if waiting:
            return waiting[0]
        # Already up on this IKE_SA (adopted at start, a list-sas after a lost event).
        riding = [
            name
            for name in names
            if child_name in self._conns.children(name) and self._conns.ike_id_of(name) == ike_id
        ]
        if riding and owner.connection not in riding:
            return riding[0]
        if child_name in self._conns.children(owner.connection):
            return owner.connection
        # Not the IKE_SA's own connection's child (it has none of that name): a connection
        # with such a child that lists this gateway and whose tunnel is elsewhere, e.g. a
        # stray CHILD_SA the adoption ends. Its end must not read as the end of the IKE_SA's
        # own connection's tunnel.
        named = [
            name
            for name in names
            if child_name in self._conns.children(name)
            and owner.gateway in self._conns.gateways(name)
        ]
        return named[0] if named else owner.connection

    def _related(self, owner: CloneName, ike_id: int | None) -> list[str]:
        """The connections news about IKE_SA `ike_id` (named after `owner`) concerns."""
        related = [] if owner.probe else [owner.connection]
        if ike_id is not None:
            related += [c for c in self.sas.connections_on(ike_id) if c not in related]
        return related

    def _fan_out(self, owner: CloneName, ike_id: int | None, event: ev.Event) -> None:
        for connection in self._related(owner, ike_id):
            self._sink(connection, event)

    # --- the IKE state stream -----------------------------------------------------------

    def track(self, sa: ob.IkeSaInfo) -> None:
        """Take an SA's state and CHILD_SAs as listed by charon (a tunnel adopted at start)."""
        self._state(sa.unique_id, sa.name, sa.state, sa.remote_host, sa.local_vips)
        self._children(sa)

    def _state(
        self,
        ike_id: int,
        name: str,
        state: str,
        remote: str | None,
        vips: tuple[str, ...] = (),
    ) -> None:
        owner = self._owner(name)
        if owner is None or owner.probe:
            return
        self._publish(self.sas.ike_state(ike_id, name, state, remote, vips))

    def _gone(self, ike_id: int, name: str, remote: str | None = None) -> None:
        owner = self._owner(name)
        if owner is None or owner.probe:
            return
        self._publish(self.sas.ike_gone(ike_id, name, remote))

    def _publish(self, transitions: list[IkeTransition]) -> None:
        for t in transitions:
            owner = parse_clone_name(t.name)
            connection = owner.connection if owner is not None else t.name
            gateway = t.remote or (owner.gateway if owner is not None else None)
            for related in dict.fromkeys((connection, *t.connections)):
                if not self._is_managed(related):
                    continue
                if (
                    owner is not None
                    and related == owner.connection
                    and (self._conns.standby_gateway(related) == owner.gateway)
                ):
                    continue  # its hot standby's IKE_SA: published, but not the tunnel's
                view = self.ike.setdefault(related, IkeView())
                if t.new in ("DELETING", DESTROYING) and view.ike_id not in (None, t.ike_id):
                    continue  # an SA it left (a switch, a redirect) going away
                view.state, view.gateway, view.ike_id = t.new, gateway, t.ike_id
            self._publisher.publish(
                IkeStateNotice(
                    connection=connection,
                    connections=tuple(t.connections),
                    ike=t.name,
                    gateway=gateway,
                    old=t.old,
                    new=t.new,
                    ike_id=t.ike_id,
                    virtual_ips=tuple(t.vips),
                )
            )

    # --- events -------------------------------------------------------------------------

    def _ike_updown(self, sa: ob.IkeSaInfo, up: bool) -> None:
        owner = self._owner(sa.name)
        if owner is None:
            return
        if owner.probe:
            self._send_probe(owner, up, sa.unique_id)
            return
        if up:
            self._state(sa.unique_id, sa.name, sa.state, sa.remote_host, sa.local_vips)
            self._sink(owner.connection, ev.IkeUp(owner.gateway, sa.unique_id))
            return
        related = self._related(owner, sa.unique_id)
        self._state(sa.unique_id, sa.name, sa.state, sa.remote_host, sa.local_vips)
        self._gone(sa.unique_id, sa.name, sa.remote_host)
        for connection in related:
            self._sink(connection, ev.TunnelDown(owner.gateway, sa.unique_id, "ike-down"))

    def _send_probe(self, owner: CloneName, up: bool, ike_id: int) -> None:
        self._sink(
            owner.connection,
            ev.ProbeUp(owner.gateway, ike_id) if up else ev.ProbeFailed(owner.gateway, ike_id),
        )

    def _child_updown(self, sa: ob.IkeSaInfo, child: ob.ChildSaInfo, up: bool) -> None:
        owner = self._owner(sa.name)
        if owner is None or owner.probe:
            return
        self._state(sa.unique_id, sa.name, sa.state, sa.remote_host, sa.local_vips)
        if up:
            connection = self._child_owner(sa.name, sa.unique_id, child.name)
            self.sas.child_up(sa.unique_id, child.unique_id, child.name, connection)
            if connection is not None:
                view = self.ike.get(connection)
                if view is not None and view.ike_id not in (None, sa.unique_id):
                    # The tunnel came up in an IKE_SA established before (a hot standby's):
                    # no state change announced it, the CHILD_SA does.
                    view.state, view.ike_id = sa.state, sa.unique_id
                    view.gateway = sa.remote_host or owner.gateway
                installed = ev.TunnelUp(owner.gateway, sa.unique_id, sa.remote_host)
                self._sink(connection, installed)
            return
        connection = self.sas.owner_of_child(sa.unique_id, child.unique_id)
        if connection is None and not self._conns.names():
            connection = owner.connection
        self.sas.child_down(sa.unique_id, child.unique_id)
        if connection is not None and sa.state not in ("DELETING", DESTROYING):
            # The IKE_SA lives on without this CHILD_SA: that tunnel is down all the same.
            self._sink(connection, ev.TunnelDown(owner.gateway, sa.unique_id, "child-down"))

    def _rekey(self, old: ob.IkeSaInfo, new: ob.IkeSaInfo) -> None:
        owner = self._owner(new.name)
        if owner is None or owner.probe:
            return
        related = self._related(owner, old.unique_id)
        self._state(old.unique_id, old.name, old.state, old.remote_host, old.local_vips)
        self._state(new.unique_id, new.name, new.state, new.remote_host, new.local_vips)
        self.sas.move_children(old.unique_id, new.unique_id)
        self._gone(old.unique_id, old.name)  # a rekeyed IKE_SA is always deleted
        for connection in related:
            self._sink(connection, ev.IkeRekeyed(owner.gateway, old.unique_id, new.unique_id))

    def _child_rekey(self, sa: ob.IkeSaInfo, old: ob.ChildSaInfo, new: ob.ChildSaInfo) -> None:
        """A CHILD_SA rekeyed: the connection's tunnel goes on under the new CHILD_SA's id
        (what a child-only terminate and a later child-updown name). One never heard of
        is left to the next list-sas, which attributes what it finds installed."""
        owner = self._owner(sa.name)
        if owner is None or owner.probe:
            return
        self._state(sa.unique_id, sa.name, sa.state, sa.remote_host, sa.local_vips)
        self.sas.rekey_child(sa.unique_id, old.unique_id, new.unique_id, new.name)

    def _signal(self, sig: ob.IkeSignal) -> None:
        owner = self._owner(sig.ike_name)
        if owner is None:
            return
        gateway, ike_id, kind = owner.gateway, sig.ike_id, sig.signal
        if owner.probe:
            # A probe's SA is never an IkeConnecting; anything that says its peer is silent,
            # refusing, out of reach or elsewhere fails the probe.
            if kind in _PROBE_FAILS:
                self._sink(owner.connection, ev.ProbeFailed(gateway, ike_id))
            return
        match kind:
            case ob.Signal.INITIATING:
                self._state(ike_id, sig.ike_name, "CONNECTING", None)
                self._sink(owner.connection, ev.IkeConnecting(gateway, ike_id))
            case ob.Signal.NO_ROUTE:
                self._fan_out(owner, ike_id, ev.TunnelDown(gateway, ike_id, "no-route"))
            case ob.Signal.RETRANSMIT:
                self._fan_out(owner, ike_id, ev.RetransmitSeen(gateway, ike_id))
            case ob.Signal.ANSWERED:
                self._fan_out(owner, ike_id, ev.PeerAnswered(gateway, ike_id))
            case ob.Signal.GAVE_UP | ob.Signal.REFUSED:
                self._fan_out(owner, ike_id, ev.InitiateFailed(gateway, sig.detail, ike_id))
                known = self.sas.get(ike_id)
                if kind is ob.Signal.GAVE_UP and (known is None or known.state == "CONNECTING"):
                    # A connect abandoned: charon destroys it without any ike-updown.
                    self._gone(ike_id, sig.ike_name)
            case ob.Signal.EXPIRED:
                # The hard lifetime ended: charon deletes the SA (its ike-updown follows).
                self._fan_out(owner, ike_id, ev.TunnelDown(gateway, ike_id, "expired"))
            case ob.Signal.REDIRECTED if sig.target:
                self._fan_out(owner, ike_id, ev.Redirected(gateway, ike_id, sig.target))
            case ob.Signal.REDIRECT_REFUSED:
                self._fan_out(owner, ike_id, ev.RedirectRefused(gateway, ike_id))
            case ob.Signal.DESTROYED:
                self._gone(ike_id, sig.ike_name)


_PROBE_FAILS = frozenset(
    {
        ob.Signal.RETRANSMIT,
        ob.Signal.GAVE_UP,
        ob.Signal.REFUSED,
        ob.Signal.NO_ROUTE,
        ob.Signal.REDIRECTED,
    }
)
