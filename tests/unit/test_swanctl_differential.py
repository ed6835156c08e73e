"""Differential test: extsock sends charon what the real `swanctl --load-all --noprompt` sends.

For each setup of a corpus (every swanctl.conf section, every credential folder, every
secret type; keys and certificates made by strongSwan's `pki`, encrypted keys and PKCS#12
made with `cryptography`), the real swanctl and extsock each load it into a fake charon
that speaks the VICI wire and records every request. The load-*/unload-* requests of the
two must be the same multiset: for `extsock load-all` exactly; for the daemon's config
usecase apart from the documented clone overrides of managed connections (README: the
clone is named CONN@GATEWAY, has one remote address, keyingtries 1, and children with
start_action none, close_action none, dpd_action clear). A failure names the message and
the key that differ, and shows no secret (key and secret bytes are shown by length only).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from extsock_py.adapters.config_reader import read_desired_config
from extsock_py.adapters.publisher import Broadcast
from extsock_py.adapters.vici.commands import ViciCharon
from extsock_py.domain.profile import parse_clone_name
from extsock_py.usecases.config_usecase import ConfigUsecase
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes.fake_charon import FakeCharon, Received
from tests.fakes.ports import FakeClock
from tests.unit.test_cli_swanctl import cli

SWANCTL = shutil.which("swanctl")
PKI = shutil.which("pki")
pytestmark = pytest.mark.skipif(
    SWANCTL is None or PKI is None,
    reason="the real swanctl and pki binaries (strongswan-swanctl, strongswan-pki) are absent",
)
TIMEOUT = 30.0
PASS = "pass-never-shown-7f3a"
SECRET_KEYS = {"data"}  # what load-key/load-shared carry: shown by length only
CLONE_CONN_KEYS = ("remote_addrs", "keyingtries")
CLONE_CHILD = {"start_action": b"none", "close_action": b"none", "dpd_action": b"clear"}

# -- credentials, made once per session ------------------------------------------------------


def _pki(*args: str, stdin: bytes | None = None) -> bytes:
    assert PKI is not None
    done = subprocess.run(
        [PKI, *args], input=stdin, capture_output=True, timeout=TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"pki {args[0]} failed: {done.stderr.decode(errors='replace')[-300:]}")
    return done.stdout


@dataclass(frozen=True)
class Material:
    files: dict[str, bytes]

    def __getitem__(self, name: str) -> bytes:
        return self.files[name]


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    work = tmp_path_factory.mktemp("pki")
    f: dict[str, bytes] = {}

    def put(name: str, data: bytes) -> str:
        f[name] = data
        (work / name).write_bytes(data)
        return str(work / name)

    def gen(name: str, *args: str) -> str:
        return put(name, _pki("--gen", *args))

    ca_key = gen("ca.key", "--type", "ecdsa", "--size", "256", "--outform", "pem")
    ca_pem = put("ca.pem", _pki("--self", "--ca", "--in", ca_key, "--type", "ecdsa", "--dn",
                                "C=CH, O=diff, CN=Diff CA", "--outform", "pem"))  # fmt: skip
    rsa_key = gen("rsa.key", "--type", "rsa", "--size", "2048", "--outform", "pem")
    ecdsa_key = gen("ecdsa.key", "--type", "ecdsa", "--size", "384", "--outform", "pem")
    ed_key = gen("ed25519.key", "--type", "ed25519", "--outform", "pem")
    ec_der = gen("ecdsa.der", "--type", "ecdsa", "--size", "256", "--outform", "der")
    ca = ["--cacert", ca_pem, "--cakey", ca_key]

    def issue(name: str, key: str, dn: str, *extra: str, outform: str = "pem") -> str:
        return put(name, _pki("--issue", *ca, "--in", key, "--type", "priv", "--dn", dn,
                              *extra, "--outform", outform))  # fmt: skip

    host = issue("host.pem", ecdsa_key, "C=CH, O=diff, CN=host", "--san", "host.diff")
    issue("host.der", rsa_key, "C=CH, O=diff, CN=rsa", outform="der")
    issue("ocsp.pem", ed_key, "C=CH, O=diff, CN=ocsp", "--flag", "ocspSigning")
    aa = issue("aa.pem", ec_der, "C=CH, O=diff, CN=aa")
    put("crl.pem", _pki("--signcrl", *ca, "--lifetime", "10", "--outform", "pem"))
    put("ac.pem", _pki("--acert", "--in", host, "--group", "sales", "--issuercert", aa,
                       "--issuerkey", ec_der, "--outform", "pem"))  # fmt: skip
    put("pub.pem", _pki("--pub", "--in", rsa_key, "--outform", "pem"))
    # encrypted forms and a PKCS#12 container (pki makes neither)
    password = PASS.encode()
    rsa_priv = serialization.load_pem_private_key(f["rsa.key"], None)
    ec_priv = serialization.load_pem_private_key(f["ecdsa.key"], None)
    assert isinstance(rsa_priv, rsa.RSAPrivateKey) and isinstance(
        ec_priv, ec.EllipticCurvePrivateKey
    )
    pem, enc = serialization.Encoding.PEM, serialization.BestAvailableEncryption(password)
    f["rsa.enc"] = rsa_priv.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, enc)
    f["ecdsa.enc"] = ec_priv.private_bytes(pem, serialization.PrivateFormat.PKCS8, enc)
    host_cert = x509.load_pem_x509_certificate(f["host.pem"])
    ca_cert = x509.load_pem_x509_certificate(f["ca.pem"])
    legacy = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password)
    )
    f["host.p12"] = pkcs12.serialize_key_and_certificates(
        b"host", ec_priv, host_cert, [ca_cert], legacy
    )
    modern = serialization.BestAvailableEncryption(password)  # AES-256, PBKDF2, SHA-256 MAC
    f["modern.p12"] = pkcs12.serialize_key_and_certificates(
        b"rsa", rsa_priv, x509.load_der_x509_certificate(f["host.der"]), None, modern
    )
    return Material(f)


# -- the corpus ----------------------------------------------------------------------------

CONN = """
connections {
   %(name)s {
      version = 2
      remote_addrs = %(remote)s
      proposals = aes128-sha256-x25519, aes256gcm16-prfsha384-ecp384
      local-1 {
         auth = pubkey
         certs = host.pem
         id = host.diff
      }
      local-2 {
         auth = eap-md5
         eap_id = carol
      }
      remote {
         auth = pubkey
         cacerts = ca.pem
         pubkeys = pub.pem
         revocation = relaxed
      }
      children {
         net {
            local_ts = 10.1.0.0/16, 10.2.0.0/16
            remote_ts = 10.3.0.0/16
            esp_proposals = aes128gcm16
            start_action = trap
            dpd_action = restart
            close_action = start
         }
         other {
            remote_ts = 10.4.0.0/16
            mode = transport
         }
      }
   }
}
"""


def _secrets(*sections: str) -> str:
    return "secrets {\n" + "\n".join(sections) + "\n}\n"


SHARED = _secrets(
    "   ike-1 {\n      id-a = host.diff\n      id-b = %any\n"
    "      secret = 0x0123456789abcdef\n   }",
    "   ike-2 {\n      secret = 0sc2VjcmV0\n   }",
    '   eap-carol {\n      id = carol\n      secret = "quoted # secret"\n   }',
    "   xauth-x {\n      id = x\n      secret = xauth\n   }",
    "   ntlm-n {\n      id = n\n      secret = ntlm\n   }",
    "   ppk-p {\n      id = ppk\n      secret = 0x00112233445566778899aabbccddeeff\n   }",
)

KEY_SECRETS = _secrets(
    f"   rsa-enc {{\n      file = enc.pem\n      secret = {PASS}\n   }}",
    f"   pkcs8-enc {{\n      file = ENC.PEM\n      secret-wrong = nope\n"
    f"      secret = {PASS}\n   }}",
    f"   private-plain {{\n      file = plain.pem\n      secret = {PASS}\n   }}",
    f"   ecdsa-plain {{\n      file = ec.der\n      secret = {PASS}\n   }}",
    f"   private-ed {{\n      file = ed.pem\n      secret = {PASS}\n   }}",
    "   rsa-wrongtype {\n      file = notrsa.pem\n      secret = whatever\n   }",
    f"   pkcs12-host {{\n      file = host.p12\n      secret = {PASS}\n   }}",
    f"   pkcs12-modern {{\n      file = modern.p12\n      secret = {PASS}\n   }}",
)

AUTHORITIES = """
authorities {
   diff-ca {
      cacert = ca.pem
      crl_uris = http://crl.diff/ca.crl, ldap://ldap.diff/ca.crl
      ocsp_uris = http://ocsp.diff
      cert_uri_base = http://certs.diff/
   }
   other-ca {
      cacert = ca.pem
   }
}
"""

POOLS = """
pools {
   v4 {
      addrs = 10.9.0.0/24
      dns = 10.9.0.1, 10.9.0.2
      nbns = 10.9.0.3
      split_include = 10.0.0.0/8
   }
   v6 {
      addrs = fd00::/120
   }
   range {
      addrs = 10.8.0.10-10.8.0.20
      7 = 0x0102
   }
}
"""

SIX = """
connections {
   six {
      remote_addrs = 192.0.2.7
      ocsp = request
      local {
         auth = psk
      }
      remote {
         auth = psk
      }
      children {
         fast {
            remote_ts = 10.5.0.0/16
            per_cpu_sas = yes
            icmp = yes
            mode = iptfs
         }
      }
   }
   bare {
      remote_addrs = 192.0.2.8
      local {
         auth = psk
      }
      remote {
         auth = psk
      }
   }
}
"""

Files = dict[str, bytes]


def _folders(m: Material) -> Files:
    return {
        "x509/host.pem": m["host.pem"],
        "x509/rsa.der": m["host.der"],
        "x509ca/ca.pem": m["ca.pem"],
        "x509ocsp/ocsp.pem": m["ocsp.pem"],
        "x509aa/aa.pem": m["aa.pem"],
        "x509ac/ac.pem": m["ac.pem"],
        "x509crl/ca.crl": m["crl.pem"],
        "pubkey/pub.pem": m["pub.pem"],
    }


def _keys(m: Material) -> Files:
    return {
        "private/plain.pem": m["rsa.key"],
        "private/ed.pem": m["ed25519.key"],
        "private/nosecret.pem": m["ecdsa.key"],
        "rsa/enc.pem": m["rsa.enc"],
        "rsa/notrsa.pem": m["ecdsa.key"],
        "ecdsa/ec.der": m["ecdsa.der"],
        "pkcs8/enc.pem": m["ecdsa.enc"],
        "pkcs8/locked.pem": m["ecdsa.enc"],  # encrypted, no secret: sent as it is
        "pkcs12/host.p12": m["host.p12"],
        "pkcs12/modern.p12": m["modern.p12"],
    }


SETUPS: dict[str, Callable[[Material], tuple[str, Files]]] = {
    "empty": lambda m: ("", {}),
    "shared-secrets": lambda m: (SHARED, {}),
    "cert-folders": lambda m: ("", _folders(m)),
    "key-folders-and-passphrases": lambda m: (KEY_SECRETS, _keys(m)),
    "authorities": lambda m: (AUTHORITIES, {"x509ca/ca.pem": m["ca.pem"]}),
    "pools": lambda m: (POOLS, {}),
    "strongswan-6-options-and-no-children": lambda m: (SIX, {}),
    "plain-connection-with-files": lambda m: (
        CONN % {"name": "home", "remote": "192.0.2.1"},
        _folders(m),
    ),
    "managed-connection": lambda m: (
        CONN % {"name": "home", "remote": "192.0.2.1, gw2.diff, 192.0.2.3"},
        _folders(m),
    ),
    "everything": lambda m: (
        CONN % {"name": "home", "remote": "192.0.2.1, 192.0.2.2"}
        + SIX
        + AUTHORITIES
        + POOLS
        + SHARED.replace("\n}\n", "\n")
        + KEY_SECRETS.replace("secrets {\n", ""),
        {**_folders(m), **_keys(m)},
    ),
}


def _write(root: Path, conf: str, files: Files) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "swanctl.conf").write_text(conf)
    return root / "swanctl.conf"


# -- recording and comparing ---------------------------------------------------------------

Canon = tuple[Any, ...]


def _canon(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple((k, _canon(v)) for k, v in value.items())
    if isinstance(value, list):
        return ("[", *(_canon(v) for v in value))
    return value


def _loads(received: list[Received]) -> list[Received]:
    return [r for r in received if r.command.startswith(("load-", "unload-", "clear-"))]


def _show(path: str, value: Any) -> str:
    if path.rsplit(".", 1)[-1] in SECRET_KEYS and isinstance(value, bytes):
        return f"<{len(value)} secret bytes>"
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in dict.fromkeys([*a, *b]):
            where = f"{path}.{key}" if path else str(key)
            if key not in a:
                out.append(f"{where}: only extsock sends it ({_show(where, b[key])})")
            elif key not in b:
                out.append(f"{where}: only swanctl sends it ({_show(where, a[key])})")
            else:
                out += _diff(a[key], b[key], where)
        if not out and list(a) != list(b):
            out.append(f"{path or 'message'}: key order {list(a)} (swanctl) vs {list(b)}")
        return out
    if a != b:
        return [f"{path}: swanctl {_show(path, a)}, extsock {_show(path, b)}"]
    return []


def _label(r: Received) -> str:
    for key in ("id", "name"):
        if key in r.message:
            return f"{r.command} {r.message[key]!r}"
    if r.command in ("load-key", "load-cert"):
        return f"{r.command} type={r.message.get('type')!r} flag={r.message.get('flag')!r}"
    return f"{r.command} {list(r.message)}"


def assert_same_requests(swanctl: list[Received], extsock: list[Received]) -> int:
    a = Counter((r.command, _canon(r.message)) for r in swanctl)
    b = Counter((r.command, _canon(r.message)) for r in extsock)
    missing = [
        r for r in swanctl if a[(r.command, _canon(r.message))] > b[(r.command, _canon(r.message))]
    ]
    extra = [
        r for r in extsock if b[(r.command, _canon(r.message))] > a[(r.command, _canon(r.message))]
    ]
    if not missing and not extra:
        return sum(a.values())
    lines = []
    for r in missing:
        twin = next((e for e in extra if _label(e) == _label(r)), None)
        if twin is None:
            twin = next((e for e in extra if e.command == r.command), None)
        if twin is None:
            lines.append(f"{_label(r)}: swanctl sends it, extsock does not")
        else:
            extra.remove(twin)
            lines += [f"{_label(r)}: {d}" for d in _diff(r.message, twin.message)]
    lines += [f"{_label(e)}: extsock sends it, swanctl does not" for e in extra]
    raise AssertionError("requests differ:\n  " + "\n  ".join(lines))


def run_swanctl(conf: Path) -> list[Received]:
    assert SWANCTL is not None
    with FakeCharon() as fake:
        done = subprocess.run(
            [SWANCTL, "--load-all", "--noprompt", "--file", str(conf), "-u", fake.uri],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]
        return _loads(fake.received)


def run_cli(conf: Path) -> list[Received]:
    with FakeCharon() as fake:
        result = CliRunner().invoke(cli(), ["-u", fake.uri, "load-all", "--file", str(conf)])
        assert result.exit_code == 0, result.output
        assert PASS not in result.output
        return _loads(fake.received)


def run_daemon_usecase(conf: Path) -> list[Received]:
    """What `extsock run` sends on start (the config usecase over the real VICI adapter)."""
    with FakeCharon() as fake, ViciCharon(fake.uri) as charon:
        manager = FailoverManager(charon, FakeClock(), Broadcast())
        ConfigUsecase(charon, manager).apply(read_desired_config(conf), start=True)
        return _loads(fake.received)


def undo_clone_overrides(swanctl: list[Received], extsock: list[Received]) -> list[Received]:
    """The documented clone overrides, checked, then mapped back onto the original."""
    originals = {
        name: body for r in swanctl if r.command == "load-conn" for name, body in r.message.items()
    }
    out: list[Received] = []
    for r in extsock:
        ((name, body),) = r.message.items() if r.command == "load-conn" else ((None, None),)
        clone = parse_clone_name(name) if isinstance(name, str) else None
        if clone is None or clone.connection not in originals or body is None:
            out.append(r)
            continue
        original = originals[clone.connection]
        assert body["remote_addrs"] == [clone.gateway.encode()], body["remote_addrs"]
        assert clone.gateway.encode() in original["remote_addrs"]
        assert body["keyingtries"] == b"1"
        restored = dict(body)
        for key in CLONE_CONN_KEYS:
            restored.pop(key)
            if key in original:
                restored[key] = original[key]
        children = {}
        for child, options in body.get("children", {}).items():
            assert {k: options[k] for k in CLONE_CHILD} == CLONE_CHILD
            kept = {k: v for k, v in options.items() if k not in CLONE_CHILD}
            kept.update({k: v for k, v in original["children"][child].items() if k in CLONE_CHILD})
            children[child] = kept
        if children:
            restored["children"] = children
        out.append(Received("load-conn", {clone.connection: _reorder(restored, original)}))
    return out


def _reorder(body: dict[str, Any], like: Mapping[str, Any]) -> dict[str, Any]:
    """Key order of `like` (the clone keeps every key, only values are overridden)."""
    ordered = {k: body[k] for k in like if k in body}
    ordered.update({k: v for k, v in body.items() if k not in ordered})
    for key, value in ordered.items():
        if isinstance(value, dict) and isinstance(like.get(key), Mapping):
            ordered[key] = _reorder(value, like[key])
    return ordered


@pytest.fixture
def setup_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


@pytest.mark.parametrize("setup", list(SETUPS))
def test_load_all_sends_what_swanctl_sends(setup: str, material: Material, tmp_path: Path) -> None:
    conf = _write(tmp_path, *SETUPS[setup](material))
    swanctl = run_swanctl(conf)
    assert_same_requests(swanctl, run_cli(conf))


@pytest.mark.parametrize("setup", list(SETUPS))
def test_daemon_sends_what_swanctl_sends_but_clones(
    setup: str, material: Material, tmp_path: Path
) -> None:
    conf = _write(tmp_path, *SETUPS[setup](material))
    swanctl = run_swanctl(conf)
    extsock = undo_clone_overrides(swanctl, run_daemon_usecase(conf))
    assert_same_requests(swanctl, extsock)


def _twice(first: Path, second: Path, load: Callable[[FakeCharon, Path], None]) -> list[Received]:
    """The requests of the second load, on a charon that holds what the first loaded."""
    with FakeCharon() as fake:
        load(fake, first)
        done = len(fake.received)
        load(fake, second)
        return _loads(fake.received[done:])


def _swanctl_into(fake: FakeCharon, conf: Path, *extra: str) -> None:
    assert SWANCTL is not None
    done = subprocess.run(
        [SWANCTL, "--load-all", "--noprompt", *extra, "--file", str(conf), "-u", fake.uri],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]


def _cli_into(fake: FakeCharon, conf: Path, *extra: str) -> None:
    result = CliRunner().invoke(cli(), ["-u", fake.uri, "load-all", *extra, "--file", str(conf)])
    assert result.exit_code == 0, result.output


def test_reload_unloads_what_swanctl_unloads(material: Material, tmp_path: Path) -> None:
    first = _write(tmp_path / "a", *SETUPS["everything"](material))
    smaller = SHARED.split("   eap-carol")[0] + "}\n" + POOLS.split("   v6 {")[0] + "}\n"
    keys = {k: v for k, v in _keys(material).items() if k.startswith("private/")}
    files = {**_folders(material), **keys}
    second = _write(tmp_path / "b", CONN % {"name": "road", "remote": "%any"} + smaller, files)
    swanctl = _twice(first, second, _swanctl_into)
    unloads = Counter(r.command for r in swanctl if r.command.startswith("unload-"))
    assert unloads == {
        "unload-key": 5, "unload-shared": 4, "unload-authority": 2, "unload-pool": 2,
        "unload-conn": 3,
    }  # fmt: skip
    assert_same_requests(swanctl, _twice(first, second, _cli_into))

    def daemon(fake: FakeCharon, conf: Path, state: dict[str, Any] = {}) -> None:  # noqa: B006
        if "usecase" not in state:
            charon = ViciCharon(fake.uri)
            charon.connect()
            state["charon"] = charon
            state["usecase"] = ConfigUsecase(
                charon, FailoverManager(charon, FakeClock(), Broadcast())
            )
        state["usecase"].apply(read_desired_config(conf), start=True)

    try:
        extsock = _twice(first, second, daemon)
    finally:
        daemon.__defaults__[0]["charon"].close()  # type: ignore[index]
    # the managed 'home' of the first file goes as extsock's clone does: forgotten, unloaded
    assert [r.message for r in extsock if r.command == "unload-conn"][-1] == {
        "name": b"home@192.0.2.1"
    }
    swanctl_but_home = [r for r in swanctl if r.message != {"name": b"home"}]
    assert_same_requests(
        swanctl_but_home, [r for r in extsock if r.message != {"name": b"home@192.0.2.1"}]
    )


def test_a_difference_names_message_and_key_never_the_secret() -> None:
    key = Received("load-key", {"type": b"RSA", "data": b"secret-der"})
    other = Received("load-key", {"type": b"rsa", "data": b"other-der"})
    shared = Received("load-shared", {"id": b"ike-1", "type": b"ike", "data": b"psk", "owners": []})
    with pytest.raises(AssertionError) as info:
        assert_same_requests([key, shared], [other])
    text = str(info.value)
    assert "load-key type=b'RSA'" in text and "type: swanctl b'RSA', extsock b'rsa'" in text
    assert "data: swanctl <10 secret bytes>, extsock <9 secret bytes>" in text
    assert "load-shared b'ike-1': swanctl sends it, extsock does not" in text
    assert "secret-der" not in text and "other-der" not in text and "psk'" not in text


CORPUS = Path(__file__).parent / "data" / "corpus"


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.conf")))
def test_corpus_files_load_as_swanctl_loads_them(name: str) -> None:
    """The hand-written corpus (real-world layouts, includes, templates), in place."""
    conf = CORPUS / name
    swanctl = run_swanctl(conf)
    assert_same_requests(swanctl, run_cli(conf))
    assert_same_requests(swanctl, undo_clone_overrides(swanctl, run_daemon_usecase(conf)))


def test_clear_drops_certificates_as_swanctl_clear(material: Material, tmp_path: Path) -> None:
    first = _write(tmp_path / "a", *SETUPS["everything"](material))
    second = _write(tmp_path / "b", *SETUPS["cert-folders"](material))

    def swanctl(fake: FakeCharon, conf: Path) -> None:
        _swanctl_into(fake, conf, "--clear")

    def extsock(fake: FakeCharon, conf: Path) -> None:
        _cli_into(fake, conf, "--clear")

    requests = _twice(first, second, swanctl)
    assert requests[0].command == "clear-creds"
    assert_same_requests(requests, _twice(first, second, extsock))


@pytest.mark.parametrize("refused", ["load-authority", "load-pool", "load-key", "load-conn"])
def test_refusals_stop_where_swanctl_stops(
    refused: str, material: Material, tmp_path: Path
) -> None:
    """A refused authority or pool ends swanctl --load-all (load_all.c); a key or conn not;
    a refused decoded key is sent again as the file (load_keys())."""
    conf = _write(tmp_path, *SETUPS["everything"](material))
    assert SWANCTL is not None
    with FakeCharon() as fake:
        fake.fail[refused] = "refused by the test"
        done = subprocess.run(
            [SWANCTL, "--load-all", "--noprompt", "--file", str(conf), "-u", fake.uri],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        swanctl = _loads(fake.received)
    with FakeCharon() as fake:
        fake.fail[refused] = "refused by the test"
        result = CliRunner().invoke(cli(), ["-u", fake.uri, "load-all", "--file", str(conf)])
        extsock = _loads(fake.received)
    assert_same_requests(swanctl, extsock)
    # swanctl exits 0 when only credentials failed; extsock says so with exit code 1
    assert result.exit_code == 1 and (done.returncode != 0 or refused == "load-key")
    assert "refused by the test" in result.output and PASS not in result.output
