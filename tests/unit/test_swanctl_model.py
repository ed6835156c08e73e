"""Validation of swanctl.conf: what extsock reads is checked, typos are caught, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from extsock_py.adapters.swanctl import read_swanctl_conf
from extsock_py.adapters.swanctl.model import SwanctlConfig, validate
from extsock_py.adapters.swanctl.settings import parse_settings
from extsock_py.domain.errors import ConfigError

PSK = "correct-horse-battery-staple"

GOOD = f"""connections {{
   home {{
      remote_addrs = 192.0.2.1, gw.example.org
      version = 2
      local {{
         auth = psk
      }}
      remote {{
         auth = psk
      }}
      children {{
         net {{
            remote_ts = 10.0.0.0/8
            start_action = trap|start
         }}
      }}
   }}
}}
secrets {{
   ike-home {{
      id = gw.example.org
      secret = {PSK}
   }}
}}
"""


def check(text: str) -> SwanctlConfig:
    return validate(parse_settings(text, "swanctl.conf"))


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check(text)
    return info.value


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def test_good_config_is_typed() -> None:
    config = check(GOOD)
    home = config.connections["home"]
    assert home.version == 2
    assert home.remote_addrs == ("192.0.2.1", "gw.example.org")
    assert [r.auth for r in home.local + home.remote] == ["psk", "psk"]
    assert home.children["net"].remote_ts == ("10.0.0.0/8",)
    assert home.children["net"].start_action == "trap|start"
    assert home.options["version"] == "2"
    assert config.shared_secrets[0].secret.get_secret_value() == PSK.encode()


def test_wrong_version_message_format() -> None:
    err = error(replace("version = 2", "version = x"))
    assert str(err) == (
        "swanctl.conf:4: key 'connections.home.version': invalid value 'x': expected 0, 1 or 2"
    )


def test_list_where_one_value_is_expected() -> None:
    err = error(replace("start_action = trap|start", "start_action = trap, start"))
    assert err.key == "connections.home.children.net.start_action"
    assert err.line == 14
    assert "a list 'trap, start' where a single value is expected" in str(err)


def test_unknown_connection_key_suggests_close_matches() -> None:
    err = error(replace("remote_addrs", "remote_adrs"))
    assert err.key == "connections.home.remote_adrs"
    assert err.line == 3
    assert "did you mean 'remote_addrs'" in err.message
    assert (
        err.accepted == "an option of a connection known to strongSwan 5.9.8 to 6.0.6 (swanctl.opt)"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("remote_ts = 10.0.0.0/8", "remote_ts = 10.0.0.0/8\n            per_cpu_sas = yes"),
        ("remote_ts = 10.0.0.0/8", "remote_ts = 10.0.0.0/8\n            icmp = yes"),
        ("remote_ts = 10.0.0.0/8", "remote_ts = 10.0.0.0/8\n            mode = iptfs"),
        ("remote_addrs", "ocsp = request\n   remote_addrs"),
    ],
)
def test_options_of_strongswan_6_are_accepted(old: str, new: str) -> None:
    check(replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("auth = psk\n      }\n      remote", "atuh = psk\n      }\n      remote", "local.atuh"),
        ("remote_ts", "remote_tss", "children.net.remote_tss"),
    ],
)
def test_unknown_nested_keys(old: str, new: str, key: str) -> None:
    err = error(replace(old, new))
    assert err.key == f"connections.home.{key}"
    assert "did you mean" in err.message


def test_unknown_subsection_of_a_connection() -> None:
    err = error(replace("children {", "childs {"))
    assert err.key == "connections.home.childs"
    assert "did you mean 'children'" in err.message


def test_connection_without_children_loads_as_swanctl_loads_it() -> None:
    config = check(
        replace("net {\n            remote_ts = 10.0.0.0/8\n", "").replace(
            "start_action = trap|start\n         }\n", ""
        )
    )
    assert config.connections["home"].children == {}


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("remote_addrs = 192.0.2.1,", "remote_addrs = 192.0.2.300/99,", "192.0.2.300/99"),
        ("remote_ts = 10.0.0.0/8", "remote_ts = 10.0.0.0/8[tcp", "10.0.0.0/8[tcp"),
        ("auth = psk\n      }\n      remote", "auth = secret\n      }\n      remote", "pubkey"),
        ("start_action = trap|start", "start_action = always", "trap|start"),
    ],
)
def test_invalid_values(old: str, new: str, words: str) -> None:
    assert words in str(error(replace(old, new)))


def test_extsock_section_is_kept_raw_and_pools_ignored() -> None:
    config = check(
        GOOD + "extsock {\n failover { anything = goes }\n}\npools { p { addrs = x } }\n"
    )
    assert config.extsock is not None
    assert config.extsock.sections["failover"].entries["anything"].text == "goes"
    assert config.extsock.line == 25


def test_unknown_top_level_section_suggests() -> None:
    err = error(GOOD.replace("secrets {", "secret {"))
    assert (err.key, err.line) == ("secret", 19)
    assert "did you mean 'secrets'" in err.message


def test_unknown_secret_type_and_missing_secret() -> None:
    assert "unknown secret type 'psk-home'" in str(error(replace("ike-home", "psk-home")))
    err = error(replace(f"secret = {PSK}", f"sekret = {PSK}"))
    assert err.key == "secrets.ike-home.sekret"
    assert "did you mean 'secret'" in err.message


def test_hex_and_base64_secrets() -> None:
    assert check(replace(PSK, "0x6869")).shared_secrets[0].secret.get_secret_value() == b"hi"
    assert check(replace(PSK, "0saGk=")).shared_secrets[0].secret.get_secret_value() == b"hi"
    assert "length is not a multiple of 4" in str(error(replace(PSK, "0saGk")))


def test_psk_never_in_repr_or_errors(tmp_path: Path) -> None:
    config = check(GOOD)
    assert PSK not in repr(config)
    assert PSK not in str(config)
    conf = tmp_path / "swanctl.conf"
    conf.write_text(GOOD)
    loaded = read_swanctl_conf(conf)
    assert PSK not in repr(loaded)
    assert PSK.encode() == loaded.credentials.shared[0].data.reveal()
    broken = [
        replace(f"secret = {PSK}", f"secret = 0x{PSK}"),
        replace(f"secret = {PSK}", f"secret = 0s{PSK}x"),
        replace(f"secret = {PSK}", f"secret {PSK}"),
        replace(f"secret = {PSK}", f'secret = "{PSK}'),
        replace(f"secret = {PSK}", f"secret = {PSK}\n      bogus = 1"),
        replace(f"secret = {PSK}", f"secret = {PSK}\n      }}}}}}"),
        replace(f"secret = {PSK}", f"{PSK} = x"),
    ]
    for text in broken[:-1]:
        err = error(text)
        assert PSK not in str(err)
        assert PSK not in repr(err)
        assert err.line is not None
    # a secret typed where a key belongs is shown: it is a key name then
    assert "unknown option" in str(error(broken[-1]))


def test_other_top_level_sections_serve_as_reference_bases() -> None:
    base = "base {\n   version = 1\n}\n"
    config = check(base + GOOD.replace("   home {", "   home : base {").replace("version = 2", ""))
    assert config.connections["home"].version == 1
