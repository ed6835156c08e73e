"""VICI messages shaped exactly as charon 5.9.8 builds them (vici_query.c, vici_logger.c)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


def _b(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def child_sa(
    name: str = "net",
    uniqueid: int = 1,
    state: str = "INSTALLED",
    *,
    reqid: int = 1,
    bytes_in: int = 0,
    packets_in: int = 0,
    bytes_out: int = 0,
    packets_out: int = 0,
    local_ts: tuple[str, ...] = ("10.100.0.0/24",),
    remote_ts: tuple[str, ...] = ("10.200.0.0/24",),
) -> OrderedDict[str, Any]:
    """list_child(): ipsec details and counters only in INSTALLED..DELETED states."""
    m: OrderedDict[str, Any] = OrderedDict()
    m["name"] = _b(name)
    m["uniqueid"] = _b(uniqueid)
    m["reqid"] = _b(reqid)
    m["state"] = _b(state)
    m["mode"] = b"TUNNEL"
    if state in ("INSTALLED", "REKEYING", "REKEYED", "DELETING", "DELETED"):
        m["protocol"] = b"ESP"
        m["spi-in"] = b"c1a2b3c4"
        m["spi-out"] = b"c5d6e7f8"
        m["encr-alg"] = b"AES_GCM_16"
        m["encr-keysize"] = b"256"
        m["bytes-in"] = _b(bytes_in)
        m["packets-in"] = _b(packets_in)
        if packets_in:
            m["use-in"] = b"1"
        m["bytes-out"] = _b(bytes_out)
        m["packets-out"] = _b(packets_out)
        if packets_out:
            m["use-out"] = b"1"
        m["rekey-time"] = b"3300"
        m["life-time"] = b"3600"
        m["install-time"] = b"12"
    m["local-ts"] = [_b(t) for t in local_ts]
    m["remote-ts"] = [_b(t) for t in remote_ts]
    return m


def ike_sa(
    uniqueid: int = 1,
    state: str = "ESTABLISHED",
    *,
    local_host: str = "10.99.0.1",
    remote_host: str = "10.99.1.2",
    initiator: bool = True,
    children: list[OrderedDict[str, Any]] | None = None,
) -> OrderedDict[str, Any]:
    """list_ike(); plus a `child-sas` section when `children` is given (list-sas, child-updown)."""
    m: OrderedDict[str, Any] = OrderedDict()
    m["uniqueid"] = _b(uniqueid)
    m["version"] = b"2"
    m["state"] = _b(state)
    m["local-host"] = _b(local_host)
    m["local-port"] = b"500"
    m["local-id"] = _b(local_host)
    m["remote-host"] = _b(remote_host)
    m["remote-port"] = b"500"
    m["remote-id"] = _b(remote_host)
    if initiator:
        m["initiator"] = b"yes"
    m["initiator-spi"] = b"84b0016b5660a18a"
    m["responder-spi"] = b"0000000000000000" if state == "CONNECTING" else b"1b2c3d4e5f607182"
    if state == "ESTABLISHED":
        m["encr-alg"] = b"AES_CBC"
        m["encr-keysize"] = b"256"
        m["integ-alg"] = b"HMAC_SHA2_256_128"
        m["prf-alg"] = b"PRF_HMAC_SHA2_256"
        m["dh-group"] = b"CURVE_25519"
        m["established"] = b"3"
        m["rekey-time"] = b"13000"
    if state == "CONNECTING":
        m["tasks-active"] = [b"IKE_VENDOR", b"IKE_INIT", b"IKE_NATD", b"IKE_AUTH", b"CHILD_CREATE"]
    if children is not None:
        section: OrderedDict[str, Any] = OrderedDict()
        for c in children:
            section[f"{c['name'].decode()}-{c['uniqueid'].decode()}"] = c
        m["child-sas"] = section
    return m


def list_sa(name: str, sa: OrderedDict[str, Any]) -> OrderedDict[str, Any]:
    """One list-sa event: `{<conn>: {... child-sas {...}}}`."""
    if "child-sas" not in sa:
        sa = OrderedDict(sa, **{"child-sas": OrderedDict()})
    return OrderedDict([(name, sa)])


def ike_updown(name: str, sa: OrderedDict[str, Any], up: bool) -> OrderedDict[str, Any]:
    """`{up = yes (only if up), <conn> = {list_ike, no child-sas}}`."""
    m: OrderedDict[str, Any] = OrderedDict()
    if up:
        m["up"] = b"yes"
    m[name] = sa
    return m


def child_updown(
    name: str, sa: OrderedDict[str, Any], child: OrderedDict[str, Any], up: bool
) -> OrderedDict[str, Any]:
    """`{up?, <conn> = {list_ike, child-sas = {<child>-<id> = {list_child}}}}`."""
    body = OrderedDict((k, v) for k, v in sa.items() if k != "child-sas")
    body["child-sas"] = OrderedDict(
        [(f"{child['name'].decode()}-{child['uniqueid'].decode()}", child)]
    )
    return ike_updown(name, body, up)


def ike_rekey(
    name: str, old: OrderedDict[str, Any], new: OrderedDict[str, Any]
) -> OrderedDict[str, Any]:
    """`{<conn> = {old = {list_ike}, new = {list_ike}}}`."""
    return OrderedDict([(name, OrderedDict([("old", old), ("new", new)]))])


def child_rekey(
    name: str,
    sa: OrderedDict[str, Any],
    old: OrderedDict[str, Any],
    new: OrderedDict[str, Any],
) -> OrderedDict[str, Any]:
    """vici_query.c child_rekey(): `{<conn> = {list_ike, child-sas = {<child name> =
    {old = {list_child}, new = {list_child}}}}}` (keyed by the name alone, no unique id)."""
    body = OrderedDict((k, v) for k, v in sa.items() if k != "child-sas")
    pair = OrderedDict([("old", old), ("new", new)])
    body["child-sas"] = OrderedDict([(old["name"].decode(), pair)])
    return OrderedDict([(name, body)])


def ike_update(
    name: str, sa: OrderedDict[str, Any], local: tuple[str, int], remote: tuple[str, int]
) -> OrderedDict[str, Any]:
    """`{local-host, local-port, remote-host, remote-port (new), <conn> = {list_ike (old)}}`."""
    m: OrderedDict[str, Any] = OrderedDict()
    m["local-host"] = _b(local[0])
    m["local-port"] = _b(local[1])
    m["remote-host"] = _b(remote[0])
    m["remote-port"] = _b(remote[1])
    m[name] = sa
    return m


def log(
    msg: str | bytes,
    *,
    group: str = "IKE",
    level: int = 1,
    thread: int = 12,
    ike_name: str | None = None,
    ike_id: int | None = None,
) -> OrderedDict[str, Any]:
    """vici_logger.c: `{group, level, thread, [ikesa-name, ikesa-uniqueid], msg}`."""
    m: OrderedDict[str, Any] = OrderedDict()
    m["group"] = _b(group)
    m["level"] = _b(level)
    m["thread"] = _b(thread)
    if ike_name is not None:
        m["ikesa-name"] = _b(ike_name)
        m["ikesa-uniqueid"] = _b(ike_id if ike_id is not None else 0)
    m["msg"] = _b(msg)
    return m


def alert(
    kind: str, name: str | None = None, sa: OrderedDict[str, Any] | None = None
) -> OrderedDict[str, Any]:
    """strongSwan >= 6.0.3: `{type, [ike-sa = {<conn> = {list_ike}}]}`."""
    m: OrderedDict[str, Any] = OrderedDict()
    m["type"] = _b(kind)
    if name is not None and sa is not None:
        m["ike-sa"] = OrderedDict([(name, sa)])
    return m
