"""Keys encrypted the traditional OpenSSL way (Proc-Type/DEK-Info), made by `openssl` with
every cipher strongSwan's pem plugin accepts: extsock sends charon what the real swanctl
sends (the differential of test_swanctl_differential.py), and decrypts them to the DER
`openssl` itself decrypts them to. A cipher the pem plugin does not take and a wrong
passphrase leave the file as it is, as in swanctl."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from extsock_py.adapters.swanctl import pem
from tests.unit.test_swanctl_differential import (
    PASS,
    SWANCTL,
    TIMEOUT,
    Files,
    _write,
    assert_same_requests,
    run_cli,
    run_daemon_usecase,
    run_swanctl,
    undo_clone_overrides,
)

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(
    OPENSSL is None or SWANCTL is None,
    reason="the openssl and swanctl binaries (openssl, strongswan-swanctl) are absent",
)
# openssl's option -> the DEK-Info name; the four strongSwan's pem_builder.c decrypts
CIPHERS = {"des3": "DES-EDE3-CBC", "aes128": "AES-128-CBC", "aes192": "AES-192-CBC",
           "aes256": "AES-256-CBC"}  # fmt: skip


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, *args], input=stdin, capture_output=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-300:]
    return done.stdout


@dataclass(frozen=True)
class Keys:
    files: dict[str, bytes]  # the encrypted key files, by name
    der: dict[str, bytes]  # what openssl decrypts each to (traditional DER)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    work = tmp_path_factory.mktemp("openssl")
    files: dict[str, bytes] = {}
    der: dict[str, bytes] = {}
    ec_plain = work / "ec.pem"
    ec_plain.write_bytes(_openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout"))
    for opt in (*CIPHERS, "camellia128"):
        rsa_name, ec_name = f"rsa-{opt}.pem", f"ec-{opt}.pem"
        files[rsa_name] = _openssl(
            "genrsa", "-traditional", f"-{opt}", "-passout", f"pass:{PASS}", "2048"
        )
        files[ec_name] = _openssl("ec", "-in", str(ec_plain), f"-{opt}", "-passout", f"pass:{PASS}")
        for name, tool in ((rsa_name, ("rsa", "-traditional")), (ec_name, ("ec",))):
            (work / name).write_bytes(files[name])
            der[name] = _openssl(*tool, "-in", str(work / name), "-passin", f"pass:{PASS}",
                                 "-outform", "der")  # fmt: skip
    return Keys(files, der)


def _setup(k: Keys) -> tuple[str, Files]:
    """rsa/ and ecdsa/ each hold a key per cipher (and one camellia128, which the pem
    plugin refuses); private/ one AES-192 key of each kind; one key with only a wrong
    passphrase."""
    files: Files = {}
    secrets = []
    for opt in (*CIPHERS, "camellia128"):
        files[f"rsa/rsa-{opt}.pem"] = k.files[f"rsa-{opt}.pem"]
        files[f"ecdsa/ec-{opt}.pem"] = k.files[f"ec-{opt}.pem"]
        secrets += [
            f"   rsa-{opt} {{\n      file = rsa-{opt}.pem\n      secret = {PASS}\n   }}",
            f"   ecdsa-{opt} {{\n      file = ec-{opt}.pem\n      secret = {PASS}\n   }}",
        ]
    files["private/any-rsa.pem"] = k.files["rsa-aes192.pem"]
    files["private/any-ec.pem"] = k.files["ec-aes192.pem"]
    files["rsa/wrong.pem"] = k.files["rsa-aes192.pem"]
    secrets += [
        f"   private-r {{\n      file = any-rsa.pem\n      secret-1 = not-it\n      secret-2 = {PASS}\n   }}",  # noqa: E501
        f"   private-e {{\n      file = any-ec.pem\n      secret = {PASS}\n   }}",
        "   rsa-wrong {\n      file = wrong.pem\n      secret = not-the-passphrase\n   }",
    ]
    return "secrets {\n" + "\n".join(secrets) + "\n}\n", files


def test_load_all_sends_what_swanctl_sends(keys: Keys, tmp_path: Path) -> None:
    conf = _write(tmp_path, *_setup(keys))
    swanctl = run_swanctl(conf)
    decoded = [
        r for r in swanctl if r.command == "load-key" and r.message["type"] in (b"RSA", b"ECDSA")
    ]
    # swanctl decrypted the 4 ciphers in rsa/ and ecdsa/, and the 2 in private/
    assert len(decoded) == 2 * len(CIPHERS) + 2, [r.message["type"] for r in swanctl]
    assert_same_requests(swanctl, run_cli(conf))


def test_the_daemon_sends_what_swanctl_sends(keys: Keys, tmp_path: Path) -> None:
    conf = _write(tmp_path, *_setup(keys))
    swanctl = run_swanctl(conf)
    assert_same_requests(swanctl, undo_clone_overrides(swanctl, run_daemon_usecase(conf)))


@pytest.mark.parametrize("opt", list(CIPHERS))
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_decrypts_to_what_openssl_decrypts_to(keys: Keys, opt: str, kind: str) -> None:
    name = f"{kind}-{opt}.pem"
    found = pem.find_encrypted(keys.files[name])
    assert found is not None
    assert found.cipher == CIPHERS[opt]
    assert found.label == ("RSA PRIVATE KEY" if kind == "rsa" else "EC PRIVATE KEY")
    assert pem.decrypt(found, PASS.encode()) == keys.der[name]
    with pytest.raises(pem.PemError):
        pem.decrypt(found, b"not-the-passphrase")


def test_the_key_derivation_is_openssl_s() -> None:
    """EVP_BytesToKey with MD5, one round, the IV's first 8 bytes as salt."""
    out = _openssl("enc", "-aes-192-cbc", "-md", "md5", "-pass", "pass:hunter22",
                   "-S", "0011223344556677", "-P").decode()  # fmt: skip
    key = next(line.split("=", 1)[1].strip() for line in out.splitlines() if line.startswith("key"))
    derived = pem.bytes_to_key(b"hunter22", bytes.fromhex("0011223344556677"), 24)
    assert derived.hex().upper() == key


def test_a_cipher_the_pem_plugin_refuses_is_not_opened(keys: Keys) -> None:
    found = pem.find_encrypted(keys.files["rsa-camellia128.pem"])
    assert found is not None and found.cipher == "CAMELLIA-128-CBC"
    with pytest.raises(pem.PemError, match="'CAMELLIA-128-CBC' not supported"):
        pem.decrypt(found, PASS.encode())


def test_plain_and_pkcs8_pem_are_not_traditional_encrypted(keys: Keys, tmp_path: Path) -> None:
    plain = _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout")
    (tmp_path / "k.pem").write_bytes(plain)
    pkcs8 = _openssl("pkcs8", "-topk8", "-in", str(tmp_path / "k.pem"), "-passout", "pass:x")
    assert pem.find_encrypted(plain) is None
    assert pem.find_encrypted(pkcs8) is None  # ENCRYPTED PRIVATE KEY: cryptography's own
