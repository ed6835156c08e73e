"""ViciCharon against a fake charon speaking the real VICI wire protocol."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import vici

from extsock_py.adapters.vici.commands import ViciCharon, to_vici
from extsock_py.domain.credentials import (
    AuthorityLoad,
    CertificateLoad,
    KeyLoad,
    PoolLoad,
    SharedLoad,
)
from extsock_py.domain.errors import CharonCommandFailed, CharonError, CharonUnreachable
from extsock_py.domain.observations import ChildSaInfo, IkeSaInfo
from extsock_py.domain.secret import Secret
from extsock_py.interfaces.ports import CharonPort
from tests.fakes import fake_charon as fc
from tests.fakes.fake_charon import FakeCharon, Received

CONN = "home@10.99.1.2"
BODY = {
    "version": 2,
    "remote_addrs": ["10.99.1.2"],
    "local_addrs": ("10.99.0.1",),
    "mobike": False,
    "local": {"auth": "pubkey", "certs": [b"\x30\x82\x01\x0a"]},
    "remote": {"auth": "pubkey", "id": "gw"},
    "children": {
        "net": {
            "local_ts": ["10.100.0.0/24"],
            "remote_ts": ["10.200.0.0/24"],
            "esp_proposals": ["aes256gcm16"],
        }
    },
}


@pytest.fixture
def fake() -> Iterator[FakeCharon]:
    with FakeCharon() as f:
        yield f


@pytest.fixture
def charon(fake: FakeCharon) -> Iterator[ViciCharon]:
    c = ViciCharon(fake.uri, connect_timeout=0.5, command_timeout=2.0)
    c.connect()
    yield c
    c.close()


def test_is_a_charon_port(fake: FakeCharon) -> None:
    port: CharonPort = ViciCharon(fake.uri)
    assert port is not None


def test_constructor_has_no_side_effects(fake: FakeCharon) -> None:
    c = ViciCharon(fake.uri)
    assert not c.connected
    assert fake.client_count == 0
    with pytest.raises(CharonUnreachable, match="call connect"):
        c.version()


def test_load_conn_sends_name_section_lists_stay_lists_bytes_stay_bytes(
    fake: FakeCharon, charon: ViciCharon
) -> None:
    charon.load_conn(CONN, BODY)
    [sent] = fake.commands("load-conn")
    body = sent.message[CONN]
    assert body["remote_addrs"] == [b"10.99.1.2"]
    assert body["local_addrs"] == [b"10.99.0.1"]
    assert body["mobike"] == b"no"
    assert body["version"] == b"2"
    assert body["local"]["certs"] == [b"\x30\x82\x01\x0a"]
    assert body["children"]["net"]["local_ts"] == [b"10.100.0.0/24"]
    assert charon.list_conn_names() == [CONN]


def test_load_conn_refused_names_command_and_charon_reason(
    fake: FakeCharon, charon: ViciCharon
) -> None:
    with pytest.raises(CharonError) as info:
        charon.load_conn("bad", {"remote_addrs": "10.99.1.2"})
    assert str(info.value) == (
        "load-conn failed: CommandException: unknown option: remote_addrs, config discarded"
    )
    assert isinstance(info.value, CharonCommandFailed)
    assert info.value.command == "load-conn"
    assert info.value.errmsg == "unknown option: remote_addrs, config discarded"
    assert not isinstance(info.value, CharonUnreachable)
    charon.version()  # the session is still usable


@pytest.mark.parametrize("streamed", [False, True])
def test_a_refusal_without_errmsg_still_names_the_command(
    fake: FakeCharon, charon: ViciCharon, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """charon's answer `success = no` with no errmsg (vici itself raised KeyError there)."""
    monkeypatch.setitem(fc._HANDLERS, "list-sas", lambda f, c, m: {"success": "no"})
    monkeypatch.setitem(fc._HANDLERS, "stats", lambda f, c, m: {"success": "no"})
    with pytest.raises(CharonCommandFailed) as info:
        if streamed:
            charon.list_sas_raw()
        else:
            charon.stats()
    assert (info.value.command, info.value.errmsg) == (
        "list-sas" if streamed else "stats",
        "charon gave no reason",
    )
    assert charon.version()  # in step


def test_initiate_returns_at_once_with_timeout_minus_one(
    fake: FakeCharon, charon: ViciCharon
) -> None:
    charon.load_conn(CONN, BODY)
    charon.initiate(CONN, "net")
    assert fake.commands("initiate")[-1] == Received(
        "initiate", {"ike": CONN.encode(), "child": b"net", "timeout": b"-1"}
    )
    charon.initiate(CONN, None)
    assert fake.commands("initiate")[-1].message == {"ike": CONN.encode(), "timeout": b"-1"}


def test_initiate_unknown_config(fake: FakeCharon, charon: ViciCharon) -> None:
    with pytest.raises(
        CharonError,
        match=r"^initiate failed: CommandException: "
        r"CHILD_SA config 'net' not found$",
    ):
        charon.initiate("nope", "net")
    charon.version()


def test_terminate_forced_by_name_and_by_id(fake: FakeCharon, charon: ViciCharon) -> None:
    fake.add_sa(CONN)
    uid = fake.add_sa(CONN)
    charon.terminate(ike_id=uid)
    assert fake.commands("terminate")[-1].message == {
        "ike-id": str(uid).encode(),
        "force": b"yes",
        "timeout": b"-1",
    }
    charon.terminate(ike=CONN)
    assert fake.commands("terminate")[-1].message == {
        "ike": CONN.encode(),
        "force": b"yes",
        "timeout": b"-1",
    }
    assert charon.list_sas() == []


def test_terminate_nothing_matches(charon: ViciCharon) -> None:
    with pytest.raises(CharonError, match="terminate failed: CommandException: no matching SAs"):
        charon.terminate(ike=CONN)
    with pytest.raises(ValueError):
        charon.terminate()


def test_list_sas_decodes(fake: FakeCharon, charon: ViciCharon) -> None:
    charon.load_conn(CONN, BODY)
    uid = fake.add_sa(CONN, children=["net"], packets_in=3, bytes_in=252)
    fake.add_sa("other", "CONNECTING", remote_host="10.99.2.2")
    sas = charon.list_sas()
    assert sas[0] == IkeSaInfo(
        CONN,
        uid,
        "ESTABLISHED",
        "10.99.1.2",
        "10.99.0.1",
        (ChildSaInfo("net", uid, "INSTALLED", 3, 252),),
    )
    assert (sas[1].name, sas[1].state, sas[1].remote_host) == ("other", "CONNECTING", "10.99.2.2")
    raw = charon.list_sas_raw(ike="other")
    assert list(raw[0]) == ["other"]
    assert raw[0]["other"]["state"] == b"CONNECTING"
    assert fake.commands("list-sas")[-1].message == {"ike": b"other"}


def test_a_refused_listing_reads_as_vici_reports_it_and_the_session_goes_on(
    fake: FakeCharon, charon: ViciCharon
) -> None:
    fake.add_sa(CONN, children=["net"])
    fake.fail["list-sas"] = "no listing today"
    with pytest.raises(CharonError, match=r"^list-sas failed: CommandException: no listing today"):
        charon.list_sas_raw()
    with pytest.raises(CharonCommandFailed) as info:
        charon.streamed("list-sas", "list-sa")
    assert (info.value.command, info.value.errmsg) == ("list-sas", "no listing today")
    del fake.fail["list-sas"]
    assert [sa.name for sa in charon.list_sas()] == [CONN]  # unregistered: in step again
    assert len(fake.commands("list-sas")) == 3
    seen: list[tuple[str, dict[str, Any]]] = []
    events = charon.streamed("list-sas", "list-sa", on_event=lambda e, m: seen.append((e, m)))
    assert seen == [("list-sa", events[0])] and list(events[0]) == [CONN]


def test_raw_helpers(fake: FakeCharon, charon: ViciCharon) -> None:
    charon.load_conn(CONN, BODY)
    assert list(charon.list_conns_raw()[0]) == [CONN]
    assert charon.stats()["ikesas"]["total"] == b"0"
    assert charon.version() == {
        "daemon": "charon",
        "version": "5.9.8",
        "sysname": "Linux",
        "release": "6.1.0",
        "machine": "x86_64",
    }
    charon.load_shared(SharedLoad("ike-gw", "ike", Secret(b"secret"), ("gw",)))
    key_id = charon.load_key(KeyLoad("private/k", "any", Secret(b"\x30\x82")))
    charon.load_cert(CertificateLoad("x509ca/ca.pem", "X509", "CA", b"ca"))
    charon.load_cert(CertificateLoad("pubkey/p.pem", "PUBKEY", None, b"pk"))
    charon.load_authority(AuthorityLoad("ca", {"crl_uris": ["http://crl"]}))
    charon.load_pool(PoolLoad("p", {"addrs": "10.9.0.0/24", "dns": ["10.9.0.1"]}))
    assert fake.commands("load-shared")[0].message == {
        "id": b"ike-gw",
        "type": b"ike",
        "data": b"secret",
        "owners": [b"gw"],
    }
    assert fake.commands("load-key")[0].message == {"type": b"any", "data": b"\x30\x82"}
    assert [c.message for c in fake.commands("load-cert")] == [
        {"type": b"X509", "flag": b"CA", "data": b"ca"},
        {"type": b"PUBKEY", "data": b"pk"},
    ]
    assert charon.key_ids() == [key_id] and charon.shared_ids() == ["ike-gw"]
    assert charon.authority_names() == ["ca"] and charon.pool_names() == ["p"]
    assert key_id is not None
    charon.unload_key(key_id)
    charon.unload_shared("ike-gw")
    charon.unload_authority("ca")
    charon.unload_pool("p")
    assert charon.key_ids() == [] and charon.shared_ids() == []
    assert charon.authority_names() == [] and charon.pool_names() == []
    charon.unload_conn(CONN)
    assert charon.list_conn_names() == []


def test_unknown_command_is_charon_error_not_unreachable(charon: ViciCharon) -> None:
    with pytest.raises(CharonError, match="does not know 'get-rainbows'") as info:
        charon.request("get-rainbows")
    assert not isinstance(info.value, CharonUnreachable)
    charon.version()


def test_scripted_failure(fake: FakeCharon, charon: ViciCharon) -> None:
    fake.fail["load-shared"] = "loading shared key failed"
    with pytest.raises(CharonError, match=r"^load-shared failed: CommandException: loading"):
        charon.load_shared(SharedLoad("ike-x", "ike", Secret(b"x")))


def test_broken_socket_is_unreachable_then_reconnect(fake: FakeCharon) -> None:
    charon = ViciCharon(fake.uri, connect_timeout=0.5, command_timeout=2.0)
    charon.connect()
    fake.restart()
    with pytest.raises(CharonUnreachable, match=r"version failed: .*reconnect"):
        charon.version()
    assert not charon.connected
    with pytest.raises(CharonUnreachable, match="not connected"):
        charon.version()
    charon.reconnect()
    assert charon.version()["daemon"] == "charon"
    charon.close()


def test_connect_to_missing_charon() -> None:
    charon = ViciCharon("unix:///nonexistent/charon.vici", connect_timeout=0.2)
    with pytest.raises(CharonUnreachable, match=re.escape("unix:///nonexistent/charon.vici")):
        charon.connect()


def test_threads_share_one_session(fake: FakeCharon, charon: ViciCharon) -> None:
    charon.load_conn(CONN, BODY)
    for _ in range(3):
        fake.add_sa(CONN, children=["net"])
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                assert len(charon.list_sas()) == 3
                assert charon.list_conn_names() == [CONN]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert errors == []
    assert fake.client_count == 1


def test_to_vici_refuses_unknown_types() -> None:
    with pytest.raises(TypeError, match="float"):
        to_vici({"x": 1.5})


# --- load_and_initiate: two requests pipelined on the session ---------------------------------


def _commands(fake: FakeCharon) -> list[str]:
    return [r.command for r in fake.received]


def test_load_and_initiate_pipelines_both_requests(fake: FakeCharon, charon: ViciCharon) -> None:
    charon.load_and_initiate(CONN, BODY, "net")
    assert _commands(fake) == ["load-conn", "initiate"]
    assert fake.received[1].message == {"ike": CONN.encode(), "child": b"net", "timeout": b"-1"}
    assert CONN in fake.conns
    assert charon.version()  # the session is in step: nothing left unread


def test_load_and_initiate_reports_a_refused_initiate(fake: FakeCharon, charon: ViciCharon) -> None:
    fake.fail["initiate"] = "establishing CHILD_SA 'net' failed"
    with pytest.raises(
        CharonError, match=r"^initiate failed: .*establishing CHILD_SA 'net'"
    ) as info:
        charon.load_and_initiate(CONN, BODY, "net")
    assert isinstance(info.value, CharonCommandFailed)
    assert (info.value.command, info.value.errmsg) == (
        "initiate",
        "establishing CHILD_SA 'net' failed",
    )
    assert charon.version()


def test_a_refused_load_terminates_what_an_older_config_started(
    fake: FakeCharon, charon: ViciCharon
) -> None:
    """The initiate went out before the load's answer: if a config of that name was already
    there, it started; that SA is not what was asked for."""
    charon.load_conn(CONN, BODY)
    fake.fail["load-conn"] = "invalid section: x, config discarded"
    with pytest.raises(CharonError, match=r"^load-conn failed: .*config discarded"):
        charon.load_and_initiate(CONN, BODY, "net")
    assert _commands(fake) == ["load-conn", "load-conn", "initiate", "terminate"]
    assert fake.received[-1].message["ike"] == CONN.encode()
    assert charon.version()


def test_a_refused_load_with_no_older_config_terminates_nothing(
    fake: FakeCharon, charon: ViciCharon
) -> None:
    fake.fail["load-conn"] = "invalid section: x, config discarded"
    with pytest.raises(CharonError, match=r"^load-conn failed"):
        charon.load_and_initiate(CONN, BODY, None)
    assert _commands(fake) == ["load-conn", "initiate"]
    assert "child" not in fake.received[1].message


class _WireLog:
    """A vici.Session whose transport notes each frame sent (its command) and each read."""

    def __init__(self, sock: Any, wire: list[str]) -> None:
        self._session = vici.Session(sock)
        real = self._session.transport

        class _Transport:
            def send(self, packet: bytes) -> None:
                wire.append("send " + packet[2 : 2 + packet[1]].decode())
                real.send(packet)

            def receive(self, *args: Any) -> bytes:
                wire.append("read")
                return bytes(real.receive(*args))

        self.transport = _Transport()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def test_a_failover_after_a_quiet_cleanup_costs_one_round_trip(fake: FakeCharon) -> None:
    """On a lane, the previous failover's unload-conn is owed when the next load+initiate
    goes out: both requests are sent before its answer is read, so charon works through
    the three in one go (no round trip, no job of its own for the cleanup); then the
    three answers are read in order, the cleanup's first."""
    wire: list[str] = []
    charon = ViciCharon(
        fake.uri,
        connect_timeout=0.5,
        command_timeout=2.0,
        session_factory=lambda sock: _WireLog(sock, wire),
    )
    with charon:
        charon.load_conn("old", BODY)
        charon.send_quietly("unload-conn", {"name": "old"})
        del wire[:]
        charon.load_and_initiate(CONN, BODY, "net")
        assert wire == ["send load-conn", "send initiate", "read", "read", "read"]
        assert "old" not in fake.conns and CONN in fake.conns
        assert charon.version()  # in step: nothing left unread
    assert _commands(fake)[-4:] == ["unload-conn", "load-conn", "initiate", "version"]


def test_quiet_requests_are_read_before_the_next_answer(
    fake: FakeCharon, charon: ViciCharon
) -> None:
    """Cleanups sent without waiting: their answers (a refusal among them) are read in
    order before the next command's, which gets its own answer."""
    charon.load_conn(CONN, BODY)
    charon.send_quietly("unload-conn", {"name": "nothing-of-that-name"})  # refused: ignored
    charon.send_quietly("unload-conn", {"name": CONN})
    assert charon.version()["daemon"] == "charon"
    assert [c.command for c in fake.commands()][-3:] == ["unload-conn", "unload-conn", "version"]
    assert CONN not in fake.conns
    charon.send_quietly("unload-conn", {"name": CONN})
    charon.settle()
    assert charon.list_conn_names() == []
