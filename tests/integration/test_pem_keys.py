"""A certificate login with ini's key encrypted the traditional OpenSSL way (`openssl ec
-<cipher>`: Proc-Type/DEK-Info), in ecdsa/ with its passphrase in `secrets.ecdsa-ini`, for
every cipher strongSwan's pem plugin takes: extsock decrypts it as swanctl does and the
tunnel comes up. Real charon daemons; the lab's own key is put back afterwards."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from extsock_py.lab.extsock_runner import running_extsock
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl (Debian's openssl)"),
]

POLICY = "    connect_timeout = 5s\n"
PASSPHRASE = "pem-key-passphrase-5e2d"
CIPHERS = {"des3": "DES-EDE3-CBC", "aes128": "AES-128-CBC", "aes192": "AES-192-CBC",
           "aes256": "AES-256-CBC"}  # fmt: skip


@pytest.mark.parametrize("lab", [{"gateways": 2, "auth": "cert"}], indirect=True)
@pytest.mark.parametrize("opt", list(CIPHERS))
def test_a_traditionally_encrypted_key_logs_in(fresh_lab: Lab, opt: str) -> None:
    node = fresh_lab.node_dir(INI)
    plain, aside = node / "private" / "ini.pem", node / "ini.pem.plain"
    encrypted = node / "ecdsa" / "ini.pem"
    encrypted.parent.mkdir(exist_ok=True)
    done = subprocess.run(
        ["openssl", "ec", "-in", str(plain), f"-{opt}", "-passout", f"pass:{PASSPHRASE}",
         "-out", str(encrypted)],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"DEK-Info: {CIPHERS[opt]}," in encrypted.read_text()
    secret = f'    ecdsa-ini {{\n        file = ini.pem\n        secret = "{PASSPHRASE}"\n    }}\n'
    shutil.move(plain, aside)  # the login can only work with the decrypted key
    try:
        with running_extsock(
            fresh_lab,
            POLICY,
            conf_transform=lambda t: t.replace("secrets {\n", "secrets {\n" + secret, 1),
        ) as extsock:
            assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
            log = extsock.log_text()
        assert "ecdsa/ini.pem' (ECDSA)" in log  # decrypted, sent as DER of type ECDSA
        assert PASSPHRASE not in log
    finally:
        shutil.move(aside, plain)
        encrypted.unlink()
