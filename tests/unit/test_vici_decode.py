"""Decoding charon 5.9.8-shaped VICI events into observations."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

from extsock_py.adapters.vici.decode import decode_event, parse_list_sa
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
    Undecodable,
)
from tests.fakes import charon_messages as cm

CONN = "home@10.99.1.2"


def test_ike_updown_up() -> None:
    msg = cm.ike_updown(CONN, cm.ike_sa(3, "ESTABLISHED"), up=True)
    assert decode_event(b"ike-updown", msg) == IkeUpdown(
        sa=IkeSaInfo(CONN, 3, "ESTABLISHED", remote_host="10.99.1.2", local_host="10.99.0.1"),
        up=True,
    )


def test_virtual_ips_the_gateway_assigned_are_decoded() -> None:
    sa = cm.ike_sa(3, "ESTABLISHED")
    sa["local-vips"] = [b"10.100.0.65"]  # list_vips() in vici_query.c
    obs = decode_event("ike-updown", cm.ike_updown(CONN, sa, up=True))
    assert isinstance(obs, IkeUpdown) and obs.sa.local_vips == ("10.100.0.65",)
    sa["local-vips"] = b"10.100.0.65"
    assert isinstance(decode_event("ike-updown", cm.ike_updown(CONN, sa, up=True)), Undecodable)


def test_ike_updown_down_has_no_up_key() -> None:
    msg = cm.ike_updown(CONN, cm.ike_sa(3, "DELETING"), up=False)
    assert "up" not in msg
    obs = decode_event("ike-updown", msg)
    assert isinstance(obs, IkeUpdown)
    assert obs.up is False
    assert obs.sa.state == "DELETING"


def test_child_updown_carries_the_one_child_with_counters() -> None:
    kid = cm.child_sa(
        "net", 7, "INSTALLED", bytes_in=84, packets_in=1, bytes_out=168, packets_out=2
    )
    msg = cm.child_updown(CONN, cm.ike_sa(3), kid, up=True)
    obs = decode_event(b"child-updown", msg)
    child = ChildSaInfo(
        "net", 7, "INSTALLED", packets_in=1, bytes_in=84, packets_out=2, bytes_out=168
    )
    assert obs == ChildUpdown(
        sa=IkeSaInfo(CONN, 3, "ESTABLISHED", "10.99.1.2", "10.99.0.1", (child,)),
        child=child,
        up=True,
    )


def test_child_updown_down_in_created_state_has_no_counters() -> None:
    msg = cm.child_updown(CONN, cm.ike_sa(3), cm.child_sa("net", 8, "CREATED"), up=False)
    obs = decode_event(b"child-updown", msg)
    assert isinstance(obs, ChildUpdown)
    assert obs.child == ChildSaInfo("net", 8, "CREATED")
    assert obs.up is False


def test_ike_rekey() -> None:
    msg = cm.ike_rekey(CONN, cm.ike_sa(3, "REKEYED"), cm.ike_sa(4, "ESTABLISHED"))
    obs = decode_event(b"ike-rekey", msg)
    assert isinstance(obs, IkeRekey)
    assert (obs.old.unique_id, obs.old.state) == (3, "REKEYED")
    assert (obs.new.unique_id, obs.new.state, obs.new.name) == (4, "ESTABLISHED", CONN)


def test_child_rekey() -> None:
    """vici_query.c child_rekey() (5.9.8 and 6.x): the old and the new CHILD_SA under the
    child's name; issue 26: without it extsock kept the old CHILD_SA's unique id."""
    msg = cm.child_rekey(
        CONN, cm.ike_sa(3), cm.child_sa("net", 7, "REKEYED"), cm.child_sa("net", 9, "INSTALLED")
    )
    obs = decode_event(b"child-rekey", msg)
    assert isinstance(obs, ChildRekey)
    assert (obs.sa.name, obs.sa.unique_id, obs.sa.children) == (CONN, 3, ())
    assert (obs.old.name, obs.old.unique_id, obs.old.state) == ("net", 7, "REKEYED")
    assert (obs.new.name, obs.new.unique_id, obs.new.state) == ("net", 9, "INSTALLED")


def test_ike_update_new_addresses_at_top_old_in_section() -> None:
    msg = cm.ike_update(CONN, cm.ike_sa(3), ("10.99.0.5", 4500), ("10.99.1.9", 4500))
    obs = decode_event(b"ike-update", msg)
    assert isinstance(obs, IkeUpdate)
    assert (obs.local_host, obs.remote_host) == ("10.99.0.5", "10.99.1.9")
    assert obs.sa.remote_host == "10.99.1.2"


def test_log_with_ike_sa() -> None:
    msg = cm.log("retransmit 2 of request with message ID 0", ike_name=CONN, ike_id=1, thread=13)
    assert decode_event(b"log", msg) == LogLine(
        group="IKE",
        level=1,
        message="retransmit 2 of request with message ID 0",
        ike_name=CONN,
        ike_id=1,
        thread=13,
    )


def test_log_without_ike_sa() -> None:
    msg = cm.log("error writing to socket: Network is unreachable", group="NET", thread=3)
    assert decode_event(b"log", msg) == LogLine(
        "NET", 1, "error writing to socket: Network is unreachable", thread=3
    )


def test_log_non_utf8_message_is_replaced_not_refused() -> None:
    obs = decode_event(b"log", cm.log(b"peer id \xff\xfe", ike_name=CONN, ike_id=1))
    assert isinstance(obs, LogLine)
    assert obs.message == "peer id \ufffd\ufffd"


def test_alert_with_ike_sa() -> None:
    msg = cm.alert("peer-init-unreachable", CONN, cm.ike_sa(5, "CONNECTING"))
    assert decode_event(b"alert", msg) == Alert(
        kind="peer-init-unreachable",
        ike_name=CONN,
        ike_id=5,
        message="CONNECTING 10.99.0.1 -> 10.99.1.2",
    )


def test_alert_without_ike_sa() -> None:
    assert decode_event(b"alert", cm.alert("shutdown-signal")) == Alert("shutdown-signal")


def test_list_sa_with_children() -> None:
    sa = cm.ike_sa(2, children=[cm.child_sa("net", 4, packets_in=5, bytes_in=420)])
    info = parse_list_sa(cm.list_sa(CONN, sa))
    assert info.children == (ChildSaInfo("net", 4, "INSTALLED", packets_in=5, bytes_in=420),)


def _without(message: OrderedDict[str, Any], *path: str) -> OrderedDict[str, Any]:
    section: Any = message
    for key in path[:-1]:
        section = section[key]
    del section[path[-1]]
    return message


MALFORMED: list[tuple[str, object, str]] = [
    (
        "ike-updown",
        _without(cm.ike_updown(CONN, cm.ike_sa(), True), CONN, "uniqueid"),
        "missing 'uniqueid'",
    ),
    (
        "ike-updown",
        _without(cm.ike_updown(CONN, cm.ike_sa(), True), CONN, "state"),
        "missing 'state'",
    ),
    ("ike-updown", OrderedDict(up=b"yes"), "expected one IKE_SA section, found 0"),
    (
        "ike-updown",
        cm.ike_updown(CONN, OrderedDict(cm.ike_sa(), uniqueid=b"x1"), True),
        "'uniqueid' is b'x1', expected an integer",
    ),
    (
        "ike-updown",
        cm.ike_updown(CONN, OrderedDict(cm.ike_sa(), uniqueid=b"\xff"), True),
        "expected an integer",
    ),
    ("ike-updown", OrderedDict([("a", cm.ike_sa()), ("b", cm.ike_sa())]), "found 2"),
    (
        "ike-updown",
        cm.ike_updown(CONN, OrderedDict(cm.ike_sa(), state=[b"x"]), True),
        "'state' is a list",
    ),
    ("child-updown", cm.ike_updown(CONN, cm.ike_sa(), True), "found 0"),
    (
        "child-updown",
        cm.ike_updown(CONN, OrderedDict(cm.ike_sa(), **{"child-sas": b"x"}), True),
        "'child-sas' is a bytes, expected a section",
    ),
    ("ike-rekey", OrderedDict([(CONN, OrderedDict(old=cm.ike_sa()))]), "missing 'new'"),
    ("ike-update", OrderedDict([("local-host", b"1.2.3.4")]), "found 0"),
    ("log", _without(cm.log("x"), "msg"), "missing 'msg'"),
    ("log", OrderedDict(cm.log("x"), level=b"high"), "'level' is b'high'"),
    (
        "log",
        OrderedDict(cm.log("x", ike_name=CONN, ike_id=1), **{"ikesa-uniqueid": b""}),
        "expected an integer",
    ),
    ("alert", OrderedDict(), "missing 'type'"),
    ("alert", OrderedDict(type=b"x", **{"ike-sa": b"y"}), "expected a section"),
    ("log", None, "message is a NoneType"),
    ("log", [b"x"], "message is a list"),
    ("child-rekey", OrderedDict(), "found 0"),
    (
        "child-rekey",
        cm.child_rekey(CONN, cm.ike_sa(), OrderedDict(name=b"net"), cm.child_sa()),
        "missing 'uniqueid'",
    ),
    ("child-rekey", cm.ike_updown(CONN, cm.ike_sa(), True), "missing 'child-sas'"),
    ("ike-state", OrderedDict(), "unknown event"),
]


@pytest.mark.parametrize(("event", "message", "reason"), MALFORMED)
def test_malformed_is_undecodable(event: str, message: object, reason: str) -> None:
    obs = decode_event(event.encode(), message)
    assert isinstance(obs, Undecodable)
    assert obs.event_name == event
    assert reason in obs.reason


def test_non_utf8_event_name() -> None:
    obs = decode_event(b"ike-\xffupdown", OrderedDict())
    assert obs == Undecodable("ike-\ufffdupdown", "event name is not UTF-8")


def test_no_event_name() -> None:
    assert isinstance(decode_event(None, None), Undecodable)


def test_strange_mapping_never_raises() -> None:
    class Exploding(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("boom")

    obs = decode_event(b"ike-updown", Exploding())
    assert obs == Undecodable("ike-updown", "RuntimeError: boom")
