"""Prometheus metrics and /health, over real HTTP against a daemon loop on fakes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from extsock_py.adapters.metrics import MetricsServer, attach_metrics, parse_address
from extsock_py.adapters.publisher import notice_fields
from extsock_py.domain.notices import (
    CharonBackNotice,
    CharonLostNotice,
    ConnectionNotice,
    NoticeKind,
)
from tests.unit.test_control_support import (
    HOME,
    OFFICE,
    SECRET,
    Harness,
    make_harness,
    running_daemon,
    wait_until,
)


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running_daemon() as h:
        yield h


@pytest.fixture
def metrics(harness: Harness) -> Iterator[MetricsServer]:
    server = attach_metrics(harness.operator, harness.publisher, "127.0.0.1:0")
    server.start()
    yield server
    server.close()


def get(server: MetricsServer, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_metrics_show_connection_state(harness: Harness, metrics: MetricsServer) -> None:
    harness.bring_up("home")
    code, ctype, text = get(metrics, "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    assert value(text, "extsock_up") == 1.0
    assert value(text, "extsock_charon_reachable") == 1.0
    assert value(text, "extsock_managed_connections") == 2.0
    assert value(text, "extsock_tunnel_up", connection="home") == 1.0
    assert value(text, "extsock_tunnel_up", connection="office") == 0.0
    assert value(text, "extsock_active_gateway", connection="home", gateway=HOME[0]) == 1.0
    assert value(text, "extsock_active_gateway", connection="home", gateway=HOME[1]) is None
    assert value(text, "extsock_connection_phase", connection="office", phase="connecting") == 1
    assert value(text, "extsock_connection_phase", connection="office", phase="up") == 0
    assert value(text, "extsock_connection_held", connection="home") == 0.0
    assert value(text, "extsock_connection_gateways", connection="office") == 3.0
    assert value(text, "extsock_connection_failures_total", connection="home") == 0.0
    assert value(text, "extsock_events_processed_total") == 1.0  # the child-updown
    assert value(text, "extsock_events_undecodable_total") == 0.0


def test_failovers_are_counted_by_reason_with_their_durations(
    harness: Harness, metrics: MetricsServer
) -> None:
    harness.bring_up("home")
    harness.operator.switch("home", HOME[1])
    harness.bring_up("home", HOME[1], ike_id=12)
    office = ConnectionNotice(NoticeKind.FAILOVER, "office", gateway="b", from_gateway="a")
    harness.publish(replace(office, reason="retransmit", duration=2.5))
    harness.publish(replace(office, reason="retransmit", duration=0.4))
    harness.publish(ConnectionNotice(NoticeKind.GAVE_UP, "office", gateway="b", reason="x"))
    harness.publish(replace(office, kind=NoticeKind.SWITCH_FAILED, reason="failback"))
    harness.publish(CharonLostNotice("gone"))
    harness.publish(CharonBackNotice())
    text = get(metrics, "/metrics")[2]
    assert value(text, "extsock_failovers_total", connection="home", reason="operator") == 1.0
    assert value(text, "extsock_failovers_total", connection="office", reason="retransmit") == 2
    assert value(text, "extsock_last_failover_duration_seconds", connection="office") == 0.4
    assert value(text, "extsock_last_failover_duration_seconds", connection="home") == 0.0
    hist = "extsock_failover_detection_to_up_seconds"
    assert value(text, f"{hist}_count", connection="office") == 2.0
    assert value(text, f"{hist}_sum", connection="office") == pytest.approx(2.9)
    assert value(text, f"{hist}_bucket", connection="office", le="0.5") == 1.0
    assert value(text, f"{hist}_count", connection="home") == 0  # a planned switch
    assert value(text, "extsock_failover_outage_seconds_count", connection="office") == 0
    assert value(text, "extsock_gave_up_total", connection="office") == 1.0
    assert value(text, "extsock_switch_failed_total", connection="office", reason="failback") == 1
    assert value(text, "extsock_charon_lost_total") == 1.0
    assert value(text, "extsock_vici_reconnects_total") == 1.0
    assert value(text, "extsock_published_events_total", event="tunnel-up") == 2.0


def test_a_connection_s_series_are_there_at_zero_from_its_first_event(
    harness: Harness, metrics: MetricsServer
) -> None:
    """So that the first failover or give-up is a rise Prometheus's increase() sees."""
    text = get(metrics, "/metrics")[2]
    assert value(text, "extsock_gave_up_total", connection="home") is None  # not seen yet
    harness.bring_up("home")  # its tunnel-up event
    text = get(metrics, "/metrics")[2]
    assert value(text, "extsock_gave_up_total", connection="home") == 0.0
    for hist in ("extsock_failover_detection_to_up_seconds", "extsock_failover_outage_seconds"):
        assert value(text, f"{hist}_count", connection="home") == 0.0
        assert value(text, f"{hist}_bucket", connection="home", le="+Inf") == 0.0
    assert value(text, "extsock_gave_up_total", connection="office") is None


def test_no_secret_and_no_odd_label_reaches_the_metrics(
    harness: Harness, metrics: MetricsServer
) -> None:
    harness.publish(
        ConnectionNotice(
            NoticeKind.FAILOVER, "home", gateway="b", reason=f"psk {SECRET}", duration=1.0
        )
    )
    text = get(metrics, "/metrics")[2]
    assert SECRET not in text
    assert "psk" not in text
    assert value(text, "extsock_failovers_total", connection="home", reason="other") == 1.0
    assert 'connection="plain"' not in text  # only managed connections


def test_the_registry_is_our_own(metrics: MetricsServer) -> None:
    assert REGISTRY.get_sample_value("extsock_managed_connections") is None
    assert metrics.registry.get_sample_value("extsock_managed_connections") == 2.0


def test_two_servers_do_not_collide(harness: Harness, metrics: MetricsServer) -> None:
    with attach_metrics(harness.operator, harness.publisher, "127.0.0.1:0") as other:
        assert value(get(other, "/metrics")[2], "extsock_up") == 1.0


def health(server: MetricsServer) -> tuple[int, dict[str, Any]]:
    code, ctype, body = get(server, "/health")
    assert ctype == "application/json"
    verdict = json.loads(body)
    assert isinstance(verdict, dict)
    return code, verdict


def test_health_is_200_while_connections_are_up_or_waiting(
    harness: Harness, metrics: MetricsServer
) -> None:
    code, verdict = health(metrics)
    assert code == 200
    assert verdict == {
        "healthy": True,
        "charon_reachable": True,
        "connections": {"home": "connecting", "office": "connecting"},
        "reasons": [],
    }
    harness.bring_up("home")
    op = harness.operator
    op.hold("office")
    assert health(metrics)[0] == 200


def test_health_is_503_with_the_reasons(harness: Harness, metrics: MetricsServer) -> None:
    harness.operator.terminate("office")
    harness.on_loop(lambda: setattr(harness.daemon.service, "charon_reachable", False))
    code, verdict = health(metrics)
    assert code == 503
    assert verdict["healthy"] is False
    assert verdict["reasons"] == ["charon is not reachable over VICI", "office: stopped"]


def test_health_is_503_when_the_main_loop_does_not_answer() -> None:
    harness = make_harness()  # never started
    server = MetricsServer(harness.operator, harness.publisher, "127.0.0.1:0", timeout=0.05)
    with server:
        code, verdict = health(server)
        assert code == 503
        assert "did not answer" in verdict["reasons"][0]
        text = get(server, "/metrics")[2]
        assert value(text, "extsock_up") == 0.0
        assert value(text, "extsock_tunnel_up", connection="home") is None


def test_other_paths(metrics: MetricsServer) -> None:
    assert get(metrics, "/")[0] == 200
    assert get(metrics, "/nope")[0] == 404
    assert get(metrics, "/metrics?name[]=x")[0] == 200


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9814", ("127.0.0.1", 9814)),
        ("[::1]:9814", ("::1", 9814)),
        (":9814", ("", 9814)),
        ("9814", ("127.0.0.1", 9814)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["localhost", "host:port", "1.2.3.4:70000", "[::1]"])
def test_parse_address_refuses(address: str) -> None:
    with pytest.raises(ValueError, match="invalid metrics address"):
        parse_address(address)


def test_an_address_in_use_is_a_clear_error(harness: Harness, metrics: MetricsServer) -> None:
    with pytest.raises(OSError, match=r"cannot listen for metrics on 127\.0\.0\.1"):
        attach_metrics(harness.operator, harness.publisher, f"127.0.0.1:{metrics.port}").start()


def test_outage_is_a_metric_and_an_event_field_when_known(
    harness: Harness, metrics: MetricsServer
) -> None:
    from extsock_py.adapters.control.protocol import encode_event

    fields = {"connection": "home", "gateway": "10.0.0.2", "from_gateway": "10.0.0.1"}
    harness.publish(
        ConnectionNotice(
            NoticeKind.FAILOVER,
            "home",
            gateway="10.0.0.2",
            from_gateway="10.0.0.1",
            reason="monitor",
            duration=0.2,
            outage=1.7,
        )
    )
    text = get(metrics, "/metrics")[2]
    assert value(text, "extsock_last_failover_outage_seconds", connection="home") == 1.7
    hist = "extsock_failover_outage_seconds"
    assert value(text, f"{hist}_count", connection="home") == 1.0
    assert value(text, f"{hist}_bucket", connection="home", le="1.0") == 0.0
    assert value(text, f"{hist}_bucket", connection="home", le="2.0") == 1.0
    wire = encode_event("failover", {**fields, "duration": 0.2, "outage": 1.7}, 1.0)
    assert wire is not None and wire["outage"] == 1.7
    unknown = encode_event("failover", {**fields, "duration": 0.2}, 1.0)
    assert unknown is not None and "outage" not in unknown


def test_the_hot_standby_shows_in_metrics_status_and_events() -> None:
    from dataclasses import replace

    from extsock_py.domain import observations as ob
    from extsock_py.domain.policy import FailoverPolicy
    from extsock_py.domain.profile import clone_name
    from tests.unit.test_control_support import sample_config, wait_until

    config = sample_config()
    config = replace(config, policies={"home": FailoverPolicy(max_cycles=2, standby=True)})
    with running_daemon(config) as harness:
        seen: list[tuple[str, dict[str, Any]]] = []
        harness.publisher.subscribe(
            lambda notice: seen.append((str(notice.kind), notice_fields(notice)))
        )
        server = attach_metrics(harness.operator, harness.publisher, "127.0.0.1:0")
        server.start()
        try:
            harness.bring_up("home")
            # The standby's clone was loaded and its IKE_SA initiated without a child.
            assert ("initiate", clone_name("home", HOME[1]), None) in harness.charon.calls
            text = get(server, "/metrics")[2]
            assert value(text, "extsock_standby_up", connection="home", gateway=HOME[1]) == 0.0
            sa = ob.IkeSaInfo(name=clone_name("home", HOME[1]), unique_id=9, state="ESTABLISHED")
            harness.daemon.post(ob.IkeUpdown(sa, True))

            def standby_up() -> bool:
                text = get(server, "/metrics")[2]
                return value(text, "extsock_standby_up", connection="home", gateway=HOME[1]) == 1

            wait_until(standby_up)
            row = harness.on_loop(lambda: harness.daemon.service.manager.status("home")[0])
            assert (row.hot_standby_gateway, row.hot_standby_phase) == (HOME[1], "up")
            assert ("standby-up", {"connection": "home", "gateway": HOME[1]}) in seen
            # Its IKE_SA is not the tunnel's in status.
            assert harness.operator.status("home").connections[0].ike_gateway != HOME[1]
            assert value(text, "extsock_standby_up", connection="office", gateway=OFFICE[1]) is None
        finally:
            server.close()


def test_the_drain_of_a_switch_shows_in_status_and_metrics(
    harness: Harness, metrics: MetricsServer
) -> None:
    harness.bring_up("home", HOME[0], ike_id=7)
    text = get(metrics, "/metrics")[2]
    assert value(text, "extsock_draining", connection="home") == 0.0
    left = value(text, "extsock_drain_remaining_seconds", connection="home", gateway=HOME[0])
    assert left is None
    harness.operator.switch("home", HOME[1])
    harness.bring_up("home", HOME[1], ike_id=8)

    def drained_row() -> bool:
        row = harness.operator.status("home").connections[0]
        return row.active_gateway == HOME[1]

    wait_until(drained_row)
    row = harness.operator.status("home").connections[0]
    # The old tunnel stays for switch_drain (1 s by default; the fake clock stands still).
    assert (row.draining_gateway, row.draining_ike_id, row.draining_in) == (HOME[0], 7, 1.0)
    assert row.draining_until == round(harness.clock.wall() + 1.0, 3)
    text = get(metrics, "/metrics")[2]
    assert value(text, "extsock_draining", connection="home") == 1.0
    assert value(text, "extsock_draining", connection="office") == 0.0
    left = value(text, "extsock_drain_remaining_seconds", connection="home", gateway=HOME[0])
    assert left == 1.0
    harness.on_loop(lambda: harness.clock.advance(0.25))
    row = harness.operator.status("home").connections[0]
    assert row.draining_in == 0.75
    # At its end the old tunnel is terminated and the drain is gone.
    harness.on_loop(lambda: harness.clock.advance(1.0))
    harness.on_loop(lambda: harness.daemon.service.manager.tick())
    row = harness.operator.status("home").connections[0]
    assert (row.draining_gateway, row.draining_in, row.draining_until) == (None, None, None)
    text = get(metrics, "/metrics")[2]
    assert value(text, "extsock_draining", connection="home") == 0.0
