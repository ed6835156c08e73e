"""The control protocol: newline-delimited JSON over a unix socket, version 1.

A request is one JSON object on one line:

    {"v": 1, "id": 7, "cmd": "switch", "conn": "home", "to": "10.0.0.2"}

and its response one line with the same id:

    {"v": 1, "id": 7, "ok": true, "result": {...}}
    {"v": 1, "id": 7, "ok": false, "error": "switch failed: UnknownConnection: ..."}

After `subscribe`, events follow as lines of their own (`{"v": 1, "event": ...}`),
interleaved with the responses to any further requests. The schemas are documented in
docs/control-protocol.md; clients must ignore event kinds and fields they do not know.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

# shared with the client, which imports wire.py without these models
from extsock_py.adapters.control.wire import DEFAULT_SOCKET as DEFAULT_SOCKET
from extsock_py.adapters.control.wire import EVENT_KINDS as EVENT_KINDS
from extsock_py.adapters.control.wire import VERSION as VERSION
from extsock_py.adapters.control.wire import encode_line as encode_line

MAX_REQUEST = 64 * 1024  # bytes of one request line, newline excluded
MAX_CLIENTS = 256
MAX_CLIENTS_PER_UID = 32  # root and the daemon's own uid are not counted against this
RESERVED_FOR_ROOT = 1  # slots only root (or the daemon's uid) may take
IDLE_TIMEOUT = 60.0  # seconds a connection that is not subscribed may go without a request
SEND_TIMEOUT = 10.0  # seconds a response or event line may wait for the client to read
SUBSCRIBER_BYTES = 1 << 20  # bytes of event lines waiting per subscriber at most
EVENT_QUEUE = 1024  # events buffered per subscriber before they are dropped and counted


class InvalidRequest(Exception):
    """A request that is not valid JSON, not an object, or lacks or mistypes a field."""


class UnknownCommand(InvalidRequest):
    """A request naming a command the daemon does not have."""


class TooManyClients(Exception):
    """The daemon serves MAX_CLIENTS clients already (or this uid its share of them)."""


class IdleTimeout(Exception):
    """The client sent no request for IDLE_TIMEOUT seconds and was not subscribed."""


class NotPermitted(Exception):
    """The client's uid and groups do not carry the role the command needs."""


def clip(text: str, limit: int = 80) -> str:
    """User input as it may appear in a log line or an error: bounded, on one line."""
    flat = text.replace("\n", "\\n").replace("\r", "\\r")
    return flat if len(flat) <= limit else f"{flat[:limit]}...({len(flat)} chars)"


# --- requests -----------------------------------------------------------------------------


class Envelope(BaseModel):
    """What every request has; the command's own fields are checked by its model."""

    model_config = ConfigDict(extra="allow")

    v: StrictInt = VERSION
    id: StrictStr | StrictInt | None = None
    cmd: StrictStr


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Args):
    pass


class StatusArgs(_Args):
    conn: StrictStr | None = None


class HistoryArgs(_Args):
    conn: StrictStr | None = None
    since: float | None = Field(default=None, description="epoch seconds")
    limit: int = Field(default=100, ge=1, le=10000)


class ConnArgs(_Args):
    conn: StrictStr


class SwitchArgs(_Args):
    conn: StrictStr
    to: StrictStr | None = None


class LoadArgs(_Args):
    conn: StrictStr
    body: dict[str, Any]
    policy: dict[str, Any] | None = None


class SubscribeArgs(_Args):
    events: list[StrictStr] | None = None


COMMANDS: dict[str, type[_Args]] = {
    "status": StatusArgs,
    "history": HistoryArgs,
    "switch": SwitchArgs,
    "hold": ConnArgs,
    "release": ConnArgs,
    "retry": ConnArgs,
    "terminate": ConnArgs,
    "reload": NoArgs,
    "load": LoadArgs,
    "unload": ConnArgs,
    "health": NoArgs,
    "subscribe": SubscribeArgs,
    "ping": NoArgs,
}


def describe_validation(exc: ValidationError) -> str:
    """One line naming each wrong field, e.g. `field 'conn': Field required`."""
    parts = []
    for err in exc.errors():
        where = clip(".".join(str(p) for p in err["loc"]) or "request")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field '{where}'")
        elif err["type"] == "missing":
            parts.append(f"missing field '{where}'")
        else:
            parts.append(f"field '{where}': {err['msg']}")
    return "; ".join(parts)


def parse_request(line: bytes) -> tuple[Envelope, _Args]:
    """Decode one request line; raise InvalidRequest with a message fit for the client."""
    try:
        data = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"not valid JSON: {clip(str(exc))}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("a request must be a JSON object with a 'cmd' field")
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(clip(describe_validation(exc), 400)) from None
    if envelope.v != VERSION:
        raise InvalidRequest(f"protocol version {envelope.v} is not supported (use {VERSION})")
    model = COMMANDS.get(envelope.cmd)
    if model is None:
        known = ", ".join(sorted(COMMANDS))
        raise UnknownCommand(f"unknown command '{clip(envelope.cmd)}' (commands: {known})")
    fields = {k: v for k, v in data.items() if k not in ("v", "id", "cmd")}
    try:
        return envelope, model.model_validate(fields)
    except ValidationError as exc:
        raise InvalidRequest(clip(describe_validation(exc), 400)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def request_id_of(line: bytes) -> str | int | None:
    """The id of a request that failed to parse, when one can still be found."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    value = data.get("id") if isinstance(data, dict) else None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    return None


def command_of(line: bytes) -> str:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return "request"
    cmd = data.get("cmd") if isinstance(data, dict) else None
    return cmd if isinstance(cmd, str) and cmd.isidentifier() and len(cmd) <= 32 else "request"


# --- responses ----------------------------------------------------------------------------


def ok_response(request_id: str | int | None, result: Any) -> dict[str, Any]:
    return {"v": VERSION, "id": request_id, "ok": True, "result": result}


def error_text(command: str, exc: BaseException) -> str:
    """`<command> failed: <Type>: <message>` (ExaBGP's form), on one line."""
    message = " ".join(str(exc).split()) or "no detail"
    return f"{command} failed: {type(exc).__name__}: {message}"


def error_response(
    request_id: str | int | None, command: str, exc: BaseException
) -> dict[str, Any]:
    return {"v": VERSION, "id": request_id, "ok": False, "error": error_text(command, exc)}


# --- events -------------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    v: int = VERSION
    event: str
    time: float


class IkeStateEvent(_Event):
    event: Literal["ike-state"] = "ike-state"
    connection: str  # the connection the IKE_SA is named after (its clone)
    connections: list[str] = Field(default_factory=list)  # those with a CHILD_SA in it
    ike: str | None = None  # the IKE_SA's config name (`home@192.0.2.1`)
    gateway: str | None = None  # the IKE_SA's remote address
    old: str
    new: str
    ike_id: int | None = None
    virtual_ips: list[str] = Field(default_factory=list)  # assigned by the gateway (vips)


class TunnelUpEvent(_Event):
    event: Literal["tunnel-up"] = "tunnel-up"
    connection: str
    gateway: str | None = None
    reason: str | None = None  # "adopted" when found up at start
    virtual_ips: list[str] = Field(default_factory=list)  # assigned by the gateway (vips)


class TunnelDownEvent(_Event):
    event: Literal["tunnel-down"] = "tunnel-down"
    connection: str
    gateway: str | None = None
    reason: str | None = None


class FailoverStartedEvent(_Event):
    event: Literal["failover-started"] = "failover-started"
    connection: str
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    reason: str | None = None


class FailoverEvent(_Event):
    event: Literal["failover"] = "failover"
    connection: str
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    reason: str | None = None
    duration: float | None = None  # seconds, detection (or switch start) to tunnel up
    outage: float | None = None  # seconds, last sign of life to tunnel up (when known)


class RedirectedEvent(_Event):
    event: Literal["redirected"] = "redirected"
    connection: str
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    reason: str | None = None
    duration: float | None = None  # seconds, redirect received to tunnel up at the target


class SwitchFailedEvent(_Event):
    event: Literal["switch-failed"] = "switch-failed"
    connection: str
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    reason: str | None = None


class StandbyUpEvent(_Event):
    event: Literal["standby-up"] = "standby-up"
    connection: str
    gateway: str | None = None  # the hot standby's IKE_SA is established towards it


class StandbyDownEvent(_Event):
    event: Literal["standby-down"] = "standby-down"
    connection: str
    gateway: str | None = None
    reason: str | None = None  # ike-down, retransmit, moved, ...


class GaveUpEvent(_Event):
    event: Literal["gave-up"] = "gave-up"
    connection: str
    gateway: str | None = None
    reason: str | None = None


class HeldEvent(_Event):
    event: Literal["held"] = "held"
    connection: str
    gateway: str | None = None


class ReleasedEvent(_Event):
    event: Literal["released"] = "released"
    connection: str
    gateway: str | None = None


class CharonLostEvent(_Event):
    event: Literal["charon-lost"] = "charon-lost"
    reason: str | None = None


class CharonBackEvent(_Event):
    event: Literal["charon-back"] = "charon-back"


class ReloadedEvent(_Event):
    event: Literal["reloaded"] = "reloaded"
    managed: list[str] = Field(default_factory=list)


class ReloadFailedEvent(_Event):
    event: Literal["reload-failed"] = "reload-failed"
    error: str | None = None


class UnloadedEvent(_Event):
    event: Literal["unloaded"] = "unloaded"
    connection: str


class MissedEvent(_Event):
    event: Literal["missed"] = "missed"
    count: int


EVENT_MODELS: dict[str, type[_Event]] = {
    "ike-state": IkeStateEvent,
    "tunnel-up": TunnelUpEvent,
    "tunnel-down": TunnelDownEvent,
    "failover-started": FailoverStartedEvent,
    "failover": FailoverEvent,
    "redirected": RedirectedEvent,
    "switch-failed": SwitchFailedEvent,
    "standby-up": StandbyUpEvent,
    "standby-down": StandbyDownEvent,
    "gave-up": GaveUpEvent,
    "held": HeldEvent,
    "released": ReleasedEvent,
    "charon-lost": CharonLostEvent,
    "charon-back": CharonBackEvent,
    "reloaded": ReloadedEvent,
    "reload-failed": ReloadFailedEvent,
    "unloaded": UnloadedEvent,
}
_FROM_TO = (FailoverEvent, FailoverStartedEvent, SwitchFailedEvent, RedirectedEvent)


def encode_event(kind: str, fields: Mapping[str, Any], time: float) -> dict[str, Any] | None:
    """The wire form of one of the publisher's events; None for kinds not in the protocol."""
    model = EVENT_MODELS.get(kind)
    if model is None:
        return None
    data = dict(fields)
    if "from_gateway" in data or model in _FROM_TO:
        data["from"] = data.pop("from_gateway", None)
        data["to"] = data.pop("gateway", None)
    data["time"] = round(time, 6)
    known = {f.alias or name for name, f in model.model_fields.items()}
    try:
        event = model.model_validate({k: v for k, v in data.items() if k in known})
    except ValidationError:
        return None
    wire = event.model_dump(by_alias=True)
    if wire.get("outage", 0) is None:
        del wire["outage"]  # known only where the tunnel monitor saw the traffic stop
    return wire


def missed_event(count: int, time: float) -> dict[str, Any]:
    return MissedEvent(count=count, time=round(time, 6)).model_dump(by_alias=True)
