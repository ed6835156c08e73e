"""The `control` section (who reads, who operates), the rules that keep pushed connections
apart from the configured ones, and the bounds on durations."""

from __future__ import annotations

import grp

import pytest

from extsock_py.adapters.access_conf import read_access
from extsock_py.adapters.swanctl.settings import parse_settings
from extsock_py.domain.access import ControlAccess, Peer, Role, role_needed
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.isolation import collision
from tests.unit.test_policy_conf import error, policies

ROOT_GROUP = grp.getgrgid(0).gr_name


def access(text: str) -> ControlAccess:
    return read_access(parse_settings(text, "swanctl.conf").sections.get("extsock"))


def test_groups_by_name_and_number_and_the_policy_ignores_the_section() -> None:
    text = f"extsock {{\n  control {{\n    read = {ROOT_GROUP}, 4242\n    operate = 777\n  }}\n}}\n"
    got = access(text)
    assert got == ControlAccess(read_gids=frozenset({0, 4242}), operate_gids=frozenset({777}))
    assert policies(text)["home"].connect_timeout == 5.0


def test_no_section_no_read_list() -> None:
    assert access("extsock {}\n") == ControlAccess()
    assert access("connections {}\n") == ControlAccess()


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ("operate = no-such-group-x15", "extsock.control.operate", "no unix group named"),
        ("opperate = 1", "extsock.control.opperate", "did you mean 'operate'"),
        ("groups { a = 1 }", "extsock.control.groups", "unknown section"),
    ],
)
def test_mistakes_name_file_line_and_key(body: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        access(f"extsock {{\n  control {{\n    {body}\n  }}\n}}\n")
    assert caught.value.key == key and caught.value.line == 3
    assert message in str(caught.value)


def test_roles() -> None:
    rules = ControlAccess(read_gids=frozenset({10}), operate_gids=frozenset({20}))
    assert rules.role_of(Peer(1, 0, frozenset({0})), 999) is Role.OPERATE
    assert rules.role_of(Peer(1, 999, frozenset({999})), 999) is Role.OPERATE  # the daemon's
    assert rules.role_of(Peer(1, 5, frozenset({5, 20})), 999) is Role.OPERATE
    assert rules.role_of(Peer(1, 5, frozenset({5, 10})), 999) is Role.READ
    assert rules.role_of(Peer(1, 5, frozenset({5})), 999) is Role.NONE
    assert ControlAccess().role_of(Peer(1, 5, frozenset({5})), 999) is Role.READ
    assert role_needed("status") is Role.READ and role_needed("load") is Role.OPERATE
    assert role_needed("made-up") is Role.OPERATE


HOME = {
    "local": {"id": "me"},
    "local-2": {"id": "me-eap"},
    "children": {"net": {"remote_ts": ["10.1.0.0/16", "2001:db8::/48[tcp/443]"]}},
}


@pytest.mark.parametrize(
    ("pushed", "clash"),
    [
        ({"local": {"id": "app"}, "children": {"c": {"remote_ts": ["10.2.0.0/16"]}}}, ""),
        ({"local": {"id": "me-eap"}}, "local id 'me-eap'"),
        ({"local-x": {"id": "app"}, "local-y": {"id": "me"}}, "local id 'me'"),
        ({"local": {"id": "a"}, "children": {"c": {"remote_ts": "10.1.7.7"}}}, "overlaps"),
        ({"local": {"id": "a"}, "children": {"c": {"remote_ts": ["2001:db8::1"]}}}, "overlaps"),
        ({"local": {"id": "a"}, "children": {"c": {"remote_ts": ["10.0.0.0-10.1.0.1"]}}}, "10.1"),
        # charon reads the prefix with atoi(): /0 for both
        ({"local": {"id": "a"}, "children": {"c": {"remote_ts": ["0.0.0.0/0x"]}}}, "overlaps"),
        ({"local": {"id": "a"}, "children": {"c": {"remote_ts": ["0.0.0.0/ 0"]}}}, "overlaps"),
        # dynamic: the gateway's own address; without remote_addrs, any address
        (
            {"remote_addrs": ["203.0.113.1"], "local": {"id": "a"}, "children": {"c": {}}},
            "",
        ),
        ({"local": {"id": "a"}, "children": {"c": {"remote_ts": ["dynamic"]}}}, "overlaps"),
        # one identity to charon, however it is spelled
        ({"local": {"id": "fqdn:ME"}}, "local id 'fqdn:ME'"),
        ({"local": {"id": "@me"}}, "local id '@me'"),
    ],
)
def test_collisions_with_configured_connections(pushed: dict[str, object], clash: str) -> None:
    got = collision(pushed, {"home": HOME})
    assert (clash in got) if clash else got == ""


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("connect_timeout = 999999999999d", "extsock.connect_timeout", "at most 10m"),
        ("backoff { maximum = 2d }", "extsock.backoff.maximum", "2d is too long: at most 1d"),
        ("failback { hold_down = 25h }", "extsock.failback.hold_down", "at most 1d"),
        ("monitor { interval = 2m }", "extsock.monitor.interval", "at most 1m"),
        ("netns_typo = x", "extsock.netns_typo", "unknown key"),
    ],
)
def test_durations_have_upper_bounds_named_in_the_error(text: str, key: str, message: str) -> None:
    caught = error(f"extsock {{\n  {text}\n}}\n")
    assert caught.key == key, str(caught)
    assert message in str(caught)
