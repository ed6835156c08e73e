"""The event usecase: attributes charon's observations to managed connections and gateways.

Clone and probe names carry their connection and gateway (`home@10.99.1.2`), so an
observation about an IKE_SA is attributed by its config name alone. It keeps each
managed connection's IKE state for operators, publishes `ike-state` changes, and
turns what matters for failover into domain events for the failover manager.

It knows nothing of how a charon release words its log or which alerts it has: the vici
adapter's dialect hands it `IkeSignal`s (initiating, retransmit, gave up...) whatever the
release.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from extsock_py.domain import events as ev
from extsock_py.domain import observations as ob
from extsock_py.domain.profile import CloneName, parse_clone_name
from extsock_py.interfaces.ports import EventPublisher

log = logging.getLogger("extsock.events")


@dataclass
class IkeView:
    """What operators see of a managed connection's IKE_SA."""

    state: str = "NONE"
    gateway: str | None = None
    ike_id: int | None = None


Sink = Callable[[str, ev.Event], None]


class EventUsecase:
    """Routes observations: `sink(connection, event)` receives the domain events."""

    def __init__(
        self, is_managed: Callable[[str], bool], sink: Sink, publisher: EventPublisher
    ) -> None:
        self._is_managed = is_managed
        self._sink = sink
        self._publisher = publisher
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
            case ob.IkeUpdate(sa, _local, _remote):
                self._track(sa.name, sa.state, sa.unique_id)
            case ob.IkeSignal():
                self._signal(obs)
            case ob.Undecodable(name, reason):
                self.skipped += 1
                log.warning("skipped an undecodable %s event: %s", name, reason)
            case _:
                pass

    # --- attribution --------------------------------------------------------------------

    def _owner(self, ike_name: str | None) -> CloneName | None:
        if not ike_name:
            return None
        parsed = parse_clone_name(ike_name)
        if parsed is None or not self._is_managed(parsed.connection):
            return None
        return parsed

    def _send(self, owner: CloneName, event: ev.Event) -> None:
        self._sink(owner.connection, event)

    def _track(self, ike_name: str, state: str, ike_id: int | None) -> None:
        owner = self._owner(ike_name)
        if owner is None or owner.probe:
            return
        view = self.ike.setdefault(owner.connection, IkeView())
        if view.gateway not in (None, owner.gateway) and state in ("DELETING", "DESTROYING"):
            return  # the old SA of a make-before-break switch going away
        old = view.state
        view.state, view.gateway, view.ike_id = state, owner.gateway, ike_id
        if old != state:
            self._publisher.publish(
                "ike-state",
                {
                    "connection": owner.connection,
                    "gateway": owner.gateway,
                    "old": old,
                    "new": state,
                    "ike_id": ike_id,
                },
            )

    # --- events -------------------------------------------------------------------------

    def _ike_updown(self, sa: ob.IkeSaInfo, up: bool) -> None:
        owner = self._owner(sa.name)
        if owner is None:
            return
        if owner.probe:
            self._send(
                owner,
                ev.ProbeUp(owner.gateway, sa.unique_id)
                if up
                else ev.ProbeFailed(owner.gateway, sa.unique_id),
            )
            return
        self._track(sa.name, sa.state if up else "DESTROYING", sa.unique_id)
        if not up:
            self._send(owner, ev.TunnelDown(owner.gateway, sa.unique_id, "ike-down"))

    def _child_updown(self, sa: ob.IkeSaInfo, child: ob.ChildSaInfo, up: bool) -> None:
        owner = self._owner(sa.name)
        if owner is None or owner.probe:
            return
        self._track(sa.name, sa.state, sa.unique_id)
        if up:
            self._send(owner, ev.TunnelUp(owner.gateway, sa.unique_id))
        elif sa.state not in ("DELETING", "DESTROYING"):
            # The IKE_SA lives on without its CHILD_SA: the tunnel is down all the same.
            self._send(owner, ev.TunnelDown(owner.gateway, sa.unique_id, "child-down"))

    def _rekey(self, old: ob.IkeSaInfo, new: ob.IkeSaInfo) -> None:
        owner = self._owner(new.name)
        if owner is None or owner.probe:
            return
        self._track(new.name, new.state, new.unique_id)
        self._send(owner, ev.IkeRekeyed(owner.gateway, old.unique_id, new.unique_id))

    def _signal(self, sig: ob.IkeSignal) -> None:
        owner = self._owner(sig.ike_name)
        if owner is None:
            return
        gateway, ike_id, kind = owner.gateway, sig.ike_id, sig.signal
        if owner.probe:
            # A probe's SA is never an IkeConnecting; anything that says its peer is silent,
            # refusing or out of reach fails the probe.
            if kind in _PROBE_FAILS:
                self._send(owner, ev.ProbeFailed(gateway, ike_id))
            return
        match kind:
            case ob.Signal.INITIATING:
                self._track(sig.ike_name, "CONNECTING", ike_id)
                self._send(owner, ev.IkeConnecting(gateway, ike_id))
            case ob.Signal.NO_ROUTE:
                self._send(owner, ev.TunnelDown(gateway, ike_id, "no-route"))
            case ob.Signal.RETRANSMIT:
                self._send(owner, ev.RetransmitSeen(gateway, ike_id))
            case ob.Signal.ANSWERED:
                self._send(owner, ev.PeerAnswered(gateway, ike_id))
            case ob.Signal.GAVE_UP | ob.Signal.REFUSED:
                self._send(owner, ev.InitiateFailed(gateway, sig.detail, ike_id))
            case ob.Signal.EXPIRED:
                # The hard lifetime ended: charon deletes the SA (its ike-updown follows).
                self._send(owner, ev.TunnelDown(gateway, ike_id, "expired"))


_PROBE_FAILS = frozenset(
    {ob.Signal.RETRANSMIT, ob.Signal.GAVE_UP, ob.Signal.REFUSED, ob.Signal.NO_ROUTE}
)
