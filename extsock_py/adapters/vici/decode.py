"""Pure decoding of charon's VICI messages (events and list-sas) into observations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extsock_py.domain.observations import (
    Alert,
    ChildRekey,
    ChildSaInfo,
    ChildUpdown,
    IkeRekey,
    IkeSaInfo,
    IkeUpdate,
    IkeUpdown,
    LogLine,
    Observation,
    Undecodable,
)


class DecodeError(ValueError):
    """A VICI message lacks a key or has a value of the wrong shape."""


def _text(value: object, key: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    raise DecodeError(f"'{key}' is a {type(value).__name__}, expected a value")


def _int(value: object, key: str) -> int:
    if isinstance(value, bytes | str):
        raw = value.decode("ascii", errors="replace") if isinstance(value, bytes) else value
        digits = raw[1:] if raw.startswith("-") else raw
        if digits.isascii() and digits.isdigit():
            return int(raw)
    raise DecodeError(f"'{key}' is {value!r}, expected an integer")


def _section(value: object, key: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise DecodeError(f"'{key}' is a {type(value).__name__}, expected a section")


def _required(body: Mapping[str, Any], key: str) -> object:
    if key not in body:
        raise DecodeError(f"missing '{key}'")
    return body[key]


def _text_list(body: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise DecodeError(f"{key}: expected a list, got {type(value).__name__}")
    return tuple(_text(item, key) for item in value)


def _optional_text(body: Mapping[str, Any], key: str) -> str | None:
    return _text(body[key], key) if key in body else None


def _optional_int(body: Mapping[str, Any], key: str) -> int | None:
    return _int(body[key], key) if key in body else None


def _is_set(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key)
    return value in (b"yes", "yes", b"1", "1", b"true", "true")


def parse_child_sa(key: str, body: Mapping[str, Any]) -> ChildSaInfo:
    """One child-sas entry (keyed `<name>-<uniqueid>`) into a ChildSaInfo; DecodeError if bad."""
    name = _optional_text(body, "name")
    return ChildSaInfo(
        name=name if name is not None else key,
        unique_id=_int(_required(body, "uniqueid"), "uniqueid"),
        state=_text(_required(body, "state"), "state"),
        packets_in=_optional_int(body, "packets-in") or 0,
        bytes_in=_optional_int(body, "bytes-in") or 0,
        packets_out=_optional_int(body, "packets-out") or 0,
        bytes_out=_optional_int(body, "bytes-out") or 0,
    )


def parse_ike_sa(name: str, body: Mapping[str, Any]) -> IkeSaInfo:
    """One IKE_SA section (list-sas, ike-* events) into IkeSaInfo; DecodeError if bad."""
    children: list[ChildSaInfo] = []
    if "child-sas" in body:
        for key, child in _section(body["child-sas"], "child-sas").items():
            children.append(parse_child_sa(key, _section(child, f"child-sas.{key}")))
    return IkeSaInfo(
        name=name,
        unique_id=_int(_required(body, "uniqueid"), "uniqueid"),
        state=_text(_required(body, "state"), "state"),
        remote_host=_optional_text(body, "remote-host"),
        local_host=_optional_text(body, "local-host"),
        children=tuple(children),
        local_vips=_text_list(body, "local-vips"),
    )


def only_section(message: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The single named section of a message (the IKE_SA's config name and its body)."""
    sections = [(k, v) for k, v in message.items() if isinstance(v, Mapping)]
    if len(sections) != 1:
        raise DecodeError(f"expected one IKE_SA section, found {len(sections)}")
    return sections[0]


def parse_list_sa(message: Mapping[str, Any]) -> IkeSaInfo:
    """One `list-sa` event (`{<conn>: {...}}`) into IkeSaInfo; DecodeError if bad."""
    name, body = only_section(message)
    return parse_ike_sa(name, body)


def _ike_updown(message: Mapping[str, Any]) -> Observation:
    return IkeUpdown(sa=parse_list_sa(message), up=_is_set(message, "up"))


def _child_updown(message: Mapping[str, Any]) -> Observation:
    name, body = only_section(message)
    sa = parse_ike_sa(name, body)
    if len(sa.children) != 1:
        raise DecodeError(f"expected one CHILD_SA in child-sas, found {len(sa.children)}")
    return ChildUpdown(sa=sa, child=sa.children[0], up=_is_set(message, "up"))


def _ike_rekey(message: Mapping[str, Any]) -> Observation:
    name, body = only_section(message)
    old = parse_ike_sa(name, _section(_required(body, "old"), "old"))
    new = parse_ike_sa(name, _section(_required(body, "new"), "new"))
    return IkeRekey(old=old, new=new)


def _child_rekey(message: Mapping[str, Any]) -> Observation:
    """vici_query.c child_rekey(): `{<conn> = {list_ike, child-sas = {<child name> = {old =
    {list_child}, new = {list_child}}}}}` (the same in 5.9.8 and 6.x)."""
    name, body = only_section(message)
    sa = parse_ike_sa(name, {k: v for k, v in body.items() if k != "child-sas"})
    children = _section(_required(body, "child-sas"), "child-sas")
    if len(children) != 1:
        raise DecodeError(f"expected one CHILD_SA in child-sas, found {len(children)}")
    ((key, pair),) = children.items()
    pair = _section(pair, f"child-sas.{key}")
    old = parse_child_sa(key, _section(_required(pair, "old"), f"child-sas.{key}.old"))
    new = parse_child_sa(key, _section(_required(pair, "new"), f"child-sas.{key}.new"))
    return ChildRekey(sa=sa, old=old, new=new)


def _ike_update(message: Mapping[str, Any]) -> Observation:
    return IkeUpdate(
        sa=parse_list_sa(message),
        local_host=_optional_text(message, "local-host"),
        remote_host=_optional_text(message, "remote-host"),
    )


def _log(message: Mapping[str, Any]) -> Observation:
    return LogLine(
        group=_text(_required(message, "group"), "group"),
        level=_int(_required(message, "level"), "level"),
        message=_text(_required(message, "msg"), "msg"),
        ike_name=_optional_text(message, "ikesa-name"),
        ike_id=_optional_int(message, "ikesa-uniqueid"),
        thread=_optional_int(message, "thread"),
    )


def _alert(message: Mapping[str, Any]) -> Observation:
    kind = _text(_required(message, "type"), "type")
    if "ike-sa" not in message:
        return Alert(kind=kind)
    sa = parse_list_sa(_section(message["ike-sa"], "ike-sa"))
    detail = f"{sa.state} {sa.local_host or '?'} -> {sa.remote_host or '?'}"
    return Alert(kind=kind, ike_name=sa.name, ike_id=sa.unique_id, message=detail)


_DECODERS = {
    "ike-updown": _ike_updown,
    "child-updown": _child_updown,
    "ike-rekey": _ike_rekey,
    "child-rekey": _child_rekey,
    "ike-update": _ike_update,
    "log": _log,
    "control-log": _log,
    "alert": _alert,
}

EVENTS = tuple(_DECODERS)
"""The event names decode_event understands."""


def decode_event(name: bytes | str | None, message: object) -> Observation:
    """Decode one `(name, message)` as `Session.listen()` yields it; never raises."""
    if isinstance(name, bytes):
        try:
            event = name.decode("utf-8")
        except UnicodeDecodeError:
            return Undecodable(name.decode("utf-8", errors="replace"), "event name is not UTF-8")
    elif isinstance(name, str):
        event = name
    else:
        return Undecodable(repr(name), "no event name")
    decoder = _DECODERS.get(event)
    if decoder is None:
        return Undecodable(event, "unknown event")
    if not isinstance(message, Mapping):
        return Undecodable(event, f"message is a {type(message).__name__}, expected a section")
    try:
        return decoder(message)
    except DecodeError as exc:
        return Undecodable(event, str(exc))
    except Exception as exc:  # never let a strange message escape as an exception
        return Undecodable(event, f"{type(exc).__name__}: {exc}")
