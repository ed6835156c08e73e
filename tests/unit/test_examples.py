"""examples/: each file is a swanctl.conf `extsock check-config` accepts, with the managed
connections and credentials it says it has. The certificates and keys a file names are
made here (a throw-away CA); the monitor's local address is this host's loopback, since
check-config checks that it is an address of the host."""

from __future__ import annotations

import datetime
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from extsock_py.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# file -> (what check-config must print, the identity in the certificate each names)
EXPECTED = {
    "small-cell-segw-pair.conf": (
        ["s1: managed, gateways 192.0.2.1, 192.0.2.2", "2 certificates, 1 private keys"],
        "smallcell-0001.ran.operator.example",
    ),
    "site-to-cloud-psk.conf": (
        ["cloud: managed, gateways 203.0.113.10, 198.51.100.20", "2 shared secrets"],
        None,
    ),
    "road-warrior-vips.conf": (
        ["corp: managed, gateways 198.51.100.10, 198.51.100.20", "2 certificates, 1 private keys"],
        "alice@corp.example",
    ),
    "monitor-and-standby.conf": (
        ["hq: managed, gateways 203.0.113.1, 203.0.113.2", "1 shared secrets"],
        None,
    ),
}


def test_the_examples_are_the_four_the_readme_lists() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.conf")) == sorted(EXPECTED)
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in EXPECTED)


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem_cert(
    key: ec.EllipticCurvePrivateKey,
    subject: str,
    issuer: tuple[str, ec.EllipticCurvePrivateKey],
    san: x509.GeneralName | None,
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
    )
    if san is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), False)
    return builder.sign(issuer[1], hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _credentials(conf: Path, identity: str) -> None:
    """x509/NAME and private/NAME for each `certs = NAME`, signed by a CA in x509ca/."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = ("Example CA", ca_key)
    (conf.parent / "x509ca").mkdir()
    (conf.parent / "x509ca" / "ca.pem").write_bytes(_pem_cert(ca_key, ca[0], ca, None))
    san: x509.GeneralName = x509.RFC822Name(identity) if "@" in identity else x509.DNSName(identity)
    for name in re.findall(r"^\s*certs = (\S+)$", conf.read_text(), re.M):
        key = ec.generate_private_key(ec.SECP256R1())
        for folder in ("x509", "private"):
            (conf.parent / folder).mkdir(exist_ok=True)
        (conf.parent / "x509" / name).write_bytes(_pem_cert(key, identity, ca, san))
        (conf.parent / "private" / name).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_config_accepts_the_example(name: str, tmp_path: Path) -> None:
    lines, identity = EXPECTED[name]
    conf = tmp_path / "swanctl.conf"
    shutil.copy(EXAMPLES / name, conf)
    text = conf.read_text()
    if "monitor {" in text:  # an address of this host, as check-config requires
        text, found = re.subn(r"(\n\s*local = )10\.40\.17\.1\b", r"\g<1>127.0.0.1", text)
        assert found == 1
        conf.write_text(text)
    if identity is not None:
        _credentials(conf, identity)
    result = CliRunner().invoke(main, ["check-config", "--file", str(conf)])
    assert result.exit_code == 0, result.output
    for line in lines:
        assert line in result.output, result.output
    assert "ignored" not in result.output  # every remote address is a gateway
