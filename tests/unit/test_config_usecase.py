"""The config usecase: managed vs plain connections, credentials, reloads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extsock_py.domain.config import (
    DesiredConfig,
    NewerOption,
    remote_addrs_of,
    split_managed,
)
from extsock_py.domain.credentials import (
    AuthorityLoad,
    CertificateLoad,
    Credentials,
    KeyLoad,
    PoolLoad,
    SharedLoad,
)
from extsock_py.domain.failover import Phase
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.secret import Secret
from extsock_py.usecases.config_usecase import ConfigUsecase
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes.ports import FakeCharonPort, FakeClock, RecordingPublisher


def conn(*remote: str, child: str = "net") -> dict[str, Any]:
    return {"remote_addrs": list(remote), "children": {child: {"start_action": "start"}}}


def setup() -> tuple[ConfigUsecase, FailoverManager, FakeCharonPort]:
    charon = FakeCharonPort()
    manager = FailoverManager(charon, FakeClock(), RecordingPublisher())
    return ConfigUsecase(charon, manager), manager, charon


def desired(connections: Mapping[str, Mapping[str, Any]], **kw: Any) -> DesiredConfig:
    return DesiredConfig(source="swanctl.conf", connections=connections, **kw)


def test_split_managed_needs_two_initiable_gateways() -> None:
    config = desired(
        {
            "home": conn("10.0.0.1", "10.0.0.2"),
            "v6": conn("2001:db8::1", "%any", "2001:db8::2"),
            "one": conn("10.0.0.1"),
            "any": conn("%any"),
            "one-and-subnet": conn("10.0.0.1", "10.1.0.0/16"),
            "dup": conn("10.0.0.1", "10.0.0.1"),
            "none": {"children": {}},
        },
        policies={"home": FailoverPolicy(connect_timeout=2.0)},
    )
    managed, plain = split_managed(config)
    assert sorted(managed) == ["home", "v6"]
    assert sorted(plain) == ["any", "dup", "none", "one", "one-and-subnet"]
    assert managed["home"].policy.connect_timeout == 2.0
    assert managed["v6"].policy == FailoverPolicy()
    assert managed["v6"].gateways == ("2001:db8::1", "2001:db8::2")
    assert [v.address for v in managed["v6"].not_gateways] == ["%any"]


def test_remote_addrs_of_strings_and_bytes() -> None:
    assert remote_addrs_of({"remote_addrs": "10.0.0.1"}) == ["10.0.0.1"]
    assert remote_addrs_of({"remote_addrs": b"10.0.0.1"}) == ["10.0.0.1"]
    assert remote_addrs_of({"remote_addrs": [b"10.0.0.1", "10.0.0.2"]}) == ["10.0.0.1", "10.0.0.2"]
    assert remote_addrs_of({}) == []


def test_apply_loads_plain_as_is_and_starts_managed_clones() -> None:
    uc, manager, charon = setup()
    report = uc.apply(
        desired(
            {
                "home": conn("10.0.0.1", "%any", "10.0.0.0/24", "10.0.0.5-10.0.0.9", "10.0.0.2"),
                "road": conn("%any"),
            },
            credentials=Credentials(
                keys=(KeyLoad("rsa/k.pem", "rsa", Secret(b"-der-")),),
                shared=(SharedLoad("psk-home", "ike", Secret(b"s3cret"), ("home",)),),
            ),
        )
    )  # fmt: skip
    assert report.managed == ["home"] and report.plain == ["road"]
    assert report.credentials == 2 and report.removed == []
    assert report.notes == [
        "home: remote_addrs entry '%any' ignored: %any matches any peer and names no gateway",
        "home: remote_addrs entry '10.0.0.0/24' ignored: "
        "a subnet matches peers and names no single gateway",
        "home: remote_addrs entry '10.0.0.5-10.0.0.9' ignored: "
        "a range matches peers and names no single gateway",
    ]
    assert list(charon.shared) == ["psk-home"]
    assert [k.type for k in charon.keys.values()] == ["rsa"]
    assert sorted(charon.conns) == ["home@10.0.0.1", "road"]
    assert charon.conns["road"] == conn("%any")  # as is
    assert charon.commands("initiate") == [("initiate", "home@10.0.0.1", "net")]
    assert manager.names() == ["home"]
    assert uc.current is not None and uc.current.source == "swanctl.conf"


def test_apply_without_start_leaves_managed_idle() -> None:
    uc, manager, charon = setup()
    uc.apply(desired({"home": conn("10.0.0.1", "10.0.0.2")}), start=False)
    managed = manager.get("home")
    assert managed is not None and managed.state.phase is Phase.IDLE
    assert charon.conns == {}


def test_reload_adds_removes_and_changes() -> None:
    uc, manager, charon = setup()
    uc.apply(
        desired(
            {
                "home": conn("10.0.0.1", "10.0.0.2"),
                "office": conn("10.1.0.1", "10.1.0.2"),
                "road": conn("%any"),
                "lab": conn("10.2.0.1"),
            }
        )
    )
    assert sorted(charon.conns) == ["home@10.0.0.1", "lab", "office@10.1.0.1", "road"]
    charon.calls.clear()
    report = uc.apply(
        desired(
            {
                "home": conn("10.0.0.1", "10.0.0.2", child="net2"),  # same gateways: kept
                "office": conn("10.1.0.3", "10.1.0.2"),  # new gateway list: restarted
                "lab": conn("10.2.0.1", "10.2.0.2"),  # plain becomes managed
                "new": conn("10.3.0.1", "10.3.0.2"),  # added
            }
        )
    )
    assert sorted(report.managed) == ["home", "lab", "new", "office"]
    assert report.plain == [] and sorted(report.removed) == ["lab", "road"]
    assert sorted(charon.conns) == [
        "home@10.0.0.1",
        "lab@10.2.0.1",
        "new@10.3.0.1",
        "office@10.1.0.3",
    ]
    # home was not restarted, but its profile (and so its next clone) is the new one
    assert ("initiate", "home@10.0.0.1", "net") not in charon.calls
    managed = manager.get("home")
    assert managed is not None and managed.profile.children == ("net2",)
    assert ("unload_conn", "office@10.1.0.1") in charon.calls
    # managed connections going back to plain
    report = uc.apply(desired({"home": conn("10.0.0.1"), "new": conn("10.3.0.1", "10.3.0.2")}))
    assert sorted(report.removed) == ["home", "lab", "office"] and report.plain == ["home"]
    assert sorted(charon.conns) == ["home", "new@10.3.0.1"]
    assert manager.names() == ["new"]


def test_unloading_a_plain_connection_charon_no_longer_knows_is_fine() -> None:
    uc, _, charon = setup()
    uc.apply(desired({"road": conn("%any")}))
    del charon.conns["road"]  # e.g. unloaded by someone else
    report = uc.apply(desired({}))
    assert report.removed == [] and report.failures == []  # as swanctl: charon's list counts


def test_reload_unloads_what_disappeared_as_swanctl_but_keeps_managed_clones() -> None:
    uc, manager, charon = setup()
    creds = Credentials(
        certificates=(CertificateLoad("x509ca/ca.pem", "X509", "CA", b"ca"),),
        keys=(KeyLoad("private/a.pem", "any", Secret(b"a")), KeyLoad("rsa/b", "rsa", Secret(b"b"))),
        shared=(SharedLoad("ike-a", "ike", Secret(b"x")), SharedLoad("ike-b", "ike", Secret(b"y"))),
    )
    first = desired(
        {"home": conn("10.0.0.1", "10.0.0.2"), "road": conn("%any"), "old": conn("%any")},
        credentials=creds,
        authorities=(AuthorityLoad("ca-a", {"crl_uris": ["http://a"]}), AuthorityLoad("ca-b", {})),
        pools=(PoolLoad("p1", {"addrs": "10.9.0.0/24"}), PoolLoad("p2", {"addrs": "10.8.0.0/24"})),
    )
    uc.apply(first)
    assert sorted(charon.conns) == ["home@10.0.0.1", "old", "road"]
    second = desired(
        {"home": conn("10.0.0.1", "10.0.0.2"), "road": conn("%any")},
        credentials=Credentials(keys=creds.keys[:1], shared=creds.shared[:1]),
        authorities=first.authorities[:1],
        pools=first.pools[:1],
    )
    report = uc.apply(second)
    assert report.removed == ["old"] and report.failures == []
    assert sorted(charon.conns) == ["home@10.0.0.1", "road"]  # the managed clone stays
    assert [k.source for k in charon.keys.values()] == ["private/a.pem"]
    assert list(charon.shared) == ["ike-a"]
    assert list(charon.authorities) == ["ca-a"] and list(charon.pools) == ["p1"]
    assert manager.names() == ["home"]
    assert not charon.commands("terminate")


def test_an_option_newer_than_the_charon_in_use_is_noted_and_still_sent() -> None:
    uc, _, charon = setup()
    newer = NewerOption(
        "/etc/swanctl/swanctl.conf", 12, "connections.road.children.c.icmp", "6.0.5"
    )
    report = uc.apply(desired({"road": conn("%any")}, newer_options=(newer,)))
    assert report.notes == [
        "/etc/swanctl/swanctl.conf:12: connections.road.children.c.icmp needs strongSwan 6.0.5 "
        "or later, charon is 5.9.8: it will refuse that config"
    ]
    assert "road" in charon.conns  # extsock never refuses what swanctl would send
    assert not NewerOption("f", 1, "k", "6.0.2").needs_newer_than("6.1.0")
    assert NewerOption("f", 1, "k", "6.0.2").needs_newer_than("6.0.1dr2")


def test_no_version_request_without_newer_options() -> None:
    uc, _, charon = setup()
    uc.apply(desired({"road": conn("%any")}))
    assert not charon.commands("version")


def test_an_as_written_copy_of_a_managed_connection_is_left_to_the_takeover() -> None:
    """swanctl loaded `home` as written and its tunnel is up: applying the config must not
    unload it (that would cut the tunnel before the clone is up); usecases/takeover.py
    replaces it make-before-break. A plain connection that becomes managed still goes."""
    uc, _manager, charon = setup()
    charon.conns["home"] = conn("10.0.0.1", "10.0.0.2")
    live = charon.add_sa("home")
    uc.apply(desired({"home": conn("10.0.0.1", "10.0.0.2"), "lab": conn("10.2.0.1")}))
    assert "home" in charon.conns and live.unique_id in charon.sas
    report = uc.apply(
        desired({"home": conn("10.0.0.1", "10.0.0.2"), "lab": conn("10.2.0.1", "10.2.0.2")})
    )
    assert "lab" in report.removed and "lab" not in charon.conns
