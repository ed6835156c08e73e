"""What charon reports, decoded from VICI but not yet attributed to a managed connection.

The vici adapter turns raw event messages into these values; the event usecase decides
which connection and gateway each concerns and what it means for failover.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class ChildSaInfo:
    name: str
    unique_id: int
    state: str  # INSTALLED, REKEYING, ...
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0


@dataclass(frozen=True)
class IkeSaInfo:
    """One IKE_SA as list-sas and the ike-* events describe it."""

    name: str  # the connection (config) name
    unique_id: int
    state: str  # CREATED, CONNECTING, ESTABLISHED, PASSIVE, REKEYING, REKEYED, DELETING, DESTROYING
    remote_host: str | None = None
    local_host: str | None = None
    children: tuple[ChildSaInfo, ...] = field(default_factory=tuple)
    local_vips: tuple[str, ...] = ()  # virtual IPs the gateway assigned (vips = 0.0.0.0)


@dataclass(frozen=True)
class IkeUpdown:
    sa: IkeSaInfo
    up: bool


@dataclass(frozen=True)
class IkeRekey:
    old: IkeSaInfo
    new: IkeSaInfo


@dataclass(frozen=True)
class IkeUpdate:
    sa: IkeSaInfo
    local_host: str | None
    remote_host: str | None


@dataclass(frozen=True)
class ChildUpdown:
    sa: IkeSaInfo  # the IKE_SA, with the child concerned in `children`
    child: ChildSaInfo
    up: bool


@dataclass(frozen=True)
class ChildRekey:
    """A CHILD_SA of the IKE_SA `sa` was rekeyed: `new` replaces `old` (charon raises no
    child-updown for either)."""

    sa: IkeSaInfo
    old: ChildSaInfo
    new: ChildSaInfo


@dataclass(frozen=True)
class LogLine:
    """A `log` event; `ike_name`/`ike_id` are set when charon logged in an IKE_SA's context."""

    group: str
    level: int
    message: str
    ike_name: str | None = None
    ike_id: int | None = None
    thread: int | None = None


@dataclass(frozen=True)
class Alert:
    """An `alert` event (strongSwan >= 6.0.3): retransmit-send, peer-init-unreachable, ..."""

    kind: str
    ike_name: str | None = None
    ike_id: int | None = None
    message: str = ""


class Signal(Enum):
    """What charon did to one IKE_SA, whichever way its release says it (a log line, an alert)."""

    INITIATING = "initiating"  # started a new IKE_SA (not a rekey)
    RETRANSMIT = "retransmit"  # sent a request again: the peer has not answered
    ANSWERED = "answered"  # a response came after retransmits
    GAVE_UP = "gave-up"  # abandoned the exchange (retransmit timeout, peer unreachable)
    REFUSED = "refused"  # the peer refused it (an error notify)
    NO_ROUTE = "no-route"  # no route to the peer: MOBIKE deferred, nothing is sent
    EXPIRED = "expired"  # the IKE_SA's hard lifetime ended
    REDIRECTED = "redirected"  # the gateway redirected it (RFC 5685): charon follows `target`
    REDIRECT_REFUSED = "redirect-refused"  # ... but charon does not follow: the SA stays
    DESTROYED = "destroyed"  # destroyed without any ike-updown (it was never established)


@dataclass(frozen=True)
class IkeSignal:
    """A `Signal` about the IKE_SA `ike_name[ike_id]`, read by the dialect of charon's release
    from a log line or an alert; `detail` is the line or the alert's type."""

    signal: Signal
    ike_name: str
    ike_id: int
    detail: str = ""
    target: str | None = None  # REDIRECTED: the gateway charon was sent to


@dataclass(frozen=True)
class CharonRelease:
    """What the event session learned on connecting: charon's version and the dialect read."""

    version: str | None
    dialect: str
    alerts: bool  # alerts are the signal for retransmits and give-ups


@dataclass(frozen=True)
class CharonLost:
    """The event session lost charon (socket closed or broken)."""

    reason: str


@dataclass(frozen=True)
class CharonBack:
    """The event session reached charon again."""


@dataclass(frozen=True)
class Undecodable:
    """A message that could not be decoded: logged and skipped, never fatal."""

    event_name: str
    reason: str


Observation = (
    IkeUpdown
    | IkeRekey
    | IkeUpdate
    | ChildUpdown
    | ChildRekey
    | LogLine
    | Alert
    | IkeSignal
    | CharonRelease
    | CharonLost
    | CharonBack
    | Undecodable
)
