"""swanctl.conf -> VICI messages, as `swanctl --load-conns --raw` and `--load-creds` send them.

The expected bodies follow load_conns.c (5.9.8): a connection's options first, in order of first
appearance, then its subsections; is_list_key() values as lists at any depth; is_file_list_key()
values (certs, cacerts, pubkeys) as the files' contents from x509/, x509ca/, pubkey/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from vici.protocol import FiniteStream, Message

from extsock_py.adapters.swanctl import ConfigError, read_swanctl_conf
from extsock_py.domain.credentials import SharedLoad

DATA = Path(__file__).parent / "data" / "swanctl"


def shared_message(secret: SharedLoad) -> dict[str, object]:
    """The load-shared message ViciCharon sends for `secret`."""
    owners = list(secret.owners)
    return {"id": secret.id, "type": secret.type, "data": secret.data.reveal(), "owners": owners}


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target / "swanctl.conf"


def test_psk_connection_body_matches_load_conns() -> None:
    loaded = read_swanctl_conf(DATA / "psk" / "swanctl.conf")
    assert loaded.connections == {
        "rw-carol": {
            "local_addrs": ["192.168.0.1"],
            "remote_addrs": ["192.168.0.100", "192.168.0.110"],
            "version": "1",
            "proposals": ["aes128-sha256-x25519"],
            "local": {"auth": "psk", "id": "moon.strongswan.org"},
            "remote": {"auth": "psk", "id": "carol@strongswan.org"},
            "children": {
                "net": {
                    "local_ts": ["10.1.0.0/16", "10.2.0.0/16"],
                    "updown": "/usr/local/libexec/ipsec/_updown iptables",
                    "esp_proposals": ["aes128gcm128-x25519"],
                    "start_action": "trap",
                    "dpd_action": "restart",
                    "close_action": "none",
                }
            },
        }
    }
    # options before sections, whatever the order in the file
    assert list(loaded.connections["rw-carol"]) == [
        "local_addrs",
        "remote_addrs",
        "version",
        "proposals",
        "local",
        "remote",
        "children",
    ]
    assert loaded.connection_lines == {"rw-carol": 4}
    assert loaded.credentials.keys == () and loaded.credentials.certificates == ()


def test_psk_shared_secrets_match_load_creds() -> None:
    loaded = read_swanctl_conf(DATA / "psk" / "swanctl.conf")
    assert [shared_message(s) for s in loaded.credentials.shared] == [
        {
            "id": "ike-carol",
            "type": "ike",
            "data": bytes.fromhex("16964066a10de938bdb2ab7864fe4459cab1"),
            "owners": ["carol@strongswan.org"],
        },
        {
            "id": "ike-plain",
            "type": "ike",
            "data": b'This is a strong "secret" # not a comment',
            "owners": ["moon.strongswan.org", "sun.strongswan.org"],
        },
        {"id": "ike-hex", "type": "ike", "data": bytes.fromhex("0123456789abcdef"), "owners": []},
    ]
    assert "secret" not in repr(loaded.credentials.shared).replace("Secret(", "")


def test_extsock_section_is_kept() -> None:
    loaded = read_swanctl_conf(DATA / "psk" / "swanctl.conf")
    assert loaded.extsock_section is not None
    failover = loaded.extsock_section.sections["failover"]
    assert {k: v.text for k, v in failover.entries.items()} == {
        "connection": "rw-carol",
        "interval": "5s",
    }


def test_cert_connection_reads_files_beside_the_conf() -> None:
    loaded = read_swanctl_conf(DATA / "cert" / "swanctl.conf")
    body = loaded.connections["rw"]
    assert body["local"] == {
        "auth": "pubkey",
        "certs": [(DATA / "cert" / "x509" / "moonCert.pem").read_bytes()],
        "id": "C=CH, O=strongSwan Project, CN=moon.strongswan.org",
    }
    assert body["remote"] == {
        "auth": "pubkey",
        "cacerts": [(DATA / "cert" / "x509ca" / "strongswanCert.pem").read_bytes()],
        "cert_policy": ["1.3.6.1.4.1.36906.1.1.1", "1.3.6.1.4.1.36906.1.1.2"],
        "revocation": "strict",
    }
    assert body["children"] == {
        "net": {
            "local_ts": ["10.1.0.0/16"],
            "remote_ts": ["10.2.0.0/16[tcp/443]", "dynamic"],
            "updown": "/usr/local/libexec/ipsec/_updown iptables",
            "esp_proposals": ["aes128gcm128-x25519", "aes256gcm16-modp3072"],
            "mode": "tunnel",
            "rekey_time": "1h",
        }
    }
    assert body["remote_addrs"] == ["gw1.example.org", "gw2.example.org"]
    assert body["send_cert"] == "always"


def test_private_keys_as_load_creds_noprompt() -> None:
    loaded = read_swanctl_conf(DATA / "cert" / "swanctl.conf")
    keys = loaded.credentials.keys
    assert [(Path(k.source).parent.name, Path(k.source).name, k.type) for k in keys] == [
        ("private", "moonKey.pem", "any"),
        ("rsa", "oldKey.pem", "rsa"),
    ]
    assert keys[0].data.reveal() == Path(keys[0].source).read_bytes()
    certs = loaded.credentials.certificates
    assert [(Path(c.source).parent.name, c.type, c.flag) for c in certs] == [
        ("x509", "X509", "NONE"),
        ("x509ca", "X509", "CA"),
    ]
    assert certs[1].data == Path(certs[1].source).read_bytes()
    assert b"MIIE" not in repr(loaded).encode()


def test_eap_multiple_rounds_and_inline_cert() -> None:
    loaded = read_swanctl_conf(DATA / "eap" / "swanctl.conf")
    body = loaded.connections["rw-eap"]
    assert list(body) == [
        "local_addrs",
        "pools",
        "version",
        "send_certreq",
        "local",
        "remote-1",
        "remote-2",
        "children",
    ]
    assert body["pools"] == ["rw_pool", "rw_pool6"]
    assert body["local"] == {
        "auth": "pubkey",
        "certs": [b"\x30\x82\x01\x0a"],
        "id": "moon.strongswan.org",
    }
    assert body["remote-2"] == {"auth": "eap-md5", "eap_id": "%any", "round": "2"}
    assert [(s.id, s.type, s.owners) for s in loaded.credentials.shared] == [
        ("eap-carol", "eap", ("carol",)),
        ("xauth-dave", "xauth", ("dave",)),
    ]
    assert loaded.credentials.shared[1].data.reveal() == b"dave"
    model = loaded.model.connections["rw-eap"]
    assert [r.name for r in model.remote] == ["remote-1", "remote-2"]


def test_includes_with_globs() -> None:
    loaded = read_swanctl_conf(DATA / "includes" / "swanctl.conf")
    assert list(loaded.connections) == ["gw-a", "gw-b", "gw-c"]
    for name, last in (("gw-a", "1"), ("gw-b", "2"), ("gw-c", "3")):
        assert loaded.connections[name] == {
            "local_addrs": ["198.51.100.1"],
            "remote_addrs": [f"203.0.113.{last}"],
            "local": {"auth": "psk"},
            "remote": {"auth": "psk"},
            "children": {"net": {"remote_ts": ["10.0.0.0/8"]}},
        }
    assert loaded.model.connections["gw-b"].section.file.endswith("conf.d/20-b.conf")
    assert [s.id for s in loaded.credentials.shared] == ["ike-all"]


@pytest.mark.parametrize("name", ["psk", "cert", "eap", "includes"])
def test_bodies_serialize_for_vici(name: str) -> None:
    loaded = read_swanctl_conf(DATA / name / "swanctl.conf")
    for conn in loaded.connections:
        wire = Message.serialize(loaded.load_conn_message(conn))
        assert Message.deserialize(FiniteStream(wire))[conn]  # the vici package round-trips it
    for secret in loaded.credentials.shared:
        assert Message.deserialize(FiniteStream(Message.serialize(shared_message(secret))))["type"]


def test_missing_cert_file_names_file_line_key(tmp_path: Path) -> None:
    conf = copy("cert", tmp_path)
    (conf.parent / "x509" / "moonCert.pem").unlink()
    with pytest.raises(ConfigError) as info:
        read_swanctl_conf(conf)
    err = info.value
    assert (err.file, err.line, err.key) == (str(conf), 9, "connections.rw.local.certs")
    assert str(conf.parent / "x509" / "moonCert.pem") in err.message
    assert err.accepted is not None and "x509/" in err.accepted


def test_absolute_cert_path_is_used_as_is(tmp_path: Path) -> None:
    cert = tmp_path / "elsewhere.pem"
    cert.write_bytes(b"DER")
    conf = copy("cert", tmp_path)
    conf.write_text(conf.read_text().replace("certs = moonCert.pem", f"certs = {cert}"))
    assert read_swanctl_conf(conf).connections["rw"]["local"] == {
        "auth": "pubkey",
        "certs": [b"DER"],
        "id": "C=CH, O=strongSwan Project, CN=moon.strongswan.org",
    }


def test_encrypted_key_without_passphrase_goes_out_as_is(tmp_path: Path) -> None:
    """swanctl --noprompt: no configured secret, so the file is sent typed by its folder."""
    conf = copy("cert", tmp_path)
    key = conf.parent / "pkcs8" / "enc.pem"
    key.parent.mkdir()
    key.write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n")
    sent = [k for k in read_swanctl_conf(conf).credentials.keys if k.source == str(key)]
    assert [(k.type, k.data.reveal()) for k in sent] == [("any", key.read_bytes())]


def test_pkcs12_container_without_passphrase_is_not_opened(tmp_path: Path) -> None:
    conf = copy("cert", tmp_path)
    (conf.parent / "pkcs12").mkdir()
    (conf.parent / "pkcs12" / "a.p12").write_bytes(b"\x30")
    creds = read_swanctl_conf(conf).credentials
    sources = [c.source for c in creds.certificates] + [k.source for k in creds.keys]
    assert not [s for s in sources if s.endswith("a.p12")]


def test_missing_conf_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        read_swanctl_conf(tmp_path / "swanctl.conf")


def test_missing_include_in_a_real_tree(tmp_path: Path) -> None:
    conf = copy("includes", tmp_path)
    (conf.parent / "base.conf").unlink()
    with pytest.raises(ConfigError) as info:
        read_swanctl_conf(conf)
    assert info.value.file == str(conf.parent / "conf.d" / "10-a.conf")
    assert info.value.line == 2
