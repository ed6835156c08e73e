"""The Debian package (make deb) as an admin uses it, under real systemd.

The package is built here with scripts/build-deb.sh (dpkg-buildpackage, then lintian), or
taken from EXTSOCK_DEB (a path to extsock_<version>_amd64.deb). The systemd container of
test_systemd.py (the same cached image: systemd, Debian's strongSwan, no network) runs Debian's
strongswan.service with the managed connection `uplink` in /etc/swanctl/swanctl.conf and two
gateways in namespaces. There `apt-get install ./extsock_*.deb`, `systemctl start extsock`,
a failover, `apt-get remove` (config kept) and `apt-get purge` (nothing of extsock left, charon
as Debian ships it). The tests run in file order on that one container.
"""

from __future__ import annotations

import os
import re
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import systemd_support as sd
from tests.integration.systemd_support import Secret, journal, ping, sas, tunnels, wait

pytestmark = pytest.mark.integration

GW1, GW2 = "10.99.1.2", "10.99.2.2"
PREFIX = os.environ.get("EXTSOCK_LAB_PREFIX", "exs-")
DEB_DIR, LAB_DIR = "/media/deb", "/media/lab"
VERSION = tomllib.loads((sd.REPO / "pyproject.toml").read_text())["project"]["version"]
RUN_ARGS = "EXTSOCK_RUN_ARGS=--metrics 127.0.0.1:9814"  # an admin's edit of the conffile
# What the package installs outside its venv (dpkg -L also lists the directories).
INSTALLED = (
    "/usr/bin/extsock",
    "/lib/systemd/system/extsock.service",
    "/lib/systemd/system/strongswan.service.d/50-extsock.conf",
    "/etc/default/extsock",
    "/usr/share/man/man8/extsock.8.gz",
    "/usr/share/man/man5/extsock.conf.5.gz",
    "/usr/share/bash-completion/completions/extsock",
)
# Everything on the container's disk (type, mode, owner) and the content of every file under
# /etc and the unit folders: after `apt-get purge` it must be as before `apt-get install`.
# Left out: dpkg's and apt's own records and logs, systemd's runtime state, the journal,
# and the backups (group-, gshadow-, ...) that groupadd/groupdel rewrite.
SNAPSHOT = r"""
find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
  -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/dpkg \
  -o -path /var/lib/apt -o -path /var/lib/systemd -o -path /media -o -path /root \
  -o -path '/etc/*-' \) -prune -o -printf '%y %p %M %u %g\n' | sort
find /etc /lib/systemd /usr/lib/systemd -xdev -type f ! -name '*-' -exec md5sum {} + | sort
systemctl cat strongswan.service
getent group | cut -d: -f1 | sort
"""


@dataclass(frozen=True)
class Built:
    deb: Path
    log: str  # build-deb.sh's output (the build line and lintian's verdict)
    seconds: float


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    given = os.environ.get("EXTSOCK_DEB")
    if given:
        return Built(Path(given).resolve(), "", 0.0)
    reason = sd.preflight()
    if reason:
        pytest.skip(f"systemd container unavailable: {reason}")
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    proc = sd.run(["bash", str(sd.REPO / "scripts/build-deb.sh"), "--out", str(out)], 600.0)
    took = time.monotonic() - started
    (deb,) = out.glob("extsock_*.deb")
    return Built(deb, proc.stdout + proc.stderr, took)


@pytest.fixture(scope="module")
def box(built: Built, secret: Secret) -> Iterator[sd.Box]:
    reason = sd.preflight()
    if reason:
        pytest.skip(f"systemd container unavailable: {reason}")
    image = sd.ensure_image()
    the_box = sd.Box(
        f"{PREFIX}extsock-deb-{os.getpid()}",
        image,
        {built.deb.parent: DEB_DIR, sd.REPO / "tests/integration/systemd": LAB_DIR},
    )
    try:
        the_box.start()
        the_box.sh(f"bash {LAB_DIR}/lab-setup.sh {secret}", timeout=90)
        # strongswan.service's --load-all brought the as-written `uplink` up on gw1
        assert wait(lambda: tunnels(the_box) == ["uplink"], 20.0), the_box.out("swanctl -l")
        yield the_box
    finally:
        the_box.remove()


@pytest.fixture(scope="module")
def secret() -> Secret:
    return Secret("psk-" + os.urandom(12).hex())


@pytest.fixture(scope="module")
def before(box: sd.Box) -> str:
    """The container as it is without the package."""
    return box.out(SNAPSHOT)


def test_the_package_is_built_with_debian_tooling_and_lintian_is_clean(built: Built) -> None:
    assert built.deb.name == f"extsock_{VERSION}_amd64.deb"
    if built.log:  # built here (not EXTSOCK_DEB)
        assert "lintian: no errors, no warnings" in built.log, built.log[-3000:]
        size = built.deb.stat().st_size
        print(f"{built.deb.name}: {size / 1e6:.1f} MB, built and checked in {built.seconds:.0f}s")


def test_apt_get_install_installs_it_enabled_and_stopped(
    box: sd.Box, before: str, built: Built
) -> None:
    assert before  # the snapshot is taken first
    proc = box.sh(f"apt-get install -y -q {DEB_DIR}/{built.deb.name}", timeout=180, check=False)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert box.out("dpkg-query -W -f='${Status} ${Version}' extsock") == (
        f"install ok installed {VERSION}"
    )
    for path in INSTALLED:
        assert box.sh(f"test -e {path}", check=False).returncode == 0, f"{path} not installed"
    assert box.out("dpkg-query -W -f='${Conffiles}' extsock").split()[0] == "/etc/default/extsock"
    assert box.out("getent group extsock | cut -d: -f1") == "extsock"
    assert box.out("stat -c '%a %U' /var/lib/extsock") == "700 root"
    assert box.out("systemctl is-enabled extsock") == "enabled"
    assert box.active("extsock") == "inactive"  # started by the admin, once configured
    assert "/lib/systemd/system/strongswan.service.d/50-extsock.conf" in box.show(
        "strongswan", "DropInPaths"
    )
    assert box.out("systemctl show -p ExecStart --value extsock").startswith(
        "{ path=/usr/bin/extsock "
    )
    # the bundled venv runs on the container's own python3 (no network, nothing else added)
    assert box.out("readlink -f /usr/lib/extsock/bin/python") == box.out(
        "readlink -f /usr/bin/python3"
    )
    assert "check-config" in box.out("extsock --help")
    assert tunnels(box) == ["uplink"]  # installing touched no tunnel


def test_systemctl_start_keeps_the_tunnel_up(box: sd.Box) -> None:
    box.sh(f"echo '{RUN_ARGS}' >> /etc/default/extsock")
    box.sh("systemctl start extsock", timeout=90)
    assert box.active("extsock") == "active"  # Type=notify: READY=1 came
    assert wait(lambda: tunnels(box) == [f"uplink@{GW1}"], 20.0), journal(box)[-3000:]
    assert ping(box)
    assert "uplink: took over the as-written" in journal(box)
    status = box.sh("runuser -u nobody -- extsock failover status", check=False)
    assert status.returncode != 0  # the control socket: the group extsock and root only
    assert "uplink" in box.out("extsock failover status")
    metrics = box.out(
        'python3 -c "import urllib.request as u; print(u.urlopen('
        "'http://127.0.0.1:9814/metrics', timeout=5).read().decode())\""
    )
    assert "extsock_" in metrics  # EXTSOCK_RUN_ARGS from /etc/default/extsock


def test_an_upgrade_restarts_it_and_the_tunnel_stays(box: sd.Box, built: Built) -> None:
    """The same version again (apt-get install --reinstall) runs what an upgrade runs."""
    pid = box.show("extsock", "MainPID")
    before = sas(box)
    proc = box.sh(
        f"apt-get install --reinstall -y -q {DEB_DIR}/{built.deb.name}", timeout=180, check=False
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert wait(lambda: box.active("extsock") == "active", 30.0)
    assert box.show("extsock", "MainPID") not in (pid, "0")  # the new code runs
    assert RUN_ARGS in box.out("cat /etc/default/extsock")  # the admin's edit, kept
    assert wait(lambda: sas(box) == before, 10.0), (sas(box), before)  # adopted, not rebuilt
    assert ping(box)


def test_it_fails_the_tunnel_over(box: sd.Box) -> None:
    started = time.monotonic()
    box.sh("ip link set ini1 down")
    try:
        assert wait(lambda: tunnels(box) == [f"uplink@{GW2}"], 30.0), journal(box)[-3000:]
        print(f"failover to the second gateway in {time.monotonic() - started:.1f}s")
        assert ping(box)
    finally:
        box.sh("ip link set ini1 up")


def test_apt_get_remove_stops_it_and_keeps_the_config(box: sd.Box) -> None:
    proc = box.sh("apt-get remove -y -q extsock", timeout=120, check=False)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert box.active("extsock") == "inactive"
    assert "tunnels left up" in journal(box)  # stopped, not killed
    assert tunnels(box) == [f"uplink@{GW2}"]
    assert box.out("dpkg-query -W -f='${db:Status-Abbrev}' extsock").strip() == "rc"
    assert RUN_ARGS in box.out("cat /etc/default/extsock")  # the admin's edit, kept
    assert box.sh("test -e /usr/bin/extsock || test -e /usr/lib/extsock", check=False).returncode
    assert box.show("strongswan", "DropInPaths") == ""  # drop-in gone, daemon reloaded
    assert box.active("strongswan") == "active"


def test_apt_get_purge_leaves_nothing_and_charon_as_shipped(box: sd.Box, before: str) -> None:
    proc = box.sh("apt-get purge -y -q extsock", timeout=120, check=False)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert box.sh("dpkg-query -W extsock", check=False).returncode != 0
    after = box.out(SNAPSHOT)
    gone = set(before.splitlines()) - set(after.splitlines())
    new = set(after.splitlines()) - set(before.splitlines())
    assert not gone and not new, (sorted(gone)[:20], sorted(new)[:20])
    # strongswan.service as Debian ships it (its --load-all back), its files unchanged
    assert "swanctl --load-all" in box.show("strongswan", "ExecStartPost")
    verify = box.out("dpkg --verify charon-systemd strongswan-charon strongswan-swanctl")
    changed = [line.split()[-1] for line in verify.splitlines()]
    assert changed == ["/etc/swanctl/swanctl.conf"], verify  # the admin's connections only
    assert box.active("strongswan") == "active"
    assert re.search(r"uplink@", " ".join(tunnels(box)))  # charon keeps the tunnel
