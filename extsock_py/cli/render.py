"""charon's VICI answers as extsock's stable JSON documents and as swanctl-like text.

The JSON schema (version `SCHEMA_VERSION`, documented in docs/json-output.md) keeps charon's
key names and converts values by a fixed table per object: text as str, counters and times
as int, flags as bool, lists as lists of str. Every named key is always present: a bool is
false and a list empty when charon did not send it, any other value is null. Keys charon sends
that the table does not name go, converted generically, into the object's `other`.

The text output follows swanctl 5.9.8's list_sas.c, list_conns.c, stats.c and version.c.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, TypeAlias

SCHEMA_VERSION: Final = 1

Kind: TypeAlias = Literal["str", "int", "bool", "list"]
Spec: TypeAlias = Mapping[str, "Kind | Spec"]
Json: TypeAlias = dict[str, Any]

_TRUE = frozenset({"yes", "1", "true"})

# -- the schema tables (vici_query.c of strongSwan 5.9.8) ----------------------------------------

IKE_SA_FIELDS: Final[dict[str, Kind]] = {
    "uniqueid": "int",
    "version": "int",
    "state": "str",
    "local-host": "str",
    "local-port": "int",
    "local-id": "str",
    "remote-host": "str",
    "remote-port": "int",
    "remote-id": "str",
    "remote-eap-id": "str",
    "remote-xauth-id": "str",
    "initiator": "bool",
    "initiator-spi": "str",
    "responder-spi": "str",
    "nat-local": "bool",
    "nat-remote": "bool",
    "nat-fake": "bool",
    "nat-any": "bool",
    "if-id-in": "str",
    "if-id-out": "str",
    "encr-alg": "str",
    "encr-keysize": "int",
    "integ-alg": "str",
    "integ-keysize": "int",
    "prf-alg": "str",
    "dh-group": "str",
    "ppk": "bool",
    "established": "int",
    "rekey-time": "int",
    "reauth-time": "int",
    "local-vips": "list",
    "remote-vips": "list",
    "tasks-queued": "list",
    "tasks-active": "list",
    "tasks-passive": "list",
}

CHILD_SA_FIELDS: Final[dict[str, Kind]] = {
    "name": "str",
    "uniqueid": "int",
    "reqid": "int",
    "state": "str",
    "mode": "str",
    "label": "str",
    "protocol": "str",
    "encap": "bool",
    "spi-in": "str",
    "spi-out": "str",
    "cpi-in": "str",
    "cpi-out": "str",
    "mark-in": "str",
    "mark-mask-in": "str",
    "mark-out": "str",
    "mark-mask-out": "str",
    "if-id-in": "str",
    "if-id-out": "str",
    "encr-alg": "str",
    "encr-keysize": "int",
    "integ-alg": "str",
    "integ-keysize": "int",
    "dh-group": "str",
    "esn": "bool",
    "bytes-in": "int",
    "packets-in": "int",
    "use-in": "int",
    "bytes-out": "int",
    "packets-out": "int",
    "use-out": "int",
    "rekey-time": "int",
    "life-time": "int",
    "install-time": "int",
    "local-ts": "list",
    "remote-ts": "list",
}

CONN_FIELDS: Final[dict[str, Kind]] = {
    "local_addrs": "list",
    "remote_addrs": "list",
    "version": "str",
    "reauth_time": "int",
    "rekey_time": "int",
    "unique": "str",
    "dpd_delay": "int",
    "dpd_timeout": "int",
    "ppk_id": "str",
    "ppk_required": "bool",
}

AUTH_FIELDS: Final[dict[str, Kind]] = {
    "class": "str",
    "eap-type": "str",
    "eap-vendor": "int",
    "xauth": "str",
    "revocation": "str",
    "id": "str",
    "ca_id": "str",
    "aaa_id": "str",
    "eap_id": "str",
    "xauth_id": "str",
    "groups": "list",
    "cert_policy": "list",
    "certs": "list",
    "cacerts": "list",
}

CHILD_CFG_FIELDS: Final[dict[str, Kind]] = {
    "mode": "str",
    "label": "str",
    "rekey_time": "int",
    "rekey_bytes": "int",
    "rekey_packets": "int",
    "dpd_action": "str",
    "close_action": "str",
    "local-ts": "list",
    "remote-ts": "list",
    "interface": "str",
    "priority": "int",
}

_PRIORITIES: Final[dict[str, Kind]] = {
    "critical": "int",
    "high": "int",
    "medium": "int",
    "low": "int",
}

STATS_FIELDS: Final[Spec] = {
    "uptime": {"running": "str", "since": "str"},
    "workers": {"total": "int", "idle": "int", "active": _PRIORITIES},
    "queues": _PRIORITIES,
    "scheduled": "int",
    "ikesas": {"total": "int", "half-open": "int"},
    "plugins": "list",
    "mem": {"total": "int", "allocs": "int"},
    "mallinfo": {"sbrk": "int", "mmap": "int", "used": "int", "free": "int"},
}

VERSION_FIELDS: Final[dict[str, Kind]] = {
    "daemon": "str",
    "version": "str",
    "sysname": "str",
    "release": "str",
    "machine": "str",
}

# -- value conversion ------------------------------------------------------------------------


def text(value: object) -> str:
    """A VICI value as str: bytes decoded as UTF-8 (undecodable bytes as \\x escapes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def generic(value: object) -> Any:
    """Any VICI value without a schema: sections as dicts, lists as lists, values as str."""
    if isinstance(value, Mapping):
        return {text(k): generic(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [generic(v) for v in value]
    return text(value)


def _to_int(value: object) -> int | None:
    raw = text(value).strip()
    digits = raw[1:] if raw.startswith("-") else raw
    return int(raw) if digits.isascii() and digits.isdigit() else None


def _to_list(value: object) -> list[str] | None:
    if isinstance(value, list | tuple):
        return [text(v) for v in value]
    if isinstance(value, Mapping):
        return None
    return [text(value)]


def convert(body: Mapping[str, Any], spec: Spec, *, other: bool = True) -> Json:
    """The keys of `spec` converted from `body`, in spec order, then `other` (see module doc)."""
    out: Json = {}
    rest: Json = {}
    for key, kind in spec.items():
        present = key in body
        value = body.get(key)
        if not isinstance(kind, str):
            out[key] = convert(value, kind, other=False) if isinstance(value, Mapping) else None
            if present and not isinstance(value, Mapping):
                rest[key] = generic(value)
        elif kind == "bool":
            out[key] = present and text(value).lower() in _TRUE
        elif kind == "list":
            items = _to_list(value) if present else []
            out[key] = items if items is not None else []
            if items is None:
                rest[key] = generic(value)
        elif not present:
            out[key] = None
        elif kind == "int":
            number = _to_int(value) if not isinstance(value, Mapping | list) else None
            out[key] = number
            if number is None:
                rest[key] = generic(value)
        elif isinstance(value, Mapping | list):
            out[key] = None
            rest[key] = generic(value)
        else:
            out[key] = text(value)
    if other:
        rest.update((text(k), generic(v)) for k, v in body.items() if k not in spec)
        out["other"] = rest
    return out


def sections(message: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """The named subsections of a message, in order (a list-sa/list-conn event's objects)."""
    return ((text(k), v) for k, v in message.items() if isinstance(v, Mapping))


# -- JSON documents -------------------------------------------------------------------------


def child_sa_json(body: Mapping[str, Any]) -> Json:
    return convert(body, CHILD_SA_FIELDS)


def ike_sa_json(name: str, body: Mapping[str, Any]) -> Json:
    """One IKE_SA of list-sas; its `child-sas` section becomes a list."""
    children = body.get("child-sas")
    fields = {k: v for k, v in body.items() if k != "child-sas"}
    sa: Json = {"name": name}
    converted = convert(fields, IKE_SA_FIELDS)
    rest = converted.pop("other")
    sa.update(converted)
    kids = (
        [child_sa_json(c) for _, c in sections(children)] if isinstance(children, Mapping) else []
    )
    sa["child-sas"] = kids
    sa["other"] = rest
    return sa


def list_sas_json(events: Iterable[Mapping[str, Any]]) -> Json:
    """The `list-sa` events of list-sas as `{"version": 1, "sas": [...]}`."""
    sas = [ike_sa_json(name, body) for event in events for name, body in sections(event)]
    return {"version": SCHEMA_VERSION, "sas": sas}


def conn_json(name: str, body: Mapping[str, Any]) -> Json:
    """One connection of list-conns: auth rounds and children as lists."""
    conn: Json = {"name": name}
    scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
    converted = convert(scalars, CONN_FIELDS)
    rest = converted.pop("other")
    conn.update(converted)
    conn["local"] = []
    conn["remote"] = []
    conn["children"] = []
    for key, section in sections(body):
        if key == "children":
            for child, cfg in sections(section):
                conn["children"].append({"name": child, **convert(cfg, CHILD_CFG_FIELDS)})
        elif key.startswith(("local", "remote")):
            side = "local" if key.startswith("local") else "remote"
            conn[side].append({"name": key, **convert(section, AUTH_FIELDS)})
        else:
            rest[key] = generic(section)
    conn["other"] = rest
    return conn


def list_conns_json(events: Iterable[Mapping[str, Any]]) -> Json:
    """The `list-conn` events of list-conns as `{"version": 1, "conns": [...]}`."""
    conns = [conn_json(name, body) for event in events for name, body in sections(event)]
    return {"version": SCHEMA_VERSION, "conns": conns}


def stats_json(response: Mapping[str, Any]) -> Json:
    return {"version": SCHEMA_VERSION, "stats": convert(response, STATS_FIELDS)}


def version_json(response: Mapping[str, Any], extsock_version: str) -> Json:
    return {
        "version": SCHEMA_VERSION,
        "extsock": {"version": extsock_version},
        "charon": convert(response, VERSION_FIELDS),
    }


def dumps(document: Json) -> str:
    """A JSON document as extsock prints it: indented, keys in schema order, UTF-8 kept."""
    return json.dumps(document, indent=2, ensure_ascii=False)


# -- swanctl-like text ----------------------------------------------------------------------


def _s(value: object) -> str:
    """A converted value as swanctl prints it (lists space-separated, None as empty)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _algorithms(sa: Json, *, child: bool) -> str:
    parts: list[str] = []
    if sa["encr-alg"] is not None:
        encr = sa["encr-alg"]
        parts.append(encr if sa["encr-keysize"] is None else f"{encr}-{sa['encr-keysize']}")
    if sa["integ-alg"] is not None:
        integ = sa["integ-alg"]
        parts.append(integ if sa["integ-keysize"] is None else f"{integ}-{sa['integ-keysize']}")
    if not child and sa["prf-alg"] is not None:
        parts.append(sa["prf-alg"])
    if sa["dh-group"] is not None:
        parts.append(sa["dh-group"])
    if child and sa["esn"]:
        parts.append("ESN")
    if not child and sa["ppk"]:
        parts.append("PPK")
    return "/".join(parts)


def _mark(sa: Json, direction: str) -> str:
    mark, mask = sa[f"mark-{direction}"], sa[f"mark-mask-{direction}"]
    if_id = sa[f"if-id-{direction}"]
    if mark is None and if_id is None:
        return ""
    text_ = "-" if mark is None else f"0x{mark}" + (f"/0x{mask}" if mask is not None else "")
    if if_id is not None:
        text_ += f"|0x{if_id}"
    return f" ({text_})"


def _traffic(sa: Json, direction: str) -> str:
    label = "in " if direction == "in" else "out"
    spi = sa[f"spi-{direction}"]
    cpi = sa[f"cpi-{direction}"]
    line = f"    {label} {spi}" + (f"/{cpi}" if cpi is not None else "") + _mark(sa, direction)
    line += (
        f", {_s(sa[f'bytes-{direction}']):>6} bytes, {_s(sa[f'packets-{direction}']):>5} packets"
    )
    if sa[f"use-{direction}"] is not None:
        line += f", {_s(sa[f'use-{direction}']):>5}s ago"
    return line


def _child_sa_lines(child: Json) -> list[str]:
    head = f"  {child['name']}: #{_s(child['uniqueid'])}, reqid {_s(child['reqid'])}, "
    head += f"{_s(child['state'])}, {_s(child['mode'])}" + ("-in-UDP" if child["encap"] else "")
    if child["protocol"] is not None:
        head += f", {child['protocol']}:{_algorithms(child, child=True)}"
    lines = [head]
    if child["install-time"] is not None:
        line = f"    installed {child['install-time']}s ago"
        if child["rekey-time"] is not None:
            line += f", rekeying in {child['rekey-time']}s"
        if child["life-time"] is not None:
            line += f", expires in {child['life-time']}s"
        lines.append(line)
    if child["spi-in"] is not None:
        lines.append(_traffic(child, "in"))
        lines.append(_traffic(child, "out"))
    if child["label"] is not None:
        lines.append(f"    label  {child['label']}")
    lines.append(f"    local  {_s(child['local-ts'])}")
    lines.append(f"    remote {_s(child['remote-ts'])}")
    return lines


def ike_sa_lines(sa: Json) -> list[str]:
    """One IKE_SA (as ike_sa_json made it) as swanctl --list-sas prints it."""
    initiator = sa["initiator"]
    lines = [
        f"{sa['name']}: #{_s(sa['uniqueid'])}, {_s(sa['state'])}, IKEv{_s(sa['version'])}, "
        f"{_s(sa['initiator-spi'])}_i{'*' if initiator else ''} "
        f"{_s(sa['responder-spi'])}_r{'' if initiator else '*'}"
    ]
    local = f"  local  '{_s(sa['local-id'])}' @ {_s(sa['local-host'])}[{_s(sa['local-port'])}]"
    if sa["local-vips"]:
        local += f" [{_s(sa['local-vips'])}]"
    lines.append(local)
    remote = f"  remote '{_s(sa['remote-id'])}' @ {_s(sa['remote-host'])}[{_s(sa['remote-port'])}]"
    if sa["remote-eap-id"] is not None:
        remote += f" EAP: '{sa['remote-eap-id']}'"
    if sa["remote-xauth-id"] is not None:
        remote += f" XAuth: '{sa['remote-xauth-id']}'"
    if sa["remote-vips"]:
        remote += f" [{_s(sa['remote-vips'])}]"
    lines.append(remote)
    if sa["encr-alg"] is not None:
        lines.append(f"  {_algorithms(sa, child=False)}")
    if sa["established"] is not None:
        line = f"  established {sa['established']}s ago"
        if sa["rekey-time"] is not None:
            line += f", rekeying in {sa['rekey-time']}s"
        if sa["reauth-time"] is not None:
            line += f", reauth in {sa['reauth-time']}s"
        lines.append(line)
    for key, label in (("queued", "queued: "), ("active", "active: "), ("passive", "passive:")):
        if sa[f"tasks-{key}"]:
            lines.append(f"  {label} {_s(sa[f'tasks-{key}'])}")
    for child in sa["child-sas"]:
        lines.extend(_child_sa_lines(child))
    return lines


def format_list_sas(document: Json) -> str:
    """list_sas_json's document as swanctl --list-sas text (empty when there are no SAs)."""
    return "\n".join(line for sa in document["sas"] for line in ike_sa_lines(sa))


def _rekeying(cfg: Json, dpd_delay: int | None) -> str:
    mode = _s(cfg["mode"])
    times = [cfg["rekey_time"] or 0, cfg["rekey_bytes"] or 0, cfg["rekey_packets"] or 0]
    if mode.upper() in ("PASS", "DROP") or not any(times):
        text_ = "no rekeying"
    else:
        parts = []
        if times[0]:
            parts.append(f" {times[0]}s")
        if times[1]:
            parts.append(f" {times[1]} bytes")
        if times[2]:
            parts.append(f" {times[2]} packets")
        text_ = "rekeying every" + " or".join(parts)
    if dpd_delay:
        text_ += f", dpd action is {_s(cfg['dpd_action'])}"
    return text_


_AUTH_LINES: Final = (
    ("id", "id"),
    ("ca_id", "ca_id"),
    ("eap_id", "eap_id"),
    ("xauth_id", "xauth_id"),
    ("aaa_id", "aaa_id"),
    ("groups", "groups"),
    ("cert_policy", "cert policy"),
    ("certs", "certs"),
    ("cacerts", "cacerts"),
)


def _auth_lines(side: str, auth: Json) -> list[str]:
    cls = auth["class"] or "unspecified"
    if cls.upper() == "EAP" and auth["eap-type"]:
        cls = auth["eap-type"]
    lines = [f"  {side} {cls} authentication:"]
    lines.extend(f"    {label}: {_s(auth[key])}" for key, label in _AUTH_LINES if auth[key])
    return lines


def conn_lines(conn: Json) -> list[str]:
    """One connection (as conn_json made it) as swanctl --list-conns prints it."""
    version = _s(conn["version"])
    reauth, rekey = conn["reauth_time"] or 0, conn["rekey_time"] or 0
    if version == "IKEv1" and not reauth:
        reauth = rekey
    head = f"{conn['name']}: {version}, "
    head += f"reauthentication every {reauth}s" if reauth else "no reauthentication"
    if version != "IKEv1":
        head += f", rekeying every {rekey}s" if rekey else ", no rekeying"
    if conn["dpd_delay"]:
        head += f", dpd delay {conn['dpd_delay']}s"
    lines = [head]
    if conn["ppk_id"] is not None or conn["ppk_required"]:
        ppk = f"{conn['ppk_id']}, " if conn["ppk_id"] is not None else ""
        lines.append(f"  ppk: {ppk}{'' if conn['ppk_required'] else 'not '}required")
    lines.extend(f"  local:  {addr}" for addr in conn["local_addrs"])
    lines.extend(f"  remote: {addr}" for addr in conn["remote_addrs"])
    for side in ("local", "remote"):
        for auth in conn[side]:
            lines.extend(_auth_lines(side, auth))
    for cfg in conn["children"]:
        lines.append(f"  {cfg['name']}: {_s(cfg['mode'])}, {_rekeying(cfg, conn['dpd_delay'])}")
        if cfg["label"] is not None:
            lines.append(f"    label:  {cfg['label']}")
        lines.append(f"    local:  {_s(cfg['local-ts'])}")
        lines.append(f"    remote: {_s(cfg['remote-ts'])}")
        if cfg["interface"] is not None:
            lines.append(f"    interface: {cfg['interface']}")
        if cfg["priority"] is not None:
            lines.append(f"    priority: {cfg['priority']}")
    return lines


def format_list_conns(document: Json) -> str:
    """list_conns_json's document as swanctl --list-conns text."""
    return "\n".join(line for conn in document["conns"] for line in conn_lines(conn))


def format_stats(document: Json) -> str:
    """stats_json's document as swanctl --stats text."""
    stats = document["stats"]

    def get(*path: str) -> str:
        node: Any = stats
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        return _s(node)

    prios = ("critical", "high", "medium", "low")
    lines = [
        f"uptime: {get('uptime', 'running')}, since {get('uptime', 'since')}",
        f"worker threads: {get('workers', 'total')} total, {get('workers', 'idle')} idle, "
        f"working: {'/'.join(get('workers', 'active', p) for p in prios)}",
        f"job queues: {'/'.join(get('queues', p) for p in prios)}",
        f"jobs scheduled: {get('scheduled')}",
        f"IKE_SAs: {get('ikesas', 'total')} total, {get('ikesas', 'half-open')} half-open",
    ]
    if stats["mem"] is not None:
        lines.append(
            f"memory usage: {get('mem', 'total')} bytes, {get('mem', 'allocs')} allocations"
        )
    if stats["mallinfo"] is not None:
        lines.append(
            f"mallinfo: sbrk {get('mallinfo', 'sbrk')}, mmap {get('mallinfo', 'mmap')}, "
            f"used {get('mallinfo', 'used')}, free {get('mallinfo', 'free')}"
        )
    lines.append("loaded plugins:" + "".join(f" {p}" for p in stats["plugins"]))
    return "\n".join(lines)


def charon_version_line(document: Json) -> str:
    """charon's version as `swanctl --version --daemon` prints it."""
    charon = document["charon"]
    return (
        f"strongSwan {_s(charon['version'])} {_s(charon['daemon'])} "
        f"({_s(charon['sysname'])}, {_s(charon['release'])}, {_s(charon['machine'])})"
    )


def format_version(document: Json) -> str:
    """version_json's document: extsock's version, then charon's."""
    return f"extsock {document['extsock']['version']}\n{charon_version_line(document)}"


def format_log(message: Mapping[str, Any]) -> str:
    """One control-log event as swanctl prints it: `[IKE] message`."""
    group = text(message["group"]) if "group" in message else "   "
    return f"[{group}] {text(message.get('msg', b''))}"
