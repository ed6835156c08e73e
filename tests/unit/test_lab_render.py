"""Rendering of the lab's swanctl/ templates: pure, no daemon, no root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from extsock_py.lab.cli import lab as lab_cli
from extsock_py.lab.topology import (
    DEFAULT_PSK,
    PLUGINS,
    SWANCTL_DIR_ENV,
    LabConfig,
    Link,
    TemplateError,
    node_id,
    render_node,
    render_strongswan_conf,
    render_swanctl_conf,
    swanctl_templates_dir,
)

NODE_DIR = Path("/run/extsock-lab/ini")


def _balanced(text: str) -> bool:
    depth = 0
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        depth += code.count("{") - code.count("}")
        if depth < 0:
            return False
    return depth == 0


def _value(text: str, key: str) -> str:
    match = re.search(rf"^\s*{re.escape(key)}\s*=\s*(.*)$", text, re.MULTILINE)
    assert match, f"{key} not in\n{text}"
    return match.group(1).strip()


def test_templates_are_found_in_the_repo() -> None:
    base = swanctl_templates_dir()
    assert (base / "ini" / "swanctl.conf").is_file()
    assert (base / "segw" / "strongswan.conf").is_file()


def test_templates_dir_env_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = swanctl_templates_dir()
    monkeypatch.setenv(SWANCTL_DIR_ENV, str(tmp_path))
    with pytest.raises(TemplateError, match=SWANCTL_DIR_ENV):
        swanctl_templates_dir()
    monkeypatch.setenv(SWANCTL_DIR_ENV, str(real))
    assert swanctl_templates_dir() == real


@pytest.mark.parametrize(
    ("gateways", "ipv6", "expected"),
    [
        (2, False, "10.99.1.2, 10.99.2.2"),
        (3, False, "10.99.1.2, 10.99.2.2, 10.99.3.2"),
        (2, True, "fd99:1::2, fd99:2::2"),
        (3, True, "fd99:1::2, fd99:2::2, fd99:3::2"),
    ],
)
def test_ini_remote_addrs(gateways: int, ipv6: bool, expected: str) -> None:
    cfg = LabConfig(gateways=gateways, ipv6=ipv6)
    text = render_swanctl_conf("ini", cfg)
    assert _value(text, "remote_addrs") == expected
    assert cfg.remote_addrs() == expected.split(", ")


def test_ini_psk_conf() -> None:
    text = render_swanctl_conf("ini", LabConfig())
    assert _balanced(text)
    assert "$" not in text
    assert re.search(r"^connections \{\n\s+home \{", text, re.MULTILINE)
    for key, value in [
        ("version", "2"),
        ("local_addrs", "%any"),
        ("dpd_delay", "1s"),
        ("auth", "psk"),
        ("local_ts", "10.100.0.0/24"),
        ("remote_ts", "10.200.0.0/24"),
        ("esp_proposals", "default"),
        ("dpd_action", "restart"),
        ("start_action", "none"),
        ("secret", f'"{DEFAULT_PSK}"'),
    ]:
        assert _value(text, key) == value
    assert f"id = {node_id('ini')}" in text
    assert "id = *.lab.extsock" in text
    assert "certs" not in text
    assert re.search(r"^extsock \{", text, re.MULTILINE)


def test_ini_cert_conf() -> None:
    text = render_swanctl_conf("ini", LabConfig(auth="cert"))
    assert _balanced(text)
    assert _value(text, "auth") == "pubkey"
    assert _value(text, "certs") == "ini.pem"
    assert "cacerts" not in text  # the CA is trusted from x509ca/, as swanctl documents
    assert "secret =" not in text


def test_ini_cert_conf_with_encrypted_key() -> None:
    text = render_swanctl_conf("ini", LabConfig(auth="cert", key_passphrase="lab-key-pass"))
    assert _balanced(text)
    assert _value(text, "file") == "ini.pem"
    assert _value(text, "secret") == '"lab-key-pass"'
    with pytest.raises(ValueError, match="cert labs only"):
        LabConfig(key_passphrase="lab-key-pass")


@pytest.mark.parametrize(("node", "local", "remote"), [
    ("ini", "10.100.0.0/24, fd00:100::/64", "10.200.0.0/24, fd00:200::/64"),
    ("segw2", "10.200.0.0/24, fd00:200::/64", "10.100.0.0/24, fd00:100::/64"),
])  # fmt: skip
def test_inner_ipv6_adds_ipv6_nets_to_the_selectors(node: str, local: str, remote: str) -> None:
    text = render_swanctl_conf(node, LabConfig(ipv6=True, inner_ipv6=True))
    assert _value(text, "local_ts") == local
    assert _value(text, "remote_ts") == remote
    plain = render_swanctl_conf(node, LabConfig(ipv6=True))
    assert "fd00:" not in plain


@pytest.mark.parametrize("auth", ["psk", "cert"])
@pytest.mark.parametrize(("gateway", "ipv6", "addr"), [
    ("segw1", False, "10.99.1.2"), ("segw2", True, "fd99:2::2"), ("segw3", False, "10.99.3.2"),
])  # fmt: skip
def test_gateway_conf(gateway: str, ipv6: bool, addr: str, auth: str) -> None:
    text = render_swanctl_conf(gateway, LabConfig(gateways=3, ipv6=ipv6, auth=auth))  # type: ignore[arg-type]
    assert _balanced(text)
    assert "$" not in text
    assert _value(text, "local_addrs") == addr
    assert _value(text, "remote_addrs") == "%any"
    assert _value(text, "unique") == "replace"
    assert f"id = {gateway}.lab.extsock" in text
    assert "id = %any" in text
    assert _value(text, "local_ts") == "10.200.0.0/24"
    assert _value(text, "remote_ts") == "10.100.0.0/24"
    if auth == "cert":
        assert _value(text, "certs") == f"{gateway}.pem"
        assert _value(text, "auth") == "pubkey"
    else:
        assert _value(text, "auth") == "psk"
        assert "certs" not in text


def test_strongswan_conf_defaults() -> None:
    for node in ("ini", "segw1"):
        text = render_strongswan_conf(
            node, LabConfig(), vici_socket="/x/charon.vici", log_path="/x/charon.log"
        )
        assert _balanced(text)
        assert _value(text, "load") == PLUGINS
        assert _value(text, "socket") == "unix:///x/charon.vici"
        assert _value(text, "path") == "/x/charon.log"
        assert _value(text, "flush_line") == "yes"
        assert _value(text, "install_virtual_ip") == "no"
        assert "retransmit_timeout" not in text
        assert "kernel-libipsec" in PLUGINS


def test_virtual_ips_are_installed_on_ini_only_when_asked() -> None:
    cfg = LabConfig(virtual_ips=True)
    ini = render_strongswan_conf("ini", cfg, vici_socket="/v", log_path="/l")
    assert _value(ini, "install_virtual_ip") == "yes"
    gw = render_strongswan_conf("segw1", cfg, vici_socket="/v", log_path="/l")
    assert _value(gw, "install_virtual_ip") == "no"


def test_retransmit_overrides_only_for_ini() -> None:
    cfg = LabConfig(retransmit_timeout=1, retransmit_tries=3, retransmit_base=1.5)
    ini = render_strongswan_conf("ini", cfg, vici_socket="/v", log_path="/l")
    assert _value(ini, "retransmit_timeout") == "1"
    assert _value(ini, "retransmit_tries") == "3"
    assert _value(ini, "retransmit_base") == "1.5"
    segw = render_strongswan_conf("segw1", cfg, vici_socket="/v", log_path="/l")
    assert "retransmit_timeout" not in segw


def test_render_node_paths() -> None:
    files = render_node("ini", LabConfig(), NODE_DIR)
    assert set(files) == {"strongswan.conf", "swanctl.conf"}
    assert f"unix://{NODE_DIR}/charon.vici" in files["strongswan.conf"]
    assert f"{NODE_DIR}/charon.log" in files["strongswan.conf"]


def test_names_and_addresses() -> None:
    cfg = LabConfig(gateways=3)
    assert cfg.nodes == ("ini", "segw1", "segw2", "segw3")
    assert [cfg.namespace(n) for n in cfg.nodes] == ["exs-ini", "exs-segw1", "exs-segw2",
                                                     "exs-segw3"]  # fmt: skip
    link = Link(3)
    assert (link.ini_if, link.gw_if) == ("exs-i3", "exs-g3")
    assert (link.ini_v4, link.gw_v4, link.ini_v6, link.gw_v6) == (
        "10.99.3.1", "10.99.3.2", "fd99:3::1", "fd99:3::2"
    )  # fmt: skip
    longest = LabConfig(prefix="abcdef-")
    assert all(len(name) <= 15 for lk in longest.links for name in (lk.ini_if, lk.gw_if))


@pytest.mark.parametrize(
    "kwargs",
    [{"gateways": 0}, {"gateways": 4}, {"auth": "eap"}, {"psk": "a b"}, {"prefix": "EXS"},
     {"retransmit_timeout": 0}, {"retransmit_base": 0.5}],
)  # fmt: skip
def test_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LabConfig(**kwargs)  # type: ignore[arg-type]


def test_config_round_trip() -> None:
    cfg = LabConfig(gateways=3, ipv6=True, auth="cert", retransmit_timeout=1.0)
    assert LabConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg


def test_cli_render(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        lab_cli,
        ["render", "segw2", "--out", str(tmp_path), "--auth", "cert",
         "--vici-socket", "/run/extsock/charon.vici"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "certs = segw2.pem" in (tmp_path / "swanctl.conf").read_text()
    assert "unix:///run/extsock/charon.vici" in (tmp_path / "strongswan.conf").read_text()
