"""The running Daemon, in-process, against the fake charon over the real VICI wire protocol.

Bad events (malformed, undecodable, for connections nobody manages, or that make a
handler fail) are logged and skipped; charon restarting, the command session breaking
alone, a command failing with CharonUnreachable, a reload while charon is away: the loop
keeps running and converges again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from extsock_py.adapters.clock import SystemClock
from extsock_py.adapters.config_reader import read_desired_config
from extsock_py.adapters.reports_json import row_json
from extsock_py.adapters.vici.commands import ViciCharon
from extsock_py.adapters.vici.dialects import choose
from extsock_py.adapters.vici.listener import ViciEventListener
from extsock_py.adapters.vici.pool import ViciCharonPool
from extsock_py.domain import observations as ob
from extsock_py.domain.errors import CharonUnreachable
from extsock_py.domain.persisted import SavedConnection
from extsock_py.domain.reports import ConnectionStatus
from extsock_py.mainloop import MainLoop
from extsock_py.usecases.daemon_service import DaemonOptions, DaemonService, Listener
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes import charon_messages as cm
from tests.fakes.fake_charon import FakeCharon
from tests.fakes.ports import MemoryStateStore, RecordingPublisher

GW1, GW2 = "10.99.1.2", "10.99.2.2"
CONF = """
connections {
    home {
        version = 2
        remote_addrs = 10.99.1.2, 10.99.2.2
        local { auth = psk
                id = ini.test }
        remote { auth = psk
                 id = segw.test }
        children { net { local_ts = 10.100.0.0/24
                         remote_ts = 10.200.0.0/24 } }
    }
    plain {
        remote_addrs = 192.0.2.9
        local { auth = psk }
        remote { auth = psk }
        children { lan { remote_ts = 192.0.2.0/24 } }
    }
}
secrets {
    ike-lab { secret = lab-secret-0123 }
}
extsock {
    connect_timeout = 2s
    backoff { initial = 100ms
              maximum = 200ms }
}
"""


@dataclass
class Running:
    fake: FakeCharon
    daemon: MainLoop[DaemonService]
    publisher: RecordingPublisher
    store: MemoryStateStore
    conf: Path
    thread: threading.Thread

    def on_loop(self, work: Any) -> Any:
        return self.daemon.submit(work).result(5.0)

    def status(self) -> dict[str, Any]:
        rows: list[ConnectionStatus] = self.on_loop(
            lambda: self.daemon.service.manager.status("home")
        )
        return row_json(rows[0])

    def wait(self, predicate: Any, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return bool(predicate())

    def clone_sa(self, gateway: str) -> tuple[int, Any]:
        for uid, (name, sa) in self.fake.sas.items():
            if name == f"home@{gateway}":
                return uid, sa
        raise KeyError(gateway)


def _start(
    tmp_path: Path,
    store: MemoryStateStore | None = None,
    charon_first: bool = True,
    fake: FakeCharon | None = None,
    lanes: int = 0,
) -> Running:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF)
    if fake is None:  # else: one the test started and filled already
        fake = FakeCharon()
        fake._dir = str(tmp_path / "charon")  # the socket's path is known before charon starts
        Path(fake._dir).mkdir()
        if charon_first:
            fake.start()
    clock = SystemClock()
    publisher = RecordingPublisher()
    store = store if store is not None else MemoryStateStore()
    pool = ViciCharonPool(fake.uri, lanes=lanes, command_timeout=5.0) if lanes else None
    charon = pool if pool is not None else ViciCharon(fake.uri, command_timeout=5.0)
    manager = FailoverManager(charon, clock, publisher, store, lanes=pool)

    def make_listener(deliver: Any) -> Listener:
        return ViciEventListener(deliver, fake.uri, dialects=choose)

    service = DaemonService(
        DaemonOptions(conf), charon, make_listener, read_desired_config, clock, publisher, manager
    )
    daemon = MainLoop(service, clock.monotonic)
    if pool is not None:  # as app.py wires them
        pool.post = daemon.submit
        daemon.on_stopping.append(pool.stopping)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # the test fails on any
            errors.append(exc)

    thread = threading.Thread(target=run, name="daemon-under-test", daemon=True)
    thread.start()
    assert daemon.ready.wait(5.0), errors
    return Running(fake, daemon, publisher, store, conf, thread)


@pytest.fixture(params=[0, 3], ids=["one-session", "3-lanes"])
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    r = _start(tmp_path, lanes=request.param)
    try:
        assert r.wait(lambda: r.status()["phase"] == "up")
        yield r
    finally:
        r.daemon.request_stop()
        r.thread.join(5.0)
        r.fake.stop()
        assert not r.thread.is_alive()


def _alive(r: Running) -> bool:
    return r.thread.is_alive() and r.on_loop(lambda: True) is True


# --- bad events -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        (b"ike-updown", b"\x07\x09garbage"),  # does not deserialize
        (b"ike-updown", b""),  # empty message
        (b"child-updown", b"\x01\x03key"),  # truncated section
        (b"\xff\xfe", b""),  # event name not UTF-8
        # a line the dialect's prefilter keeps (its msg matters), with a bad level
        (b"log", b"\x03\x05level\x00\x02xx\x03\x03msg\x00\x0bretransmit "),
    ],
)
def test_malformed_event_is_logged_and_skipped(
    running: Running, caplog: pytest.LogCaptureFixture, name: bytes, payload: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    skipped = running.daemon.service.events.skipped
    registered = "ike-updown" if name == b"\xff\xfe" else name.decode()
    assert running.fake.emit_raw(name, payload, registered_as=registered) == 1
    assert running.wait(lambda: running.daemon.service.events.skipped > skipped), caplog.text
    assert "skipped" in caplog.text
    assert _alive(running)
    _failover_still_works(running)


@pytest.mark.parametrize(
    "message",
    [
        {"up": "yes"},  # no IKE_SA section
        {"home@10.99.1.2": "not a section"},
        {"home@10.99.1.2": {"uniqueid": "NaN", "state": "ESTABLISHED"}},
        {"home@10.99.1.2": {"uniqueid": "1"}, "second": {"uniqueid": "2"}},
    ],
)
def test_undecodable_updown_is_skipped(running: Running, message: dict[str, Any]) -> None:
    skipped = running.daemon.service.events.skipped
    running.fake.emit("ike-updown", message)
    assert running.wait(lambda: running.daemon.service.events.skipped > skipped)
    assert running.status()["phase"] == "up"
    _failover_still_works(running)


@pytest.mark.parametrize("conn", ["stranger", "plain", "stranger@10.99.1.2", "home@192.0.2.77"])
def test_event_for_an_unknown_connection_changes_nothing(running: Running, conn: str) -> None:
    before = running.status()
    processed = running.daemon.service.events.processed
    sa = cm.ike_sa(99, "ESTABLISHED", remote_host="192.0.2.77")
    running.fake.emit("ike-updown", cm.ike_updown(conn, sa, up=False))
    running.fake.emit_log("retransmit 1 of request with message ID 2", ike_name=conn, ike_id=99)
    # a log line of a name that is no clone is dropped before the loop: it is not processed
    expected = processed + (2 if "@" in conn else 1)
    assert running.wait(lambda: running.daemon.service.events.processed >= expected)
    after = running.status()
    assert after["phase"] == "up" and after["active_gateway"] == before["active_gateway"]
    assert after["failures_total"] == before["failures_total"]
    _failover_still_works(running)


BOOM = "retransmit 7 of request with message ID 9"  # a line that reaches the handler


def test_a_handler_that_raises_is_logged_and_skipped(
    running: Running, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = running.daemon.service.events.observe

    def explode(obs: ob.Observation) -> None:
        if isinstance(obs, ob.IkeSignal) and obs.detail == BOOM:
            raise RuntimeError("handler bug")
        original(obs)

    monkeypatch.setattr(running.daemon.service.events, "observe", explode)
    running.fake.emit_log(BOOM, ike_name=f"home@{GW1}", ike_id=1)
    assert running.wait(lambda: "handler bug" in caplog.text), caplog.text
    assert "skipped an event that could not be handled" in caplog.text
    assert _alive(running)
    _failover_still_works(running)


def _failover_still_works(r: Running) -> None:
    """The tunnel on GW1 dies: the daemon moves it to GW2 (the loop is alive and sane)."""
    uid, sa = r.clone_sa(GW1)
    del r.fake.sas[uid]
    r.fake.emit("ike-updown", cm.ike_updown(f"home@{GW1}", sa, up=False))
    assert r.wait(lambda: r.status()["active_gateway"] == GW2), r.status()


# --- charon and the command session going away ---------------------------------------------


def test_charon_restart_reloads_and_brings_the_tunnel_back(running: Running) -> None:
    loads = len(running.fake.commands("load-shared"))
    running.fake.stop()
    assert running.wait(lambda: not running.daemon.service.charon_reachable)
    assert "charon-lost" in running.publisher.kinds()
    running.fake.conns.clear()
    running.fake.sas.clear()
    running.fake.start()
    assert running.wait(lambda: "charon-back" in running.publisher.kinds())
    assert running.wait(lambda: f"home@{GW1}" in running.fake.conns)
    assert running.wait(lambda: running.status()["phase"] == "up"), running.status()
    assert running.daemon.service.charon_reachable
    assert len(running.fake.commands("load-shared")) > loads  # secrets loaded again
    assert set(running.fake.conns) == {"plain", f"home@{GW1}"}


def test_command_session_breaking_alone_reconnects_and_adopts(running: Running) -> None:
    """Only the command session drops (the event stream stays): a command fails with
    CharonUnreachable inside the loop; the loop survives, reconnects, adopts the SA."""
    initiates = len(running.fake.commands("initiate"))
    with running.fake._cond:  # drop the clients not registered for events (and lanes')
        commanders = [c for c in running.fake._clients if not c.events]
    assert 1 <= len(commanders) <= 1 + 3  # the command session, and the lanes
    for commander in commanders:
        commander.close()
    future = running.daemon.submit(lambda: running.daemon.service.charon.list_sas())
    with pytest.raises(CharonUnreachable):
        future.result(5.0)
    # the future fails before the loop marks charon lost: wait for the way back, not the flag
    assert running.wait(lambda: "charon-back" in running.publisher.kinds()), "no reconnect"
    assert running.wait(lambda: running.daemon.service.charon_reachable), "no reconnect"
    assert _alive(running)
    assert running.status()["phase"] == "up"
    assert len(running.fake.commands("initiate")) == initiates  # adopted, not re-initiated
    assert running.publisher.kinds().count("charon-lost") == 1
    assert running.publisher.kinds().count("charon-back") == 1


def test_a_lane_lost_mid_storm_is_charon_lost_then_everything_comes_back(
    tmp_path: Path,
) -> None:
    """Twenty connections start over three lanes; one lane's session breaks while its
    commands are under way (charon still runs): the loop sees charon lost, reconnects, and
    every tunnel comes up, each clone loaded before it is initiated."""
    names = [f"c{k}" for k in range(20)]
    extra = "".join(
        f"""
    {name} {{
        remote_addrs = 10.99.1.2, 10.99.2.2
        local {{ auth = psk }}
        remote {{ auth = psk }}
        children {{ net {{ remote_ts = 10.{k}.0.0/16 }} }}
    }}"""
        for k, name in enumerate(names)
    )
    fake = FakeCharon()
    fake._dir = str(tmp_path / "charon")
    Path(fake._dir).mkdir()
    fake.start()
    broke = threading.Event()

    def on_initiate(f: FakeCharon, message: dict[str, Any]) -> None:
        ike = message["ike"].decode()
        if ike == "c7@10.99.1.2" and not broke.is_set():
            broke.set()  # this lane's session drops before its answer is read
            with f._cond:
                lanes = [c for c in f._clients if not c.events]
            lanes[-1].close()
            return
        f.establish(ike, "net")

    fake.on_initiate = on_initiate
    (tmp_path / "swanctl.conf").write_text(CONF.replace("connections {", "connections {" + extra))
    r = _start(tmp_path, fake=fake, lanes=3)
    try:
        conf = tmp_path / "swanctl.conf"
        conf.write_text(CONF.replace("connections {", "connections {" + extra))
        r.daemon.request_reload()

        def all_up() -> bool:
            rows = r.on_loop(lambda: r.daemon.service.manager.status())
            return {row.connection: row.phase for row in rows} == {
                n: "up" for n in ["home", *names]
            }

        assert r.wait(all_up, 10.0)
        assert broke.is_set()
        assert _alive(r)
        for name in names:  # per clone, every initiate came after a load
            clone = f"{name}@{GW1}"
            order = [
                c.command
                for c in fake.commands()
                if c.command in ("load-conn", "initiate")
                and (clone in c.message or c.message.get("ike") == clone.encode())
            ]
            assert order and order[0] == "load-conn", (clone, order)
    finally:
        r.daemon.request_stop()
        r.thread.join(5.0)
        fake.stop()


def test_reload_while_charon_is_away_is_applied_when_it_is_back(running: Running) -> None:
    running.fake.stop()
    assert running.wait(lambda: not running.daemon.service.charon_reachable)
    running.conf.write_text(CONF.replace("    plain {", "    other {"))
    running.daemon.request_reload()
    assert running.wait(lambda: any(k == "charon-lost" for k in running.publisher.kinds()))
    running.fake.conns.clear()
    running.fake.sas.clear()
    running.fake.start()
    assert running.wait(lambda: "other" in running.fake.conns), running.fake.conns
    assert "plain" not in running.fake.conns
    assert running.wait(lambda: running.status()["phase"] == "up")


def test_daemon_start_restores_hold_and_failures(tmp_path: Path) -> None:
    store = MemoryStateStore()
    store.save_connection(
        "home", SavedConnection(gateway=GW2, phase="up", held=True, failures_total=4)
    )
    r = _start(tmp_path, store)
    try:
        assert r.wait(lambda: r.status()["phase"] == "up")
        status = r.status()
        assert status["held"] is True and status["failures_total"] == 4
    finally:
        r.daemon.request_stop()
        r.thread.join(5.0)
        r.fake.stop()


def test_daemon_started_before_charon_waits_for_it(tmp_path: Path) -> None:
    r = _start(tmp_path, charon_first=False)
    try:
        assert not r.daemon.service.charon_reachable
        assert "charon-lost" in r.publisher.kinds()
        assert _alive(r)
        r.fake.start()
        assert r.wait(lambda: r.daemon.service.charon_reachable), "never reached charon"
        assert r.wait(lambda: r.status()["phase"] == "up"), r.status()
        assert set(r.fake.conns) == {"plain", f"home@{GW1}"}
    finally:
        r.daemon.request_stop()
        r.thread.join(5.0)
        r.fake.stop()


def test_a_backlog_longer_than_one_iteration_loses_nothing(running: Running) -> None:
    """More queued items than one loop iteration handles (a storm of 1000 DELETEs queues
    2000 events): each is handled. The item taken as the budget ran out used to be lost."""
    gate = threading.Event()
    blocker = running.daemon.submit(lambda: gate.wait(5.0))
    handled: list[int] = []
    futures = [running.daemon.submit(functools.partial(handled.append, k)) for k in range(2500)]
    gate.set()
    assert blocker.result(5.0)
    for future in futures:
        future.result(5.0)
    assert handled == list(range(2500))


# --- an as-written copy loaded outside extsock (strongswan.service's swanctl --load-all) ----


def _as_written_up(fake: FakeCharon) -> int:
    """What `swanctl --load-all` does with `start_action = start`: load as written, come up."""
    fake.conns["home"] = {"remote_addrs": [GW1, GW2], "children": {"net": {}}}
    return fake.establish("home", "net")


def test_charon_restart_then_swanctl_load_all_leaves_one_tunnel(running: Running) -> None:
    running.fake.stop()
    assert running.wait(lambda: not running.daemon.service.charon_reachable)
    running.fake.conns.clear()
    running.fake.sas.clear()
    running.fake.start()
    assert running.wait(lambda: running.status()["phase"] == "up"), running.status()
    _as_written_up(running.fake)  # after extsock came back, as ExecStartPost runs late
    assert running.wait(lambda: "home" not in running.fake.conns), running.fake.conns
    assert running.wait(lambda: [n for n, _ in running.fake.sas.values()] == [f"home@{GW1}"])
    _failover_still_works(running)
    assert [n for n, _ in running.fake.sas.values()] == [f"home@{GW2}"]
    assert "home" not in running.fake.conns


def test_extsock_started_after_swanctl_replaces_the_as_written_tunnel(tmp_path: Path) -> None:
    fake = FakeCharon()
    fake._dir = str(tmp_path / "charon")
    Path(fake._dir).mkdir()
    fake.start()
    first = _as_written_up(fake)  # swanctl --load-all before extsock starts
    r = _start(tmp_path, fake=fake)
    try:
        assert r.wait(lambda: "home" not in r.fake.conns), r.fake.conns
        assert r.wait(lambda: r.status()["phase"] == "up"), r.status()
        assert first not in r.fake.sas
        assert [n for n, _ in r.fake.sas.values()] == [f"home@{GW1}"]
    finally:
        r.daemon.request_stop()
        r.thread.join(5.0)
        r.fake.stop()
