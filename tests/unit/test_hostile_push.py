"""Hostile pushes against a daemon on the fake charon: issue 24, findings 1, 2 and 5.

The config is read from swanctl.conf text by the real reader, the requests go over the real
control socket as root or as a member of the `operate` group (SO_PEERCRED stands in), and the
daemon runs its real main loop on a fake charon and a fake clock.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from extsock_py.adapters.config_reader import read_desired_config
from extsock_py.adapters.control.client import ControlClient
from extsock_py.adapters.metrics import MetricsServer
from extsock_py.domain.config import DesiredConfig
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.notices import ConnectionNotice, NoticeKind
from extsock_py.domain.profile import clone_name
from tests.unit.test_control_support import Harness, running_daemon, short_dir
from tests.unit.test_hostile_clients import OPERATOR, ROOT, serve

CONNECTIONS = """
connections {
  home {
    remote_addrs = 10.0.0.1, 10.0.0.2
    local { auth = psk
            id = home.example }
    remote { auth = psk }
    children { net { local_ts = 10.100.0.0/24
                     remote_ts = 10.1.0.0/16 } }
  }
  road {                               # no local.id, and no remote_ts: dynamic
    remote_addrs = 192.0.2.10, 192.0.2.11
    local { auth = psk }
    remote { auth = psk }
    children { net { local_ts = 10.100.0.0/24 } }
  }
}
"""
PUSH = """
extsock {
  control {
    operate = 3000
    push {
      gateways = 203.0.113.0/24, segw.example.net
      local_ts = 10.50.0.0/16, 10.100.0.0/24
      remote_ts = 10.9.0.0/16, 192.0.2.0/24
      ids = app-*.example.net, *@apps.example, *.example
      max = 2
    }
  }
}
"""
NO_PUSH = "extsock {\n  control {\n    operate = 3000\n  }\n}\n"


def config(text: str) -> DesiredConfig:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "swanctl.conf"
        path.write_text(text)
        return read_desired_config(path)


def app(**changes: Any) -> dict[str, Any]:
    """A push the policy above allows, with `changes` (child keys under `child`)."""
    child = {"local_ts": ["10.50.1.0/24"], "remote_ts": ["10.9.1.0/24"]}
    child.update(changes.pop("child", {}))
    body: dict[str, Any] = {
        "remote_addrs": ["203.0.113.1", "203.0.113.2"],
        "local": {"auth": "psk", "id": "app-1.example.net"},
        "remote": {"auth": "psk"},
        "children": {"c": child},
    }
    body.update(changes)
    return body


@pytest.fixture
def pushing() -> Iterator[Harness]:
    with running_daemon(config(CONNECTIONS + PUSH)) as h:
        yield h


class Pusher:
    """The control socket of `harness`, as root or as a member of the operate group."""

    def __init__(self, harness: Harness, path: Path) -> None:
        self.harness = harness
        control = harness.operator.control_access
        self.srv, self.ids, _ = serve(harness, path, access=control)

    def push(self, peer: Any, conn: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
        self.ids.current = peer  # the next client accepted is `peer`
        with ControlClient(self.srv.path, timeout=5) as client:
            result: dict[str, Any] = client.request("load", conn=conn, body=body, **extra)
            return result

    def unload(self, conn: str) -> None:
        self.ids.current = ROOT
        with ControlClient(self.srv.path, timeout=5) as client:
            client.request("unload", conn=conn)

    def managed(self) -> list[str]:
        return sorted(self.harness.on_loop(lambda: self.harness.daemon.service.manager.names()))


@pytest.fixture
def pusher(pushing: Harness) -> Iterator[Pusher]:
    with short_dir() as d:
        p = Pusher(pushing, d / "s")
        try:
            yield p
        finally:
            p.srv.close()


# --- who may push ------------------------------------------------------------------------------


def test_without_a_push_section_only_root_pushes() -> None:
    with running_daemon(config(CONNECTIONS + NO_PUSH)) as h, short_dir() as d:
        p = Pusher(h, d / "s")
        try:
            with pytest.raises(Exception, match="NotAllowed: app: only root pushes connections"):
                p.push(OPERATOR, "app", app())
            assert p.push(ROOT, "app", app())["started"] is True
        finally:
            p.srv.close()


def test_a_push_inside_the_policy_is_accepted(pusher: Pusher) -> None:
    assert pusher.push(OPERATOR, "app", app())["started"] is True
    assert "app" in pusher.managed()


# --- finding 1: selectors as charon reads them; overlaps with every connection -------------------


@pytest.mark.parametrize(
    "selector",
    [
        "0.0.0.0/0x",
        "10.0.0.0/8abc",
        "0.0.0.0/+0",
        "0.0.0.0/ 0",
        "10.50.0.0/264",
        "10.50.1.0/-1",
        "10.50.1.0/024",
        " 10.50.1.0/24",
        "10.50.1.0 - 10.50.1.9",
        "%any",
        "10.50.1.0/24[tcp]x",
        "10.50.1.0/24\u0000",
    ],
)
def test_selectors_charon_reads_otherwise_are_refused_even_from_root(
    pusher: Pusher, selector: str
) -> None:
    for peer in (ROOT, OPERATOR):
        with pytest.raises(Exception, match=r"InvalidConnection: .*traffic selector .* refused"):
            pusher.push(peer, "app", app(child={"local_ts": [selector]}))
    assert "app" not in pusher.managed()
    loads = pusher.harness.charon.commands("load_conn")
    assert not any(str(c[1]).startswith("app") for c in loads)


@pytest.mark.parametrize(
    ("child", "message"),
    [
        ({"local_ts": ["10.60.0.0/24"]}, "local_ts: 10.60.0.0/24 is not inside"),
        ({"remote_ts": ["10.9.0.0/15"]}, "remote_ts: 10.9.0.0/15 is not inside"),
        ({"remote_ts": ["10.9.0.0-10.10.0.0"]}, "is not inside"),
        ({"local_ts": ["dynamic"]}, "'dynamic' is decided by charon"),
        ({"remote_ts": []}, "remote_ts is missing"),
        ({"priority": "1"}, "'children.c.priority' is not allowed"),
    ],
)
def test_a_non_root_push_claims_only_the_allowed_ranges(
    pusher: Pusher, child: dict[str, Any], message: str
) -> None:
    with pytest.raises(Exception, match=message):
        pusher.push(OPERATOR, "app", app(child=child))
    assert "app" not in pusher.managed()


def test_dynamic_counts_as_the_gateways_and_this_hosts_addresses(pusher: Pusher) -> None:
    # road has no remote_ts: it carries 10.100.0.0/24 <-> its gateways 192.0.2.10, .11
    grab = app(child={"local_ts": ["10.100.0.0/24"], "remote_ts": ["192.0.2.0/24"]})
    for peer in (ROOT, OPERATOR):
        with pytest.raises(Exception, match="configured connection 'road'"):
            pusher.push(peer, "app", grab)
    # beside it, towards other addresses of the same range: its own traffic, accepted
    ok = app(child={"local_ts": ["10.100.0.0/24"], "remote_ts": ["192.0.2.128/25"]})
    assert pusher.push(OPERATOR, "app", ok)["started"] is True


def test_local_ts_is_compared_too(pusher: Pusher) -> None:
    # home carries 10.100.0.0/24 <-> 10.1.0.0/16; the same remote from another local net is not
    # home's traffic, the same pair is
    body = app(child={"local_ts": ["10.100.0.0/25"], "remote_ts": ["10.1.2.0/24"]})
    with pytest.raises(Exception, match=r"10\.1\.2\.0/24 overlaps 10\.1\.0\.0/16.*'home'"):
        pusher.push(ROOT, "app", body)
    other = app(child={"local_ts": ["10.50.0.0/24"], "remote_ts": ["10.1.2.0/24"]})
    assert pusher.push(ROOT, "app", other)["started"] is True


def test_pushed_connections_do_not_overlap_each_other(pusher: Pusher) -> None:
    assert pusher.push(OPERATOR, "app", app())["started"] is True
    wider = app(child={"local_ts": ["10.50.0.0/16"], "remote_ts": ["10.9.0.0/16"]})
    for peer in (OPERATOR, ROOT):
        with pytest.raises(Exception, match="pushed connection 'app'"):
            pusher.push(peer, "app2", wider)
    # the same name again is an update, not an overlap with itself
    assert pusher.push(OPERATOR, "app", wider)["started"] is False


# --- finding 2: gateways and identities ----------------------------------------------------------


@pytest.mark.parametrize(
    ("remote_addrs", "message"),
    [
        (["203.0.113.1", "198.51.100.7"], "gateway 198.51.100.7 is not inside"),
        (["203.0.113.1", "evil.example.org"], "'evil.example.org' is not listed"),
        (["203.0.113.1", "segw.example.net.evil.org"], "is not listed"),
        (["203.0.113.1", "203.0.113.2", "%any"], "'%any' is not listed"),
        (["203.0.113.1", "203.0.113.2", "0.0.0.0/0"], "'0.0.0.0/0' is not listed"),
    ],
)
def test_a_non_root_push_goes_only_to_listed_gateways(
    pusher: Pusher, remote_addrs: list[str], message: str
) -> None:
    with pytest.raises(Exception, match=message):
        pusher.push(OPERATOR, "app", app(remote_addrs=remote_addrs))
    # a listed name, in any case, and addresses of the listed network are fine
    ok = app(remote_addrs=["203.0.113.9", "SEGW.example.net"])
    assert pusher.push(OPERATOR, "app", ok)["started"] is True


def test_a_non_root_push_picks_no_ppk_outside_ids(pusher: Pusher) -> None:
    with pytest.raises(Exception, match=r"ppk_id 'corp-ppk' .* matches no pattern"):
        pusher.push(OPERATOR, "app", app(ppk_id="corp-ppk"))
    assert pusher.push(OPERATOR, "app", app(ppk_id="app-ppk.example.net"))["started"] is True


@pytest.mark.parametrize(
    ("local", "message"),
    [
        ({"id": "someone.else.org"}, "matches no pattern of extsock.control.push.ids"),
        ({"id": "192.0.2.2"}, "matches no pattern"),  # the host's default identity: road's
        ({"id": "%any"}, "any identity"),
        ({"id": "CN=app-1.example.net"}, "dn identity"),
        ({"id": "app-*.example.net"}, "wildcard"),
        ({"id": "app-1.example.net", "eap_id": "admin@corp.example"}, "local.eap_id"),
        ({"id": "fqdn:#7a7a2e6f7267"}, "fqdn:zz.org"),  # hex for zz.org
    ],
)
def test_a_non_root_push_presents_only_allowed_identities(
    pusher: Pusher, local: dict[str, str], message: str
) -> None:
    with pytest.raises(Exception, match=message):
        pusher.push(OPERATOR, "app", app(local={"auth": "psk", **local}))
    assert "app" not in pusher.managed()


@pytest.mark.parametrize(
    "spelling",
    [
        "fqdn:home.example",
        "@home.example",
        "HOME.example",
        "dns:Home.Example",
        "fqdn:#686f6d652e6578616d706c65",
    ],
)
def test_a_configured_identity_is_refused_however_it_is_spelled(
    pusher: Pusher, spelling: str
) -> None:
    # *.example is in ids: the policy alone would let it through, the collision does not
    for peer in (OPERATOR, ROOT):
        with pytest.raises(Exception, match="is the identity of configured connection 'home'"):
            pusher.push(peer, "app", app(local={"auth": "psk", "id": spelling}))
    assert "app" not in pusher.managed()


# --- finding 5: bounds, and what an unload leaves behind ------------------------------------------


def test_max_bounds_the_pushed_connections(pusher: Pusher) -> None:
    for i in (1, 2):
        body = app(child={"local_ts": [f"10.50.{i}.0/24"]}, local={"id": f"app-{i}.example.net"})
        pusher.push(OPERATOR, f"app{i}", body)
    third = app(child={"local_ts": ["10.50.3.0/24"]}, local={"id": "app-3.example.net"})
    with pytest.raises(Exception, match=r"2 pushed connections already, the most .*max allows"):
        pusher.push(OPERATOR, "app3", third)
    # an update of one of them is not one more
    pusher.push(OPERATOR, "app1", app(child={"local_ts": ["10.50.1.0/25"]}))
    pusher.unload("app2")
    assert pusher.push(OPERATOR, "app3", third)["started"] is True


def test_unload_forgets_the_state_rows_and_the_metrics_labels(pusher: Pusher) -> None:
    harness = pusher.harness
    metrics = MetricsServer(harness.operator, harness.publisher, "127.0.0.1:0")
    unsubscribe = harness.publisher.subscribe(metrics.events.on_notice)
    try:
        for cycle in range(20):
            name = f"app{cycle}"
            pusher.push(OPERATOR, name, app())
            harness.bring_up(name, "203.0.113.1", ike_id=100 + cycle)
            assert name in harness.store.connections  # its state is saved while managed
            failover = ConnectionNotice(
                NoticeKind.FAILOVER, name, "203.0.113.2", "203.0.113.1", "retransmit", 1.5
            )
            harness.publish(failover)
            assert f'connection="{name}"' in generate_latest(metrics.registry).decode()
            pusher.unload(name)
        assert not [n for n in harness.store.connections if n.startswith("app")]
        scrape = generate_latest(metrics.registry).decode()
        assert 'connection="app' not in scrape, scrape
    finally:
        unsubscribe()


def test_the_host_addresses_adapter_reads_the_kernels_tables(tmp_path: Path) -> None:
    from extsock_py.adapters.host_addresses import ProcHostAddresses

    net = tmp_path / "net"
    net.mkdir()
    (net / "fib_trie").write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
        "Local:\n  +-- 10.100.0.0/24 2 0 2\n     |-- 10.100.0.1\n        /32 host LOCAL\n"
        "     |-- 10.100.0.255\n        /32 link BROADCAST\n"
    )
    (net / "if_inet6").write_text("fd000000000000000000000000000002 02 40 00 80 eth0\n")
    assert ProcHostAddresses(tmp_path).addresses() == {"10.100.0.1", "fd00::2"}
    if os.path.exists("/proc/net/fib_trie"):
        assert "127.0.0.1" in ProcHostAddresses().addresses()


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("connect_timeout = 1ms", "extsock.connect_timeout", "1ms is too short: at least 100ms"),
        ("backoff { initial = 1ms }", "extsock.backoff.initial", "at least 100ms"),
        ("backoff { maximum = 0 }", "extsock.backoff.maximum", "0s is too short"),
        ("failback { probe_interval = 1ms }", "extsock.failback.probe_interval", "100ms to 1h"),
        ("failback { probe_timeout = 10ms }", "extsock.failback.probe_timeout", "100ms to 10m"),
        ("monitor { interval = 1ms }", "extsock.monitor.interval", "accepted: 20ms to 1m"),
        ("monitor { netns = .. }", "extsock.monitor.netns", "no '/' or '..'"),
        ("monitor { netns = a/../b }", "extsock.monitor.netns", "invalid network namespace"),
        ("monitor { netns = .hidden }", "extsock.monitor.netns", "invalid network namespace"),
        ("control { push { max = 99999 } }", "extsock.control.push.max", "0 to 4096"),
        ("control { push { gateways = 10.0.0.1/8 } }", "extsock.control.push.gateways", "10.0.0"),
        ("control { push { local_ts = 0.0.0.0/0x } }", "extsock.control.push.local_ts", "0/0x"),
        ("control { push { ids = CN=x } }", "extsock.control.push.ids", "dn identity"),
        ("control { push { gatways = x } }", "extsock.control.push.gatways", "'gateways'"),
        ("control { push { max = 1 } }", "extsock.control.push.gateways", "missing"),
    ],
)
def test_policy_values_are_bounded_naming_file_line_key_and_range(
    text: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config(CONNECTIONS + "extsock {\n  " + text + "\n}\n")
    assert caught.value.key == key, str(caught.value)
    assert message in str(caught.value)
    assert "swanctl.conf:" in str(caught.value)  # file and line


def test_a_pushed_policy_is_bounded_too(pusher: Pusher) -> None:
    for policy, message in (
        ({"connect_timeout": "1ms"}, "key 'connect_timeout': 1ms is too short: at least 100ms"),
        ({"monitor": {"interval": "1ms"}}, "key 'monitor.interval'"),
        ({"backoff": {"initial": "0.001"}}, "accepted: 100ms to 1h"),
        ({"monitor": {"netns": ".."}}, "invalid network namespace"),
    ):
        with pytest.raises(Exception, match=message):
            pusher.push(ROOT, "app", app(), policy=policy)


def test_clones_of_an_accepted_push_carry_the_selectors_as_lists(pusher: Pusher) -> None:
    body = app(child={"local_ts": "10.50.1.0/24, 10.50.2.0/24"})
    pusher.push(OPERATOR, "app", body)
    harness = pusher.harness
    clone = harness.on_loop(lambda: harness.charon.conns[clone_name("app", "203.0.113.1")])
    assert clone["children"]["c"]["local_ts"] == ["10.50.1.0/24", "10.50.2.0/24"]
