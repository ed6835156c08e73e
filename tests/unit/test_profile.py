"""Clone names and clone bodies: one gateway each, charon's own retrying switched off."""

from __future__ import annotations

from typing import Any

import pytest

from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import (
    CloneName,
    ConnectionProfile,
    clone_body,
    clone_if_id,
    clone_name,
    parse_clone_name,
    probe_body,
    probe_name,
)

GWS = ("10.0.0.1", "10.0.0.2", "2001:db8::3")


def psk_body() -> dict[str, Any]:
    return {
        "version": "2",
        "remote_addrs": list(GWS),
        "local_addrs": ["10.0.0.100"],
        "proposals": ["aes256-sha256-modp2048"],
        "keyingtries": "0",
        "dpd_delay": "10s",
        "local-1": {"auth": "psk", "id": "home"},
        "remote-1": {"auth": "psk", "id": "gw"},
        "children": {
            "net": {
                "local_ts": ["10.1.0.0/16"],
                "remote_ts": ["10.2.0.0/16"],
                "esp_proposals": ["aes256gcm16"],
                "start_action": "start",
                "dpd_action": "restart",
                "close_action": "restart",
                "mode": "tunnel",
            },
            "voip": {"remote_ts": ["10.3.0.0/16"], "start_action": "trap"},
        },
    }


def cert_body() -> dict[str, Any]:
    return {
        "remote_addrs": list(GWS),
        "local-1": {"auth": "pubkey", "certs": [b"\x30\x82\x01\x0a-cert-der"], "id": b"CN=home"},
        "remote-1": {"auth": "pubkey", "cacerts": [b"\x30\x82ca"], "id": "CN=gw"},
        "children": {"net": {"remote_ts": ["0.0.0.0/0"]}},
    }


def profile(body: dict[str, Any]) -> ConnectionProfile:
    return ConnectionProfile("home", GWS, body)


@pytest.mark.parametrize(
    ("connection", "gateway", "probe", "name"),
    [
        ("home", "10.0.0.2", False, "home@10.0.0.2"),
        ("home", "2001:db8::3", False, "home@2001:db8::3"),
        ("home", "vpn.example.net", True, "home@vpn.example.net~probe"),
        ("a@b", "10.0.0.1", False, "a@b@10.0.0.1"),  # the last @ separates
    ],
)
def test_clone_names_round_trip(connection: str, gateway: str, probe: bool, name: str) -> None:
    made = probe_name(connection, gateway) if probe else clone_name(connection, gateway)
    assert made == name
    assert parse_clone_name(name) == CloneName(connection, gateway, probe)


@pytest.mark.parametrize("name", ["home", "", "@10.0.0.1", "home@", "home@~probe", "~probe"])
def test_other_names_are_not_clones(name: str) -> None:
    assert parse_clone_name(name) is None


@pytest.mark.parametrize("make", [psk_body, cert_body])
def test_clone_body_has_one_gateway_and_no_charon_retrying(make: Any) -> None:
    original = make()
    prof = profile(original)
    body = clone_body(prof, "10.0.0.2")
    assert body["remote_addrs"] == ["10.0.0.2"]
    assert body["keyingtries"] == "1"
    for child in body["children"].values():
        assert child["start_action"] == "none"
        assert child["close_action"] == "none"
        assert child["dpd_action"] == "clear"
    # everything else is carried over unchanged, bytes included
    for key, value in original.items():
        if key not in ("remote_addrs", "keyingtries", "children"):
            assert body[key] == value
    for child_name, child in original["children"].items():
        for key, value in child.items():
            if key not in ("start_action", "close_action", "dpd_action"):
                assert body["children"][child_name][key] == value
    assert list(body["children"]) == list(original["children"])
    # the profile's body is not touched
    assert prof.body == make()


def test_cert_bytes_survive_the_clone() -> None:
    body = clone_body(profile(cert_body()), "2001:db8::3")
    assert body["local-1"]["certs"] == [b"\x30\x82\x01\x0a-cert-der"]
    assert body["local-1"]["id"] == b"CN=home"
    assert body["remote_addrs"] == ["2001:db8::3"]


def test_clone_of_a_body_without_children() -> None:
    body = clone_body(profile({"remote_addrs": list(GWS)}), "10.0.0.1")
    assert body == {"remote_addrs": ["10.0.0.1"], "keyingtries": "1"}


def test_clone_body_towards_an_address_a_name_resolved_to() -> None:
    # Not in the configured list: a DNS name of the list resolved to it (or a redirect).
    assert clone_body(profile(psk_body()), "10.9.9.9")["remote_addrs"] == ["10.9.9.9"]


def test_probe_body_is_childless() -> None:
    body = probe_body(profile(psk_body()), "10.0.0.1")
    assert "children" not in body
    assert body["childless"] == "force"
    assert body["remote_addrs"] == ["10.0.0.1"]
    assert body["keyingtries"] == "1"
    assert body["local-1"] == {"auth": "psk", "id": "home"}


def test_profile_children() -> None:
    assert profile(psk_body()).children == ("net", "voip")
    assert profile({"remote_addrs": []}).children == ()
    assert profile({"children": ["odd"]}).children == ()


def test_remote_id_address_makes_each_clone_expect_its_gateway_s_address() -> None:
    from dataclasses import replace

    from extsock_py.domain.policy import FailoverPolicy

    body = psk_body()
    body["remote-2"] = {"auth": "eap", "id": "%any"}
    as_written = profile(body)
    per_gateway = replace(as_written, policy=FailoverPolicy(remote_id="address"))
    for gateway in GWS:
        clone = clone_body(per_gateway, gateway)
        assert clone["remote-1"] == {"auth": "psk", "id": gateway}
        assert clone["remote-2"] == {"auth": "eap", "id": gateway}
        assert clone["local-1"] == {"auth": "psk", "id": "home"}  # ours is as written
        assert probe_body(per_gateway, gateway)["remote-1"]["id"] == gateway
        assert clone_body(as_written, gateway)["remote-1"] == {"auth": "psk", "id": "gw"}
    assert per_gateway.body == body  # the profile's body is not touched


def routed(body: dict[str, Any], base: int) -> ConnectionProfile:
    return ConnectionProfile("home", GWS, body, FailoverPolicy(clone_if_id_base=base))


def test_without_route_based_clones_no_interface_id_is_set() -> None:
    for gateway in GWS:
        assert clone_if_id(profile(psk_body()), gateway) is None
        for child in clone_body(profile(psk_body()), gateway)["children"].values():
            assert "if_id_in" not in child and "if_id_out" not in child


def test_route_based_clones_each_have_their_own_interface_id() -> None:
    """Each gateway's clone gets base + its place in the list, in and out, on every child:
    its own policies, so two clones of a switch both take inbound during the drain."""
    routed_profile = routed(psk_body(), 100)
    for place, gateway in enumerate(GWS):
        for child in clone_body(routed_profile, gateway)["children"].values():
            assert child["if_id_in"] == child["if_id_out"] == str(100 + place)
    unlisted = clone_if_id(routed_profile, "192.0.2.9")  # a redirect's gateway
    assert unlisted is not None and unlisted >= 100 + 1000
    assert unlisted == clone_if_id(routed(cert_body(), 100), "192.0.2.9")  # stable
    assert clone_if_id(routed_profile, "192.0.2.10") != unlisted


def test_probe_of_a_route_based_connection_has_no_children() -> None:
    assert "children" not in probe_body(routed(psk_body(), 100), GWS[1])
