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
        status = str(extsock.request("status"))
        log = extsock.log_text()
    assert PASSPHRASE not in log and "PRIVATE KEY" not in log and PASSPHRASE not in status
    # nor in anything extsock wrote: state database, journal, control socket dir
    for path in extsock.dir.rglob("*"):
        if path.is_file():
            assert PASSPHRASE.encode() not in path.read_bytes(), path
    assert "private/ini.pem' (ECDSA)" in log  # decrypted by extsock, sent as swanctl sends it


EXTRA = """
authorities {
    lab-ca {
        cacert = ca.pem
        crl_uris = http://crl.lab.extsock/ca.crl
    }
}
pools {
    lab-pool {
        addrs = 10.77.0.0/24
        dns = 10.77.0.1
    }
}
"""


@pytest.mark.parametrize("lab", [{"gateways": 2, "auth": "cert"}], indirect=True)
def test_reload_unloads_what_disappeared_and_keeps_the_managed_tunnel(fresh_lab: Lab) -> None:
    with running_extsock(fresh_lab, POLICY, conf_transform=lambda t: t + EXTRA) as extsock:
        assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
        assert "lab-ca" in fresh_lab.swanctl(INI, "--list-authorities").stdout
        assert "lab-pool" in fresh_lab.swanctl(INI, "--list-pools").stdout
        sas_before = [next(iter(sa)) for sa in fresh_lab.list_sas("ini")]
        extsock.conf.write_text(extsock.conf.read_text().replace(EXTRA, ""))
        answer = extsock.request("reload")
        assert answer.get("managed") == ["home"] and not answer.get("failures"), answer
        assert "lab-ca" not in fresh_lab.swanctl(INI, "--list-authorities").stdout
        assert "lab-pool" not in fresh_lab.swanctl(INI, "--list-pools").stdout
        # the managed tunnel is untouched: same IKE_SA, traffic flows
        assert [next(iter(sa)) for sa in fresh_lab.list_sas("ini")] == sas_before
        assert fresh_lab.child_installed("segw1")
        assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"
