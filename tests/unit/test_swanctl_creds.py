"""Credential folders -> load-cert/load-key as swanctl --noprompt sends them (no swanctl needed).

The differential test proves the same against the real swanctl where it is installed;
these pin the rules of load_creds.c with keys made here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from extsock_py.adapters.swanctl import ConfigError, read_swanctl_conf

PASS = "never-shown-passphrase"
PEM, DER = serialization.Encoding.PEM, serialization.Encoding.DER
NOENC = serialization.NoEncryption()


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(root: Path, conf: str, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "swanctl.conf").write_text(conf)
    return root / "swanctl.conf"


def _secret(section: str, file: str, *secrets: str) -> str:
    lines = [f"   {section} {{", f"      file = {file}"]
    lines += [f"      secret{i} = {s}" for i, s in enumerate(secrets)]
    return "\n".join([*lines, "   }"])


def test_encrypted_key_is_decrypted_with_the_configured_passphrase(tmp_path: Path) -> None:
    key = _ec()
    encrypted = key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(PASS.encode())
    )
    conf = _write(
        tmp_path,
        "secrets {\n" + _secret("private-a", "A.PEM", "wrong-one", PASS) + "\n}\n",
        {"private/a.pem": encrypted, "private/b.pem": encrypted},
    )
    loaded = read_swanctl_conf(conf)
    by_name = {Path(k.source).name: k for k in loaded.credentials.keys}
    sec1 = key.private_bytes(DER, serialization.PrivateFormat.TraditionalOpenSSL, NOENC)
    assert by_name["a.pem"].type == "ECDSA" and by_name["a.pem"].data.reveal() == sec1
    # no secret names b.pem: sent as it is, typed by the folder (charon then refuses it)
    assert by_name["b.pem"].type == "any" and by_name["b.pem"].data.reveal() == encrypted
    assert PASS not in repr(loaded) and PASS not in str(loaded.credentials)


def test_a_key_of_another_type_than_its_folder_goes_out_as_it_is(tmp_path: Path) -> None:
    pem = _ec().private_bytes(PEM, serialization.PrivateFormat.PKCS8, NOENC)
    conf = _write(
        tmp_path, "secrets {\n" + _secret("rsa-x", "x.pem", PASS) + "\n}\n", {"rsa/x.pem": pem}
    )
    [key] = read_swanctl_conf(conf).credentials.keys
    assert (key.type, key.data.reveal()) == ("rsa", pem)


def test_ed25519_goes_out_as_pkcs8_der(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, NOENC)
    conf = _write(
        tmp_path,
        "secrets {\n" + _secret("private-e", "e.pem", PASS) + "\n}\n",
        {"private/e.pem": pem},
    )
    [sent] = read_swanctl_conf(conf).credentials.keys
    assert sent.type == "ED25519"
    assert sent.data.reveal() == key.private_bytes(DER, serialization.PrivateFormat.PKCS8, NOENC)


def _cert(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p12")])
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_pkcs12_opens_with_its_passphrase_and_names_no_secret_when_none_fits(
    tmp_path: Path,
) -> None:
    key = _ec()
    cert = _cert(key)
    p12 = pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(PASS.encode())
    )
    conf = _write(
        tmp_path,
        "secrets {\n" + _secret("pkcs12-c", "c.p12", PASS) + "\n}\n",
        {"pkcs12/c.p12": p12},
    )
    creds = read_swanctl_conf(conf).credentials
    assert [(c.type, c.flag, c.data) for c in creds.certificates] == [
        ("X509", "NONE", cert.public_bytes(DER))
    ]
    assert [k.type for k in creds.keys] == ["ECDSA"]
    conf.write_text("secrets {\n" + _secret("pkcs12-c", "c.p12", "not-it") + "\n}\n")
    with pytest.raises(ConfigError) as info:
        read_swanctl_conf(conf)
    assert "PKCS#12" in str(info.value) and "not-it" not in str(info.value)


def test_every_certificate_folder_with_swanctls_type_and_flag(tmp_path: Path) -> None:
    folders = ["x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey"]
    conf = _write(tmp_path, "", {f"{f}/one": f.encode() for f in folders})
    certs = read_swanctl_conf(conf).credentials.certificates
    assert [(c.type, c.flag, c.data) for c in certs] == [
        ("X509", "NONE", b"x509"),
        ("X509", "CA", b"x509ca"),
        ("X509", "OCSP", b"x509ocsp"),
        ("X509", "AA", b"x509aa"),
        ("X509_AC", None, b"x509ac"),
        ("X509_CRL", None, b"x509crl"),
        ("PUBKEY", None, b"pubkey"),
    ]


def test_authorities_and_pools_as_swanctl_sends_them(tmp_path: Path) -> None:
    conf = _write(
        tmp_path,
        "authorities {\n ca {\n  cacert = ca.pem\n  crl_uris = http://a, http://b\n"
        "  cert_uri_base = http://c/\n }\n}\n"
        "pools {\n p {\n  addrs = 10.0.0.0/24\n  dns = 10.0.0.1, 10.0.0.2\n }\n}\n",
        {"x509ca/ca.pem": b"CA"},
    )
    loaded = read_swanctl_conf(conf)
    [authority] = loaded.authorities
    assert (authority.name, dict(authority.body)) == (
        "ca",
        {"cacert": b"CA", "crl_uris": ["http://a", "http://b"], "cert_uri_base": "http://c/"},
    )
    [pool] = loaded.pools
    assert dict(pool.body) == {"addrs": "10.0.0.0/24", "dns": ["10.0.0.1", "10.0.0.2"]}


def test_unknown_authority_key_names_file_line_and_close_match(tmp_path: Path) -> None:
    conf = _write(tmp_path, "authorities {\n ca {\n  crl_uri = http://a\n }\n}\n", {})
    with pytest.raises(ConfigError) as info:
        read_swanctl_conf(conf)
    err = info.value
    assert (err.line, err.key) == (3, "authorities.ca.crl_uri")
    assert "did you mean 'crl_uris'" in err.message


def test_a_token_is_refused_clearly(tmp_path: Path) -> None:
    conf = _write(tmp_path, "secrets {\n token-a {\n  handle = 01\n  pin = 1234\n }\n}\n", {})
    with pytest.raises(ConfigError, match="smartcard") as info:
        read_swanctl_conf(conf)
    assert "1234" not in str(info.value)


def test_options_of_newer_releases_are_located_for_the_charon_check(tmp_path: Path) -> None:
    conf = _write(
        tmp_path,
        "connections {\n home {\n  ocsp = request\n  children {\n   c {\n"
        "    per_cpu_sas = yes\n    mode = iptfs\n    icmp = yes\n   }\n  }\n }\n}\n",
        {},
    )
    found = [(o.line, o.key, o.since) for o in read_swanctl_conf(conf).newer_options]
    assert found == [
        (3, "connections.home.ocsp", "6.0.0"),
        (6, "connections.home.children.c.per_cpu_sas", "6.0.2"),
        (7, "connections.home.children.c.mode", "6.0.2"),
        (8, "connections.home.children.c.icmp", "6.0.5"),
    ]
