"""DNS names in remote_addrs: resolved at each attempt, each address a gateway tried in turn."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from extsock_py.app import AppSettings, build_app
from extsock_py.domain import events as ev
from extsock_py.domain.failover import Phase
from extsock_py.domain.gateways import expand, is_name
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes.fake_charon import FakeCharon
from tests.fakes.ports import FakeCharonPort, FakeClock, RecordingPublisher
from tests.unit.test_control_support import short_dir, wait_until


class Hosts:
    """A resolver the test controls; counts its questions."""

    def __init__(self, **names: tuple[str, ...]) -> None:
        self.names = {k.replace("_", "."): v for k, v in names.items()}
        self.asked = 0

    def resolve(self, name: str) -> tuple[str, ...]:
        self.asked += 1
        return self.names.get(name, ())


def test_expand_keeps_order_and_replaces_each_name_by_its_addresses() -> None:
    resolved = {"gw.example": ("192.0.2.1", "192.0.2.2"), "gone.example": ()}
    configured = ("gw.example", "198.51.100.1", "gone.example", "192.0.2.2")
    assert expand(configured, resolved) == (
        "192.0.2.1",
        "192.0.2.2",
        "198.51.100.1",
        "gone.example",
    )
    assert is_name("gw.example") and not is_name("2001:db8::1")


def world(hosts: Hosts) -> tuple[FailoverManager, FakeCharonPort]:
    charon = FakeCharonPort()
    manager = FailoverManager(charon, FakeClock(), RecordingPublisher(), resolver=hosts)
    body = {"remote_addrs": ["gw.example", "198.51.100.1"], "children": {"net": {}}}
    profile = ConnectionProfile(
        "home", ("gw.example", "198.51.100.1"), body, FailoverPolicy(max_cycles=0)
    )
    manager.manage(profile)
    return manager, charon


def loaded(charon: FakeCharonPort) -> list[str]:
    return [c[1] for c in charon.calls if c[0] == "load_conn"]


def test_a_name_with_two_addresses_is_two_gateways_tried_in_turn() -> None:
    hosts = Hosts(gw_example=("192.0.2.1", "192.0.2.2"))
    manager, charon = world(hosts)
    manager.start_all()
    manager.handle("home", ev.InitiateFailed("192.0.2.1", "refused"))
    manager.handle("home", ev.InitiateFailed("192.0.2.2", "refused"))
    assert loaded(charon) == ["home@192.0.2.1", "home@192.0.2.2", "home@198.51.100.1"]
    managed = manager.get("home")
    assert managed is not None and managed.state.gateways == (
        "192.0.2.1",
        "192.0.2.2",
        "198.51.100.1",
    )


def test_the_name_is_resolved_again_at_each_attempt() -> None:
    hosts = Hosts(gw_example=("192.0.2.1",))
    manager, charon = world(hosts)
    manager.start_all()
    manager.handle("home", ev.TunnelUp("192.0.2.1", 1))
    asked = hosts.asked
    hosts.names["gw.example"] = ("192.0.2.7",)  # the name moved
    manager.handle("home", ev.TunnelDown("192.0.2.1", 1))  # on to 198.51.100.1
    manager.handle("home", ev.InitiateFailed("198.51.100.1", "refused"))
    assert hosts.asked > asked
    assert loaded(charon)[-1] == "home@192.0.2.7"
    managed = manager.get("home")
    assert managed is not None and managed.state.phase is Phase.CONNECTING


def test_one_name_with_two_addresses_is_managed() -> None:
    from extsock_py.domain.config import DesiredConfig, split_managed

    body = {"remote_addrs": ["gw.example"], "children": {"net": {}}}
    desired = DesiredConfig("test", {"home": body, "solo": {"remote_addrs": ["one.example"]}})
    hosts = Hosts(gw_example=("192.0.2.1", "192.0.2.2"), one_example=("192.0.2.9",))
    managed, plain = split_managed(desired, hosts.resolve)
    assert list(managed) == ["home"] and list(plain) == ["solo"]
    assert split_managed(desired)[0] == {}  # without a resolver: as before


# --- resolved beside the main loop, in the daemon as build_app wires it ---------------------


def test_fast_answers_from_beside_the_loop_are_used_at_each_attempt() -> None:
    """The resolver beside the loop (as build_app wires it): an answer that comes fast (a
    hosts file) is the one the attempt uses, as with a resolver asked on the loop."""
    from extsock_py.adapters.resolver import BackgroundResolver
    from extsock_py.adapters.worker import BoundedWorker

    hosts = Hosts(gw_example=("192.0.2.1",))
    worker = BoundedWorker("dns-test", threads=1, capacity=4)
    posted: list[object] = []
    charon = FakeCharonPort()
    resolver = BackgroundResolver(hosts, worker, posted.append)
    manager = FailoverManager(charon, FakeClock(), RecordingPublisher(), resolver=resolver)
    body = {"remote_addrs": ["gw.example", "198.51.100.1"], "children": {"net": {}}}
    profile = ConnectionProfile(
        "home", ("gw.example", "198.51.100.1"), body, FailoverPolicy(max_cycles=0)
    )
    try:
        manager.manage(profile)
        manager.start_all()
        assert loaded(charon) == ["home@192.0.2.1"]  # the first answer, not the name
        manager.handle("home", ev.TunnelUp("192.0.2.1", 1))
        hosts.names["gw.example"] = ("192.0.2.7",)  # the name moved
        manager.handle("home", ev.TunnelDown("192.0.2.1", 1))  # on to 198.51.100.1
        manager.handle("home", ev.InitiateFailed("198.51.100.1", "refused"))
        assert loaded(charon)[-1] == "home@192.0.2.7"
    finally:
        worker.close()


DNS_CONF = """
connections {
    pair {
        remote_addrs = pair.test, 10.99.2.2
        local { auth = psk }
        remote { auth = psk }
        children { net { remote_ts = 10.7.0.0/16 } }
    }
    solo {
        remote_addrs = solo.test
        local { auth = psk }
        remote { auth = psk }
        children { net { remote_ts = 10.8.0.0/16 } }
    }
}
secrets {
    ike-lab { secret = lab-secret-0123 }
}
"""


class Gated:
    """A resolver the test steers: answers from `names`, once `gate` is open."""

    def __init__(self, **names: tuple[str, ...]) -> None:
        self.names = {k.replace("_", "."): v for k, v in names.items()}
        self.gate = threading.Event()
        self.gate.set()

    def resolve(self, name: str) -> tuple[str, ...]:
        self.gate.wait(10.0)
        return self.names.get(name, ())


def test_a_lone_name_that_gains_an_address_is_managed_without_a_reload_waiting_for_dns(
    tmp_path: Path,
) -> None:
    """At start the first answers are waited for (bounded): `pair.test` is one gateway of
    two, `solo.test` a plain connection (one address). Later `solo.test` has two, and the
    resolver is slow: the reload answers at once, and when the answer comes back through
    the loop's inbox the config is applied again, with `solo` managed."""
    hosts = Gated(pair_test=("10.99.1.2",), solo_test=("10.99.3.2",))
    conf = tmp_path / "swanctl.conf"
    conf.write_text(DNS_CONF)
    with short_dir() as d, FakeCharon() as fake:
        settings = AppSettings(
            uri=fake.uri, config_file=conf, state_dir=None, control_socket=d / "s"
        )
        app = build_app(settings, resolver=hosts)
        thread = threading.Thread(target=app.run, name="daemon-under-test", daemon=True)
        thread.start()
        try:
            assert app.loop.ready.wait(10.0)
            managed = [r.connection for r in app.operator.status().connections]
            assert managed == ["pair"]
            assert app.operator.status("pair").connections[0].gateways == ("10.99.1.2", "10.99.2.2")
            hosts.names["solo.test"] = ("10.99.3.2", "10.99.4.2")
            hosts.gate.clear()
            began = time.monotonic()
            report = app.operator.reload()
            assert time.monotonic() - began < 2.0  # no wait for the resolver
            assert report.applied is not None and "solo" in report.applied.plain
            hosts.gate.set()
            wait_until(lambda: len(app.operator.status().connections) == 2, 5.0)
            solo = app.operator.status("solo").connections[0]
            assert solo.gateways == ("10.99.3.2", "10.99.4.2")
        finally:
            hosts.gate.set()
            app.loop.request_stop()
            thread.join(10.0)
        assert not thread.is_alive()
