"""A certificate setup laid out as swanctl documents it, loaded by extsock, fails over with traffic.

The CA is in x509ca/, each node's certificate in x509/, its key in private/ (encrypted,
its passphrase in `secrets { private-<node> { file; secret } }`), and the connection names
no `cacerts`: the gateway authenticates only if extsock loads x509ca/ (load-cert flag CA)
and decrypts the key as swanctl does. Real charon daemons in network namespaces.
"""

from __future__ import annotations

import pytest

from extsock_py.lab.extsock_runner import running_extsock
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI

pytestmark = pytest.mark.integration

POLICY = "    connect_timeout = 5s\n    dead_after_retransmits = 1\n"
PASSPHRASE = "lab-key-passphrase-93c1"


@pytest.mark.parametrize(
    "lab", [{"gateways": 3, "auth": "cert", "key_passphrase": PASSPHRASE}], indirect=True
)
def test_documented_cert_layout_with_encrypted_key_fails_over_with_traffic(fresh_lab: Lab) -> None:
    conf = fresh_lab.ini_conf.read_text()
    assert "cacerts" not in conf and "private-ini" in conf
    key = (fresh_lab.node_dir(INI) / "private" / "ini.pem").read_text()
    assert "BEGIN ENCRYPTED PRIVATE KEY" in key
    with running_extsock(fresh_lab, POLICY) as extsock:
        assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
        assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"
        fresh_lab.fail("segw1", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
        assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
        fresh_lab.fail("segw2", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw3"), 15.0), extsock.log_tail()
        assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw3"
        certs = fresh_lab.swanctl(INI, "--list-certs").stdout
        assert "CN=CA" in certs  # the CA from x509ca/, loaded by extsock
        log = extsock.log_text()
    assert PASSPHRASE not in log and "PRIVATE KEY" not in log
    assert "private/ini.pem' (ECDSA)" in log  # decrypted by extsock, sent as swanctl sends it
