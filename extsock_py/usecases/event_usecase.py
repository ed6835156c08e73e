"""The event usecase: attributes charon's observations to managed connections and gateways.

Clone and probe names carry their connection and gateway (`home@10.99.1.2`), so an
observation about an IKE_SA is attributed by its config name alone. It keeps each
managed connection's IKE state for operators, publishes `ike-state` changes, and
turns what matters for failover into domain events for the failover manager.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from extsock_py.domain import events as ev
from extsock_py.domain import observations as ob
from extsock_py.domain.profile import CloneName, parse_clone_name
from extsock_py.interfaces.ports import EventPublisher

log = logging.getLogger("extsock.events")

# charon 5.9.8's log lines that matter (src/libcharon/sa/ike_sa.c, task_manager_v2.c).
_INITIATING = re.compile(r"^initiating IKE_SA .*\[(\d+)\] to ")
# With MOBIKE, after a roam charon checks the new path with "path probing attempt N"
# instead of "retransmit N ..." (task_manager_v2.c): the peer is just as silent.
_RETRANSMIT = re.compile(
    r"^retransmit \d+ of request with message ID \d+|^path probing attempt \d+"
)
_GIVING_UP = re.compile(
    r"^giving up after \d+ (retransmits|path probings)|^establishing IKE_SA failed"
)
# With MOBIKE and no route left to the gateway (the local link towards it went down), charon
# marks the IKE_SA stale and then sends nothing at all (no DPD, no retransmit) until a route
# comes back: without this line the tunnel would look up forever.
_NO_ROUTE = re.compile(r"^no route found to reach .*MOBIKE update deferred")
_REFUSALS = (
    "AUTHENTICATION_FAILED",
    "NO_PROPOSAL_CHOSEN",
    "TS_UNACCEPTABLE",
    "INVALID_SYNTAX",
    "FAILED_CP_REQUIRED",
    "INTERNAL_ADDRESS_FAILURE",
)
_REFUSED = re.compile(rf"^received ({'|'.join(_REFUSALS)}) notify")
_MEANINGFUL_LOG = (_INITIATING, _NO_ROUTE, _RETRANSMIT, _GIVING_UP, _REFUSED)
MEANINGFUL_LOG_PREFIXES = (
    "initiating IKE_SA ",
    "no route found to reach ",
    "retransmit ",
    "path probing attempt ",
    "giving up after ",
    "establishing IKE_SA failed",
    *(f"received {refusal} notify" for refusal in _REFUSALS),
)
"""What every line of `_MEANINGFUL_LOG` starts with: the listener drops any other log line
before decoding it (`EventUsecase.wants` then decides exactly). As narrow as the patterns:
a bare "received " would let through each DPD exchange's "received packet" line."""
# strongSwan >= 6.0.3 alerts.
_ALERT_RETRANSMIT = {"retransmit-send"}
_ALERT_CLEARED = {"retransmit-send-cleared"}
_ALERT_DEAD = {"retransmit-send-timeout", "peer-init-unreachable"}


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
        """False for a log line that cannot matter (most of charon's chatter, e.g. each
        DPD exchange's five lines): the listener thread drops it before it is queued, so
        the main loop does not wake for it. Safe to call from any thread."""
        if not isinstance(obs, ob.LogLine):
            return True
        if not obs.ike_name or "@" not in obs.ike_name:  # only clones and probes matter
            return False
        return any(pattern.match(obs.message) for pattern in _MEANINGFUL_LOG)

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
            case ob.LogLine():
                self._log_line(obs)
            case ob.Alert():
                self._alert(obs)
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

    def _log_line(self, line: ob.LogLine) -> None:
        owner = self._owner(line.ike_name)
        if owner is None or line.ike_id is None:
            return
        msg = line.message
        if initiating := _INITIATING.match(msg):
            # An IKE_SA rekey logs "initiating IKE_SA name[new]" in the old SA's context:
            # that SA is up (the ike-rekey event follows), not connecting.
            rekey = int(initiating.group(1)) != line.ike_id
            if not owner.probe and not rekey:  # a probe's SA is never an IkeConnecting
                self._track(line.ike_name or "", "CONNECTING", line.ike_id)
                self._send(owner, ev.IkeConnecting(owner.gateway, line.ike_id))
        elif _NO_ROUTE.match(msg):
            if owner.probe:
                self._send(owner, ev.ProbeFailed(owner.gateway, line.ike_id))
            else:
                self._send(owner, ev.TunnelDown(owner.gateway, line.ike_id, "no-route"))
        elif _RETRANSMIT.match(msg):
            if owner.probe:
                self._send(owner, ev.ProbeFailed(owner.gateway, line.ike_id))
            else:
                self._send(owner, ev.RetransmitSeen(owner.gateway, line.ike_id))
        elif _GIVING_UP.match(msg) or _REFUSED.match(msg):
            if owner.probe:
                self._send(owner, ev.ProbeFailed(owner.gateway, line.ike_id))
            else:
                self._send(owner, ev.InitiateFailed(owner.gateway, msg, line.ike_id))

    def _alert(self, alert: ob.Alert) -> None:
        owner = self._owner(alert.ike_name)
        if owner is None or alert.ike_id is None:
            return
        if owner.probe:
            if alert.kind in _ALERT_RETRANSMIT | _ALERT_DEAD:
                self._send(owner, ev.ProbeFailed(owner.gateway, alert.ike_id))
        elif alert.kind in _ALERT_RETRANSMIT:
            self._send(owner, ev.RetransmitSeen(owner.gateway, alert.ike_id))
        elif alert.kind in _ALERT_CLEARED:
            self._send(owner, ev.PeerAnswered(owner.gateway, alert.ike_id))
        elif alert.kind in _ALERT_DEAD:
            self._send(owner, ev.InitiateFailed(owner.gateway, alert.kind, alert.ike_id))
