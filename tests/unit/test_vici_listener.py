"""ViciEventListener against the fake charon: delivery, alert support, restarts, stop()."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import tenacity
from vici.protocol import Message, Packet

from extsock_py.adapters.vici.commands import ViciCharon
from extsock_py.adapters.vici.dialects import choose
from extsock_py.adapters.vici.listener import Coalescing, ViciEventListener, log_prefilter
from extsock_py.adapters.vici.transport import FrameReader, send_frame
from extsock_py.domain.observations import (
    Alert,
    CharonBack,
    CharonLost,
    ChildUpdown,
    IkeUpdown,
    LogLine,
    Observation,
    Undecodable,
)
from tests.fakes import charon_messages as cm
from tests.fakes.fake_charon import FakeCharon

CONN = "home@10.99.1.2"
BODY = {"remote_addrs": ["10.99.1.2"], "children": {"net": {"local_ts": ["10.100.0.0/24"]}}}


ObsT = TypeVar("ObsT")


class Inbox:
    """Collects delivered observations; tests wait on a condition, never sleep."""

    def __init__(self) -> None:
        self.items: list[Observation] = []
        self._cond = threading.Condition()

    def __call__(self, obs: Observation) -> None:
        with self._cond:
            self.items.append(obs)
            self._cond.notify_all()

    def wait(self, pred: Callable[[list[Observation]], bool], timeout: float = 1.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.items), timeout)

    def wait_for_type(self, kind: type[ObsT], count: int = 1, timeout: float = 1.0) -> list[ObsT]:
        assert self.wait(lambda xs: sum(isinstance(x, kind) for x in xs) >= count, timeout), (
            f"no {count} {kind.__name__} in {self.items}"
        )
        return [x for x in self.items if isinstance(x, kind)]


FAST = tenacity.wait_fixed(0.01)


@pytest.fixture
def fake() -> Iterator[FakeCharon]:
    with FakeCharon() as f:
        yield f


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def listener(fake: FakeCharon, inbox: Inbox) -> Iterator[ViciEventListener]:
    lst = ViciEventListener(inbox, fake.uri, connect_timeout=0.5, wait=FAST)
    lst.start()
    assert lst.wait_ready(1.0)
    yield lst
    lst.stop()


def test_constructor_has_no_side_effects(fake: FakeCharon, inbox: Inbox) -> None:
    lst = ViciEventListener(inbox, fake.uri)
    assert not lst.running
    assert fake.client_count == 0


def test_registers_events_and_alert_refused_by_598(
    fake: FakeCharon, listener: ViciEventListener
) -> None:
    assert [e for sign, e in fake.registrations if sign == "+"] == [
        "ike-updown",
        "child-updown",
        "ike-rekey",
        "child-rekey",
        "ike-update",
        "log",
        "alert",
    ]
    assert listener.alert_supported is False


def test_alert_registered_when_charon_knows_it(inbox: Inbox) -> None:
    with FakeCharon(version="6.0.3", alert_supported=True) as fake:
        lst = ViciEventListener(inbox, fake.uri, wait=FAST)
        lst.start()
        assert lst.wait_ready(1.0)
        assert lst.alert_supported is True
        fake.emit("alert", cm.alert("retransmit-send", CONN, cm.ike_sa(4, "CONNECTING")))
        [alert] = inbox.wait_for_type(Alert)
        assert alert == Alert("retransmit-send", CONN, 4, "CONNECTING 10.99.0.1 -> 10.99.1.2")
        lst.stop()


def test_delivers_decoded_events(
    fake: FakeCharon, inbox: Inbox, listener: ViciEventListener
) -> None:
    fake.emit("ike-updown", cm.ike_updown(CONN, cm.ike_sa(3), up=True))
    fake.emit("log", cm.log("retransmit 1 of request with message ID 0", ike_name=CONN, ike_id=3))
    [up] = inbox.wait_for_type(IkeUpdown)
    assert up.up and up.sa.unique_id == 3
    [line] = inbox.wait_for_type(LogLine)
    assert line.ike_id == 3


def test_initiate_with_events_and_commands_on_two_sessions(
    fake: FakeCharon, inbox: Inbox, listener: ViciEventListener
) -> None:
    with ViciCharon(fake.uri) as charon:
        charon.load_conn(CONN, BODY)
        charon.initiate(CONN, "net")
        [child] = inbox.wait_for_type(ChildUpdown)
        assert child.up and child.child.name == "net"
        assert any(isinstance(x, IkeUpdown) and x.up for x in inbox.items)
        assert fake.client_count == 2


def test_silent_gateway_emits_initiating_line_then_test_pushes_retransmits(
    fake: FakeCharon, inbox: Inbox, listener: ViciEventListener
) -> None:
    fake.silent.add("10.99.1.2")
    with ViciCharon(fake.uri) as charon:
        charon.load_conn(CONN, BODY)
        charon.initiate(CONN, "net")
        [first] = inbox.wait_for_type(LogLine)
        assert first.message == f"initiating IKE_SA {CONN}[1] to 10.99.1.2"
        assert (first.ike_name, first.ike_id, first.level) == (CONN, 1, 0)
        fake.retransmit(1, 1)
        lines = inbox.wait_for_type(LogLine, 2)
        assert lines[1].message == "retransmit 1 of request with message ID 0"
        assert not any(isinstance(x, IkeUpdown) for x in inbox.items)
        assert charon.list_sas()[0].state == "CONNECTING"


def test_on_initiate_script(fake: FakeCharon, inbox: Inbox, listener: ViciEventListener) -> None:
    seen: list[dict[str, object]] = []
    called = threading.Event()

    def on_initiate(f: FakeCharon, msg: dict[str, object]) -> None:
        seen.append(msg)
        called.set()

    fake.on_initiate = on_initiate
    with ViciCharon(fake.uri) as charon:
        charon.load_conn(CONN, BODY)
        charon.initiate(CONN, "net")
    # the fake runs the script after it answered: wait for it, bounded
    assert called.wait(2.0)
    assert seen == [{"ike": CONN.encode(), "child": b"net", "timeout": b"-1"}]


def test_malformed_messages_become_undecodable_and_listening_goes_on(
    fake: FakeCharon, inbox: Inbox, listener: ViciEventListener
) -> None:
    fake.emit("ike-updown", {"up": "yes"})
    # a section name that is not UTF-8: vici's own parser refuses it
    fake.emit_raw(b"ike-updown", b"\x01\x02\xff\xfe\x02", registered_as="ike-updown")
    fake.emit_raw(b"log", b"\x09garbage", registered_as="log")
    fake.emit("log", cm.log("still here"))
    bad = inbox.wait_for_type(Undecodable, 3)
    assert [b.event_name for b in bad] == ["ike-updown", "ike-updown", "log"]
    assert "UnicodeDecodeError" in bad[1].reason
    [line] = inbox.wait_for_type(LogLine)
    assert line.message == "still here"


def test_charon_restart_gives_lost_once_then_back(
    fake: FakeCharon, inbox: Inbox, listener: ViciEventListener
) -> None:
    fake.stop()
    [lost] = inbox.wait_for_type(CharonLost)
    assert fake.uri in lost.reason
    assert not listener.wait_ready(0.05)
    fake.start()
    inbox.wait_for_type(CharonBack)
    assert listener.wait_ready(1.0)
    assert [type(x) for x in inbox.items] == [CharonLost, CharonBack]
    fake.emit("log", cm.log("after restart"))
    inbox.wait_for_type(LogLine)


def test_events_during_registration_come_after_charon_back(
    fake: FakeCharon, inbox: Inbox, listener: ViciEventListener
) -> None:
    def push(f: FakeCharon, event: str) -> None:
        if event == "log":
            f.emit("ike-updown", cm.ike_updown(CONN, cm.ike_sa(9), up=True))

    fake.on_register = push
    fake.close_clients()
    inbox.wait_for_type(IkeUpdown)
    assert [type(x) for x in inbox.items] == [CharonLost, CharonBack, IkeUpdown]


def test_close_clients_then_back(
    fake: FakeCharon, inbox: Inbox, listener: ViciEventListener
) -> None:
    fake.close_clients()
    inbox.wait_for_type(CharonBack)
    assert [type(x) for x in inbox.items] == [CharonLost, CharonBack]


def test_backoff_uses_injected_wait_and_sleep(fake: FakeCharon, inbox: Inbox) -> None:
    slept: list[float] = []
    gate = threading.Event()

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) >= 3:
            fake.start()
            gate.set()

    lst = ViciEventListener(
        inbox, fake.uri, wait=tenacity.wait_exponential(multiplier=0.1, max=2.0), sleep=sleep
    )
    lst.start()
    assert lst.wait_ready(1.0)
    fake.stop()
    assert gate.wait(1.0)
    inbox.wait_for_type(CharonBack)
    assert slept[:3] == [0.1, 0.2, 0.4]
    lst.stop()


def test_charon_absent_at_start(inbox: Inbox) -> None:
    fake = FakeCharon()
    with fake:
        fake.stop()
        lst = ViciEventListener(inbox, fake.uri, wait=FAST)
        lst.start()
        [lost] = inbox.wait_for_type(CharonLost)
        assert "cannot connect" in lost.reason
        fake.start()
        inbox.wait_for_type(CharonBack)
        lst.stop()


def test_stop_is_prompt_while_listening(fake: FakeCharon, inbox: Inbox) -> None:
    lst = ViciEventListener(inbox, fake.uri)
    lst.start()
    assert lst.wait_ready(1.0)
    t0 = time.monotonic()
    lst.stop()
    assert time.monotonic() - t0 < 0.5
    assert not lst.running
    assert not any(isinstance(x, CharonLost) for x in inbox.items)


def test_stop_is_prompt_while_backing_off(fake: FakeCharon, inbox: Inbox) -> None:
    fake.stop()
    lst = ViciEventListener(inbox, fake.uri, wait=tenacity.wait_fixed(30))
    lst.start()
    inbox.wait_for_type(CharonLost)
    t0 = time.monotonic()
    lst.stop()
    assert time.monotonic() - t0 < 0.5
    assert not lst.running


def test_a_failing_callback_does_not_kill_the_thread(fake: FakeCharon) -> None:
    got = Inbox()

    def deliver(obs: Observation) -> None:
        if isinstance(obs, LogLine) and obs.message == "boom":
            raise RuntimeError("consumer bug")
        got(obs)

    lst = ViciEventListener(deliver, fake.uri)
    lst.start()
    assert lst.wait_ready(1.0)
    fake.emit("log", cm.log("boom"))
    fake.emit("log", cm.log("fine"))
    [line] = got.wait_for_type(LogLine)
    assert line.message == "fine"
    lst.stop()


def test_log_prefilter_drops_chatter_before_decoding(fake: FakeCharon) -> None:
    got = Inbox()
    lst = ViciEventListener(got, fake.uri, keep_log=log_prefilter(MEANINGFUL_LOG_PREFIXES))
    lst.start()
    assert lst.wait_ready(1.0)
    try:
        fake.emit("log", cm.log("sending DPD request", ike_name=CONN, ike_id=3))
        fake.emit("log", cm.log(b"\xff not utf-8 chatter", ike_name=CONN, ike_id=3))
        fake.emit("log", cm.log("retransmit 1 of request with message ID 2", ike_name=CONN))
        fake.emit("ike-updown", cm.ike_updown(CONN, cm.ike_sa(3), up=False))
        got.wait_for_type(IkeUpdown)
    finally:
        lst.stop()
    lines = [x for x in got.items if isinstance(x, LogLine)]
    assert [line.message for line in lines] == ["retransmit 1 of request with message ID 2"]
    assert lst.dropped_logs == 2
    assert not any(isinstance(x, Undecodable) for x in got.items)


# What the 5.9 dialect reads from the log (no alerts): every prefix of its rules.
MEANINGFUL_LOG_PREFIXES = choose("5.9.8").dialect.reader(alerts=False).log_prefixes


@pytest.mark.parametrize(
    "message",
    [
        "initiating IKE_SA home@10.0.0.1[3] to 10.0.0.1",
        "retransmit 1 of request with message ID 2",
        "path probing attempt 2",
        "giving up after 5 retransmits",
        "giving up after 3 path probings",
        "establishing IKE_SA failed, peer not responding",
        "no route found to reach 10.0.0.1, MOBIKE update deferred",
        "received AUTHENTICATION_FAILED notify error",
    ],
)
def test_prefilter_keeps_every_line_the_usecase_wants(message: str) -> None:
    """The prefilter must never drop a line the dialect turns into a signal."""
    line = LogLine("IKE", 1, message, ike_name="home@10.0.0.1", ike_id=3)
    assert choose("5.9.8").dialect.reader(alerts=False).translate(line) is not None
    payload = Message.serialize(cm.log(message, ike_name="home@10.0.0.1", ike_id=3))
    assert log_prefilter(MEANINGFUL_LOG_PREFIXES).search(bytes(payload))


@pytest.mark.parametrize(
    "message",
    [
        "sending DPD request",
        "generating INFORMATIONAL request 7 [ ]",
        "sending packet: from 10.99.1.1[4500] to 10.99.1.2[4500] (80 bytes)",
        "received packet: from 10.99.1.2[4500] to 10.99.1.1[4500] (80 bytes)",
        "parsed INFORMATIONAL response 7 [ ]",
    ],
)
def test_prefilter_drops_each_line_of_a_dpd_exchange(message: str) -> None:
    payload = Message.serialize(cm.log(message, ike_name="home@10.0.0.1", ike_id=3))
    assert not log_prefilter(MEANINGFUL_LOG_PREFIXES).search(bytes(payload))


def test_prefilter_reads_the_msg_value_not_other_keys() -> None:
    keep = log_prefilter(MEANINGFUL_LOG_PREFIXES)
    decoy = Message.serialize(cm.log("sending DPD request", ike_name="retransmit 1@x", ike_id=3))
    assert not keep.search(bytes(decoy))


def _chatter_then_eof(*messages: str, chunk: int = 65536) -> FrameReader:
    """A reader over a socketpair holding `log` events, then end of stream."""
    ours, theirs = socket.socketpair()
    with theirs:
        for text in messages:
            payload = bytes(Message.serialize(cm.log(text, ike_name=CONN, ike_id=3)))
            send_frame(theirs, bytes([Packet.EVENT, 3]) + b"log" + payload)
    return FrameReader(ours, chunk=chunk)


def test_no_pause_while_behind() -> None:
    """Reads that fill the whole chunk (charon has written more than one read takes) are
    not followed by a pause: pauses would cap the listener at a chunk per window."""
    clock = itertools.count(0.0, 1.0)  # a second per look: every read judges the rate
    lst = ViciEventListener(
        Inbox(),
        "unix:///nowhere",
        keep_log=log_prefilter(MEANINGFUL_LOG_PREFIXES),
        coalescing=Coalescing(window=0.0, above=0.5),  # a dropped line per read is chatter
        monotonic=lambda: next(clock),
    )
    reader = _chatter_then_eof(*["sending DPD request"] * 10, chunk=64)  # reads of 64 bytes
    assert lst._listen(reader).startswith("lost charon")
    assert lst.pauses == 1  # only after the last read, the one shorter than the chunk
    assert lst.dropped_logs == 10


@pytest.mark.parametrize(
    ("rate_above", "messages", "pauses"),
    [
        (5.0, ["sending DPD request"] * 10, 1),  # 10 dropped over 1 s: chatter, pause once
        (50.0, ["sending DPD request"] * 10, 0),  # below the rate: never a pause
        (5.0, ["sending DPD request"] * 9 + ["retransmit 1 of request with message ID 2"], 0),
    ],
)
def test_coalescing_pauses_only_after_chatter(
    rate_above: float, messages: list[str], pauses: int
) -> None:
    """The read before end of stream is judged: a pause only if it held nothing but dropped
    lines and they came faster than the threshold (fake clock: all 10 within 1 s)."""
    now = [0.0]
    lst = ViciEventListener(
        Inbox(),
        "unix:///nowhere",
        keep_log=log_prefilter(MEANINGFUL_LOG_PREFIXES),
        coalescing=Coalescing(window=0.0, above=rate_above),
        monotonic=lambda: now[0],
    )
    now[0] = 1.0
    reader = _chatter_then_eof(*messages)
    assert lst._listen(reader).startswith("lost charon")
    assert lst.pauses == pauses
