"""DNS names in remote_addrs: resolved at each attempt, each address a gateway tried in turn."""

from __future__ import annotations

from extsock_py.domain import events as ev
from extsock_py.domain.failover import Phase
from extsock_py.domain.gateways import expand, is_name
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes.ports import FakeCharonPort, FakeClock, RecordingPublisher


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
