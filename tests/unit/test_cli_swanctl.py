"""The swanctl-like commands (list-sas, list-conns, load-*, initiate, terminate, stats, version)
against a fake charon speaking real VICI on a unix socket."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from extsock_py import __version__
from extsock_py.cli import main, render
from extsock_py.cli.swanctl import COMMANDS, attach_swanctl_commands, complete_child, complete_ike
from tests.fakes import charon_messages as cm
from tests.fakes import fake_charon as fc
from tests.fakes.fake_charon import Client, FakeCharon

PSK = "Very-Secret-PSK-4711"
MISSING_URI = "unix:///nonexistent/extsock-test/charon.vici"
Handlers = Callable[[str, fc.Handler], None]


def cli() -> click.Group:
    """A copy of the main group (its -u/--uri and logging options) with the commands attached."""
    group = click.Group(
        "extsock",
        params=list(main.params),
        callback=main.callback,
        context_settings=main.context_settings,
    )
    attach_swanctl_commands(group)
    return group


def run(uri: str, *args: str) -> Result:
    return CliRunner().invoke(cli(), ["-u", uri, *args])


@pytest.fixture
def fake() -> Iterator[FakeCharon]:
    with FakeCharon() as f:
        yield f


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> Handlers:
    """Add or replace a command handler of the fake charon for one test."""

    def put(name: str, handler: fc.Handler) -> None:
        monkeypatch.setitem(fc._HANDLERS, name, handler)

    return put


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("extsock: ")
    return lines[0]


# -- list-sas --------------------------------------------------------------------------------


def test_list_sas_text_is_swanctls(fake: FakeCharon) -> None:
    fake.add_sa("home@10.99.1.2", children=["net"], bytes_in=123456, packets_in=789)

    result = run(fake.uri, "list-sas")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "home@10.99.1.2: #1, ESTABLISHED, IKEv2, 84b0016b5660a18a_i* 1b2c3d4e5f607182_r",
        "  local  '10.99.0.1' @ 10.99.0.1[500]",
        "  remote '10.99.1.2' @ 10.99.1.2[500]",
        "  AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519",
        "  established 3s ago, rekeying in 13000s",
        "  net: #1, reqid 1, INSTALLED, TUNNEL, ESP:AES_GCM_16-256",
        "    installed 12s ago, rekeying in 3300s, expires in 3600s",
        "    in  c1a2b3c4, 123456 bytes,   789 packets,     1s ago",
        "    out c5d6e7f8,      0 bytes,     0 packets",
        "    local  10.100.0.0/24",
        "    remote 10.200.0.0/24",
    ]
    assert result.stderr == ""


def test_list_sas_text_of_a_half_open_sa_prints_no_null(fake: FakeCharon) -> None:
    fake.add_sa("home@10.99.2.2", "CONNECTING", remote_host="10.99.2.2")

    result = run(fake.uri, "list-sas")

    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "home@10.99.2.2: #1, CONNECTING, IKEv2, 84b0016b5660a18a_i* 0000000000000000_r",
        "  local  '10.99.0.1' @ 10.99.0.1[500]",
        "  remote '10.99.2.2' @ 10.99.2.2[500]",
        "  active:  IKE_VENDOR IKE_INIT IKE_NATD IKE_AUTH CHILD_CREATE",
    ]


def test_list_sas_json_converts_bytes_numbers_flags_and_lists(fake: FakeCharon) -> None:
    fake.add_sa("home@10.99.1.2", children=["net"], bytes_in=123456, packets_in=789)

    result = run(fake.uri, "list-sas", "--json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["version"] == 1
    (sa,) = document["sas"]
    assert sa["name"] == "home@10.99.1.2"
    assert sa["uniqueid"] == 1 and sa["version"] == 2 and sa["local-port"] == 500
    assert sa["state"] == "ESTABLISHED"
    assert sa["established"] == 3 and sa["rekey-time"] == 13000 and sa["reauth-time"] is None
    assert sa["initiator"] is True and sa["nat-any"] is False
    assert sa["encr-keysize"] == 256
    assert sa["tasks-active"] == [] and sa["local-vips"] == []
    (child,) = sa["child-sas"]
    assert child["name"] == "net" and child["uniqueid"] == 1 and child["reqid"] == 1
    assert child["bytes-in"] == 123456 and child["packets-in"] == 789 and child["use-in"] == 1
    assert child["bytes-out"] == 0 and child["use-out"] is None
    assert child["spi-in"] == "c1a2b3c4"
    assert child["local-ts"] == ["10.100.0.0/24"] and child["remote-ts"] == ["10.200.0.0/24"]
    assert child["esn"] is False and child["encap"] is False
    assert sa["other"] == {} and child["other"] == {}


def test_list_sas_json_schema_is_stable_whatever_the_state(fake: FakeCharon) -> None:
    fake.add_sa("a", children=["net"])
    fake.add_sa("b", "CONNECTING")

    document = json.loads(run(fake.uri, "list-sas", "--json").stdout)

    ike_keys = ["name", *render.IKE_SA_FIELDS, "child-sas", "other"]
    child_keys = [*render.CHILD_SA_FIELDS, "other"]
    assert [list(sa) for sa in document["sas"]] == [ike_keys, ike_keys]
    assert list(document["sas"][0]["child-sas"][0]) == child_keys
    connecting = document["sas"][1]
    assert connecting["established"] is None and connecting["encr-alg"] is None
    assert connecting["tasks-active"][:2] == ["IKE_VENDOR", "IKE_INIT"]
    assert connecting["child-sas"] == []


def test_list_sas_sends_the_filters(fake: FakeCharon) -> None:
    fake.add_sa("a")
    uid = fake.add_sa("b")

    assert run(fake.uri, "list-sas", "--ike", "a").exit_code == 0
    result = run(fake.uri, "list-sas", "--ike-id", str(uid), "--json")

    assert [r.message for r in fake.commands("list-sas")] == [{"ike": b"a"}, {"ike-id": b"2"}]
    assert [sa["name"] for sa in json.loads(result.stdout)["sas"]] == ["b"]


def test_list_sas_with_no_sa(fake: FakeCharon) -> None:
    text = run(fake.uri, "list-sas")
    as_json = run(fake.uri, "list-sas", "--json")

    assert (text.exit_code, text.stdout) == (0, "")
    assert json.loads(as_json.stdout) == {"version": 1, "sas": []}


def test_list_sas_ike_id_must_be_positive(fake: FakeCharon) -> None:
    assert run(fake.uri, "list-sas", "--ike-id", "0").exit_code == 2
    assert fake.commands("list-sas") == []


# -- list-conns ------------------------------------------------------------------------------


def listed_conn() -> OrderedDict[str, Any]:
    """A list-conn event body as vici_query.c (5.9.8) builds it."""
    auth_lists: dict[str, Any] = {"groups": [], "cert_policy": [], "cacerts": []}
    child: OrderedDict[str, Any] = OrderedDict(
        [
            ("mode", b"TUNNEL"),
            ("rekey_time", b"3600"),
            ("rekey_bytes", b"0"),
            ("rekey_packets", b"0"),
            ("dpd_action", b"restart"),
            ("close_action", b"none"),
            ("local-ts", [b"10.100.0.0/24"]),
            ("remote-ts", [b"10.200.0.0/24", b"10.201.0.0/24"]),
        ]
    )
    return OrderedDict(
        [
            ("local_addrs", [b"10.99.0.1"]),
            ("remote_addrs", [b"10.99.1.2", b"10.99.2.2"]),
            ("version", b"IKEv2"),
            ("reauth_time", b"0"),
            ("rekey_time", b"14400"),
            ("unique", b"UNIQUE_NO"),
            ("dpd_delay", b"30"),
            (
                "local-1",
                OrderedDict(
                    [
                        ("class", b"public key"),
                        ("id", b"moon"),
                        *auth_lists.items(),
                        ("certs", [b"C=CH, O=strongSwan, CN=moon"]),
                    ]
                ),
            ),
            (
                "remote-1",
                OrderedDict([("class", b"public key"), ("id", b"gw"), *auth_lists.items()]),
            ),
            ("children", OrderedDict([("net", child)])),
        ]
    )


@pytest.fixture
def conns_like_charon(fake: FakeCharon, handlers: Handlers) -> FakeCharon:
    """list-conns answered with charon-shaped events for every loaded connection name."""

    def list_conns(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        only = msg["ike"].decode() if "ike" in msg else None
        for name in f.conns:
            if only in (None, name):
                fc._stream(client, "list-conn", {name: listed_conn()})
        return {}

    handlers("list-conns", list_conns)
    fake.conns["home"] = {}
    fake.conns["office"] = {}
    return fake


def test_list_conns_text_is_swanctls(conns_like_charon: FakeCharon) -> None:
    result = run(conns_like_charon.uri, "list-conns", "--ike", "home")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "home: IKEv2, no reauthentication, rekeying every 14400s, dpd delay 30s",
        "  local:  10.99.0.1",
        "  remote: 10.99.1.2",
        "  remote: 10.99.2.2",
        "  local public key authentication:",
        "    id: moon",
        "    certs: C=CH, O=strongSwan, CN=moon",
        "  remote public key authentication:",
        "    id: gw",
        "  net: TUNNEL, rekeying every 3600s, dpd action is restart",
        "    local:  10.100.0.0/24",
        "    remote: 10.200.0.0/24 10.201.0.0/24",
    ]
    assert conns_like_charon.commands("list-conns")[-1].message == {"ike": b"home"}


def test_list_conns_json(conns_like_charon: FakeCharon) -> None:
    result = run(conns_like_charon.uri, "list-conns", "--json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["version"] == 1
    assert [c["name"] for c in document["conns"]] == ["home", "office"]
    conn = document["conns"][0]
    assert list(conn) == ["name", *render.CONN_FIELDS, "local", "remote", "children", "other"]
    assert conn["remote_addrs"] == ["10.99.1.2", "10.99.2.2"]
    assert conn["rekey_time"] == 14400 and conn["reauth_time"] == 0 and conn["dpd_delay"] == 30
    assert conn["dpd_timeout"] is None and conn["ppk_required"] is False
    (local,) = conn["local"]
    assert list(local) == ["name", *render.AUTH_FIELDS, "other"]
    assert local["name"] == "local-1" and local["class"] == "public key"
    assert local["certs"] == ["C=CH, O=strongSwan, CN=moon"] and local["groups"] == []
    (child,) = conn["children"]
    assert list(child) == ["name", *render.CHILD_CFG_FIELDS, "other"]
    assert child["name"] == "net" and child["rekey_time"] == 3600 and child["rekey_bytes"] == 0
    assert child["remote-ts"] == ["10.200.0.0/24", "10.201.0.0/24"]
    assert child["priority"] is None and conn["other"] == {}


# -- stats and version -----------------------------------------------------------------------


def test_stats_text_is_swanctls(fake: FakeCharon) -> None:
    fake.add_sa("a")
    fake.add_sa("b", "CONNECTING")

    result = run(fake.uri, "stats")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "uptime: 1 minute, since Nov 23 19:33:00 2025",
        "worker threads: 16 total, 11 idle, working: 4/0/1/0",
        "job queues: 0/0/0/0",
        "jobs scheduled: 2",
        "IKE_SAs: 2 total, 1 half-open",
        "loaded plugins: random nonce vici",
    ]


def test_stats_json(fake: FakeCharon) -> None:
    fake.add_sa("b", "CONNECTING")

    result = run(fake.uri, "stats", "--json")

    document = json.loads(result.stdout)
    assert document == {
        "version": 1,
        "stats": {
            "uptime": {"running": "1 minute", "since": "Nov 23 19:33:00 2025"},
            "workers": {
                "total": 16,
                "idle": 11,
                "active": {"critical": 4, "high": 0, "medium": 1, "low": 0},
            },
            "queues": {"critical": 0, "high": 0, "medium": 0, "low": 0},
            "scheduled": 2,
            "ikesas": {"total": 1, "half-open": 1},
            "plugins": ["random", "nonce", "vici"],
            "mem": None,
            "mallinfo": None,
            "other": {},
        },
    }


def test_stats_shows_mallinfo_when_charon_has_it(fake: FakeCharon, handlers: Handlers) -> None:
    base = fc._HANDLERS["stats"]

    def stats(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        mallinfo = {"sbrk": "1000", "mmap": "0", "used": "800", "free": "200"}
        return {**(base(f, client, msg) or {}), "mallinfo": mallinfo}

    handlers("stats", stats)

    text = run(fake.uri, "stats")
    document = json.loads(run(fake.uri, "stats", "--json").stdout)

    assert "mallinfo: sbrk 1000, mmap 0, used 800, free 200" in text.stdout.splitlines()
    assert document["stats"]["mallinfo"] == {"sbrk": 1000, "mmap": 0, "used": 800, "free": 200}


def test_version_text_and_json(fake: FakeCharon) -> None:
    text = run(fake.uri, "version")
    as_json = run(fake.uri, "version", "--json")

    assert text.exit_code == 0
    assert text.stdout.splitlines() == [
        f"extsock {__version__}",
        "strongSwan 5.9.8 charon (Linux, 6.1.0, x86_64)",
    ]
    assert json.loads(as_json.stdout) == {
        "version": 1,
        "extsock": {"version": __version__},
        "charon": {
            "daemon": "charon",
            "version": "5.9.8",
            "sysname": "Linux",
            "release": "6.1.0",
            "machine": "x86_64",
            "other": {},
        },
    }


# -- the schema's conversions ----------------------------------------------------------------


def test_unknown_keys_go_to_other_and_bad_numbers_become_null() -> None:
    event = {
        "gw": {
            "uniqueid": b"7",
            "version": b"2",
            "state": b"ESTABLISHED",
            "established": b"soon",
            "ke1-alg": b"MLKEM_768",
            "local-vips": b"10.3.0.1",
            "child-sas": {"net-9": {"uniqueid": b"9", "name": b"net", "label": b"\xff\xfe"}},
        }
    }

    (sa,) = render.list_sas_json([event])["sas"]

    assert sa["established"] is None
    assert sa["other"] == {"established": "soon", "ke1-alg": "MLKEM_768"}
    assert sa["local-vips"] == ["10.3.0.1"]
    assert sa["child-sas"][0]["uniqueid"] == 9
    assert sa["child-sas"][0]["label"] == "\\xff\\xfe"
    assert sa["child-sas"][0]["bytes-in"] is None


def test_control_log_line_is_swanctls() -> None:
    assert render.format_log(cm.log("initiating IKE_SA x[1]")) == "[IKE] initiating IKE_SA x[1]"


# -- load-conns ------------------------------------------------------------------------------

CONF = """
connections {
   home {
      version = 2
      local_addrs = 10.99.0.1
      remote_addrs = 10.99.1.2, 10.99.2.2
      proposals = aes256-sha256-x25519
      local {
         auth = pubkey
         certs = moonCert.pem
      }
      remote {
         auth = pubkey
         id = gw
      }
      children {
         net {
            local_ts = 10.100.0.0/24
            remote_ts = 10.200.0.0/24, 10.201.0.0/24
            esp_proposals = aes256gcm16
         }
      }
   }
   office {
      remote_addrs = 10.98.1.1
      local {
         auth = psk
      }
      remote {
         auth = psk
      }
      children {
         lan {
            remote_ts = 10.50.0.0/16
         }
      }
   }
}
secrets {
   ike-home {
      id-1 = moon
      id-2 = gw
      secret = "%s"
   }
   eap-carol {
      secret = 0x0123456789
   }
}
""".replace("%s", PSK)

CERT = b"\x30\x82\x01\x0a\x02\x82\x01\x01\x00\xc3"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    (tmp_path / "x509").mkdir()
    (tmp_path / "x509" / "moonCert.pem").write_bytes(CERT)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "moonKey.pem").write_bytes(KEY)
    path = tmp_path / "swanctl.conf"
    path.write_text(CONF)
    return path


def test_load_conns_sends_lists_and_cert_bytes_and_unloads_the_rest(
    fake: FakeCharon, conf: Path
) -> None:
    fake.conns.update({"old": {}, "home@10.99.1.2": {}, "gone@10.1.1.1": {}})

    result = run(fake.uri, "load-conns", "--file", str(conf))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "kept connection 'home@10.99.1.2' (extsock daemon's, for 'home')",
        "loaded connection 'home'",
        "loaded connection 'office'",
        "successfully loaded 2 connections, 2 unloaded",
    ]
    home = fake.commands("load-conn")[0].message["home"]
    assert home["remote_addrs"] == [b"10.99.1.2", b"10.99.2.2"]
    assert home["local_addrs"] == [b"10.99.0.1"]
    assert home["proposals"] == [b"aes256-sha256-x25519"]
    assert home["version"] == b"2"
    assert home["local"]["certs"] == [CERT]
    assert home["children"]["net"]["remote_ts"] == [b"10.200.0.0/24", b"10.201.0.0/24"]
    assert home["children"]["net"]["esp_proposals"] == [b"aes256gcm16"]
    unloaded = [r.message["name"] for r in fake.commands("unload-conn")]
    assert unloaded == [b"old", b"gone@10.1.1.1"]
    assert sorted(fake.conns) == ["home", "home@10.99.1.2", "office"]
    assert [r.command for r in fake.commands()][:1] == ["get-conns"]


def test_load_conns_reports_each_refused_connection(
    fake: FakeCharon, conf: Path, handlers: Handlers
) -> None:
    base = fc._HANDLERS["load-conn"]

    def load_conn(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any] | None:
        if "office" in msg:
            return {"success": "no", "errmsg": "invalid value for: remote_ts, config discarded"}
        return base(f, client, msg)

    handlers("load-conn", load_conn)

    result = run(fake.uri, "load-conns", "--file", str(conf))

    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["loaded connection 'home'"]
    assert result.stderr.splitlines() == [
        "loading connection 'office' failed: invalid value for: remote_ts, config discarded",
        "extsock: loaded 1 of 2 connections, 1 failed to load, 0 unloaded; fix the connections "
        "named above and run load-conns again",
    ]


def test_load_conns_with_a_bad_file_loads_nothing(fake: FakeCharon, tmp_path: Path) -> None:
    bad = tmp_path / "swanctl.conf"
    bad.write_text("connections {\n  home {\n    remote_adrs = 10.0.0.1\n  }\n}\n")

    result = run(fake.uri, "load-conns", "--file", str(bad))

    assert result.exit_code == 1
    line = one_line_error(result)
    assert f"{bad}:3" in line and "remote_adrs" in line and "remote_addrs" in line
    assert fake.commands() == []


def test_load_conns_with_a_missing_file_is_a_usage_error(fake: FakeCharon, tmp_path: Path) -> None:
    result = run(fake.uri, "load-conns", "--file", str(tmp_path / "nope.conf"))

    assert result.exit_code == 2
    assert "does not exist" in result.stderr


# -- load-creds ------------------------------------------------------------------------------


def test_load_creds_sends_secrets_and_keys_and_never_prints_them(
    fake: FakeCharon, conf: Path
) -> None:
    result = run(fake.uri, "load-creds", "--file", str(conf))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"loaded certificate from '{conf.parent / 'x509' / 'moonCert.pem'}'",
        f"loaded private key from '{conf.parent / 'private' / 'moonKey.pem'}'",
        "loaded ike secret 'ike-home'",
        "loaded eap secret 'eap-carol'",
        "successfully loaded 4 credentials, 0 unloaded",
    ]
    assert [r.message for r in fake.commands("load-cert")] == [
        {"type": b"X509", "flag": b"NONE", "data": CERT}
    ]
    assert PSK not in result.output and "0123456789" not in result.output
    assert "BEGIN PRIVATE KEY" not in result.output
    shared = [r.message for r in fake.commands("load-shared")]
    assert shared[0] == {
        "id": b"ike-home",
        "type": b"ike",
        "data": PSK.encode(),
        "owners": [b"moon", b"gw"],
    }
    assert shared[1]["data"] == bytes.fromhex("0123456789") and shared[1]["owners"] == []
    assert [r.message for r in fake.commands("load-key")] == [{"type": b"any", "data": KEY}]


def test_load_creds_refused_secret_is_named_not_shown(fake: FakeCharon, conf: Path) -> None:
    fake.fail["load-shared"] = "loading shared key failed"

    result = run(fake.uri, "load-creds", "--file", str(conf))

    assert result.exit_code == 1
    assert PSK not in result.output
    assert result.stderr.splitlines()[0] == (
        "loading ike secret 'ike-home' failed: loading shared key failed"
    )
    assert result.stderr.splitlines()[-1].startswith("extsock: loaded 2 of 4 credentials")


def test_load_creds_unloads_stale_credentials_as_swanctl(
    fake: FakeCharon, conf: Path, handlers: Handlers
) -> None:
    def get_keys(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        return {"keys": ["aa11", "bb22"]}

    def get_shared(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        return {"keys": ["ike-home", "ike-old"]}

    def load_key(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        return {"success": "yes", "id": "aa11"}

    def ok(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        return {"success": "yes"}

    for name, handler in [
        ("get-keys", get_keys),
        ("get-shared", get_shared),
        ("load-key", load_key),
        ("unload-key", ok),
        ("unload-shared", ok),
    ]:
        handlers(name, handler)

    result = run(fake.uri, "load-creds", "--file", str(conf))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "successfully loaded 4 credentials, 2 unloaded"
    assert [r.message for r in fake.commands("unload-key")] == [{"id": b"bb22"}]
    assert [r.message for r in fake.commands("unload-shared")] == [{"id": b"ike-old"}]


def test_load_creds_unloads_no_key_when_charon_gives_no_key_id(
    fake: FakeCharon, conf: Path, handlers: Handlers
) -> None:
    def get_keys(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        return {"keys": ["aa11"]}

    def load_key(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        return {"success": "yes"}

    handlers("get-keys", get_keys)
    handlers("load-key", load_key)

    result = run(fake.uri, "load-creds", "--file", str(conf))

    assert result.exit_code == 0, result.stderr
    assert fake.commands("unload-key") == []


# -- initiate and terminate ------------------------------------------------------------------


def test_initiate_streams_charons_log_then_reports_success(
    fake: FakeCharon, handlers: Handlers
) -> None:
    base = fc._HANDLERS["initiate"]

    def initiate(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any] | None:
        fc._stream(client, "control-log", cm.log("initiating IKE_SA home[1] to 10.99.1.2"))
        fc._stream(client, "control-log", cm.log("CHILD_SA net{1} established", group="CHD"))
        return base(f, client, msg)

    handlers("initiate", initiate)
    fake.conns["home"] = {"children": {"net": {}}}

    result = run(fake.uri, "initiate", "--child", "net", "--ike", "home", "--timeout", "2.5")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[IKE] initiating IKE_SA home[1] to 10.99.1.2",
        "[CHD] CHILD_SA net{1} established",
        "initiate completed successfully",
    ]
    assert fake.commands("initiate")[0].message == {
        "child": b"net",
        "ike": b"home",
        "timeout": b"2500",
        "loglevel": b"1",
    }


def test_initiate_without_timeout_waits_for_charon(fake: FakeCharon) -> None:
    fake.conns["home"] = {"children": {"net": {}}}

    result = run(fake.uri, "initiate", "--ike", "home", "--loglevel", "2")

    assert result.exit_code == 0, result.stderr
    assert fake.commands("initiate")[0].message == {"ike": b"home", "loglevel": b"2"}


def test_initiate_refused_exits_1_with_charons_reason(fake: FakeCharon) -> None:
    result = run(fake.uri, "initiate", "--child", "nope")

    assert result.exit_code == 1
    line = one_line_error(result)
    assert line.startswith("extsock: initiate failed: CHILD_SA config 'nope' not found; ")
    assert "extsock list-conns" in line
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args", [[], ["--timeout", "0"], ["--timeout", "-1", "--child", "x"], ["--loglevel", "9"]]
)
def test_initiate_usage_errors(fake: FakeCharon, args: list[str]) -> None:
    assert run(fake.uri, "initiate", *args).exit_code == 2
    assert fake.commands() == []


@pytest.mark.parametrize(
    ("args", "sent"),
    [
        (["--ike", "home"], {"ike": b"home"}),
        (["--ike-id", "1", "--force"], {"ike-id": b"1", "force": b"yes"}),
        (["--child", "net", "--timeout", "3"], {"child": b"net", "timeout": b"3000"}),
        (["--child-id", "4", "--loglevel", "0"], {"child-id": b"4"}),
    ],
)
def test_terminate_sends_one_selector(
    fake: FakeCharon, handlers: Handlers, args: list[str], sent: dict[str, bytes]
) -> None:
    def terminate(f: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        fc._stream(client, "control-log", cm.log("deleting IKE_SA home[1]"))
        return {"success": "yes", "matches": "1", "terminated": "1"}

    handlers("terminate", terminate)

    result = run(fake.uri, "terminate", *args)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[IKE] deleting IKE_SA home[1]",
        "terminate completed successfully",
    ]
    loglevel = b"0" if "--loglevel" in args else b"1"
    assert fake.commands("terminate")[0].message == {**sent, "loglevel": loglevel}


def test_terminate_without_match_exits_1(fake: FakeCharon) -> None:
    result = run(fake.uri, "terminate", "--ike", "home")

    assert result.exit_code == 1
    line = one_line_error(result)
    assert "terminate failed: no matching SAs to terminate found" in line
    assert "extsock list-sas" in line


@pytest.mark.parametrize("args", [[], ["--ike", "a", "--ike-id", "1"], ["--child-id", "0"]])
def test_terminate_needs_exactly_one_selector(fake: FakeCharon, args: list[str]) -> None:
    result = run(fake.uri, "terminate", *args)

    assert result.exit_code == 2
    assert fake.commands() == []


# -- charon unreachable, refusing, or lost ---------------------------------------------------

ALL_INVOCATIONS = [
    ["list-sas"],
    ["list-sas", "--json"],
    ["list-conns"],
    ["list-conns", "--json"],
    ["stats"],
    ["stats", "--json"],
    ["version"],
    ["version", "--json"],
    ["initiate", "--child", "net"],
    ["terminate", "--ike", "home"],
    ["load-conns", "--file", "{conf}"],
    ["load-creds", "--file", "{conf}"],
]


@pytest.mark.parametrize("args", ALL_INVOCATIONS)
def test_missing_socket_exits_3_with_a_hint(conf: Path, args: list[str]) -> None:
    result = run(MISSING_URI, *[a.format(conf=conf) for a in args])

    assert result.exit_code == 3
    line = one_line_error(result)
    assert line.startswith(f"extsock: cannot reach charon at {MISSING_URI} (No such file")
    assert "is charon running" in line and "-u/--uri" in line
    assert result.stdout in ("", f"extsock {__version__}\n")


def test_invalid_uri_is_a_usage_error() -> None:
    result = run("http://localhost", "stats")

    assert result.exit_code == 2
    assert "invalid VICI URI 'http://localhost'" in result.stderr


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("list-sas", ["list-sas"]),
        ("list-conns", ["list-conns", "--json"]),
        ("stats", ["stats"]),
        ("version", ["version", "--json"]),
        ("get-conns", ["load-conns", "--file", "{conf}"]),
    ],
)
def test_charon_refusing_exits_1(
    fake: FakeCharon, conf: Path, command: str, args: list[str]
) -> None:
    fake.fail[command] = "not today"

    result = run(fake.uri, *[a.format(conf=conf) for a in args])

    assert result.exit_code == 1
    assert one_line_error(result) == f"extsock: {command} failed: not today"
    assert result.stdout == ""


def test_charon_without_a_command_says_so(
    fake: FakeCharon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(fc._HANDLERS, "stats")

    result = run(fake.uri, "stats")

    assert result.exit_code == 1
    assert "does not know 'stats'" in one_line_error(result)


def test_charon_lost_during_a_command_exits_3(fake: FakeCharon, handlers: Handlers) -> None:
    def hang_up(f: FakeCharon, client: Client, msg: dict[str, Any]) -> None:
        client.close()

    handlers("list-sas", hang_up)

    result = run(fake.uri, "list-sas")

    assert result.exit_code == 3
    assert one_line_error(result).startswith(f"extsock: lost charon at {fake.uri} during")


# -- attaching, help and completion ----------------------------------------------------------


def test_attach_adds_swanctls_command_names_once() -> None:
    group = click.Group("g")
    attach_swanctl_commands(group)
    attach_swanctl_commands(group)

    assert sorted(group.commands) == sorted(
        [
            "list-sas",
            "list-conns",
            "load-conns",
            "load-creds",
            "load-all",
            "initiate",
            "terminate",
            "stats",
            "version",
        ]
    )


@pytest.mark.parametrize("command", [c.name or "" for c in COMMANDS])
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(cli(), [command, "--help"])

    assert result.exit_code == 0
    assert "Usage: extsock " + command in result.stdout
    assert len(result.stdout.splitlines()) > 4


def test_file_options_complete_as_paths() -> None:
    for command in COMMANDS:
        for param in command.params:
            if param.name == "config_file":
                assert isinstance(param.type, click.Path)


def test_ike_and_child_names_complete_from_charon(conns_like_charon: FakeCharon) -> None:
    group = cli()
    ctx = click.Context(group, info_name="extsock")
    ctx.params["uri"] = conns_like_charon.uri
    param = click.Option(["--ike"])

    assert [i.value for i in complete_ike(ctx, param, "ho")] == ["home"]
    assert [i.value for i in complete_ike(ctx, param, "")] == ["home", "office"]
    assert [i.value for i in complete_child(ctx, param, "")] == ["net"]


def test_completion_without_charon_offers_nothing() -> None:
    ctx = click.Context(cli(), info_name="extsock")
    ctx.params["uri"] = MISSING_URI

    assert complete_ike(ctx, click.Option(["--ike"]), "") == []


def test_docs_name_every_field_of_the_schema() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "json-output.md").read_text()
    tables = [
        render.IKE_SA_FIELDS,
        render.CHILD_SA_FIELDS,
        render.CONN_FIELDS,
        render.AUTH_FIELDS,
        render.CHILD_CFG_FIELDS,
        render.STATS_FIELDS,
    ]
    missing = [key for table in tables for key in table if f"| `{key}` |" not in doc]
    missing += [k for k in render.VERSION_FIELDS if f"| `charon.{k}` |" not in doc]

    assert missing == []
    assert f"schema version {render.SCHEMA_VERSION}" in doc
