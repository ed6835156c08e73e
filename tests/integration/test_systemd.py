"""extsock deployed the Debian way, under real systemd, next to Debian's strongswan.service.

A container from Debian's packages boots systemd as PID 1 (systemd_support.py; the image
is cached). Inside it: strongswan.service (charon-systemd + `swanctl --load-all`) with the
managed connection `uplink` written for swanctl (start_action = start), two gateways in
network namespaces, and extsock installed by following the README's deployment section
line by line. The tests run in file order on that one container and are bounded in time.
"""

from __future__ import annotations

import functools
import os
import secrets
import shlex
import time
from collections.abc import Iterator

import pytest
from packaging.utils import canonicalize_name

from tests.integration import systemd_support as sd
from tests.integration.systemd_support import Secret, conns, journal, ping, sas, tunnels, wait
from tests.unit.test_supply_chain import read_lock

pytestmark = pytest.mark.integration

GW1, GW2 = "10.99.1.2", "10.99.2.2"
PREFIX = os.environ.get("EXTSOCK_LAB_PREFIX", "exs-")
WATCHDOG_SEC, RESTART_SEC = 10.0, 2.0
CHECKOUT = "/media/checkout"  # read-only; the README's `git clone` becomes a copy of it
INSTALLED_DOCS = (  # install-system.sh's man pages and bash completion
    "/usr/local/share/man/man8/extsock.8",
    "/usr/local/share/man/man5/extsock.conf.5",
    "/usr/local/share/bash-completion/completions/extsock",
)


@pytest.fixture(scope="module")
def secret() -> Secret:
    return Secret("psk-" + secrets.token_hex(12))


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, secret: Secret) -> Iterator[sd.Box]:
    reason = sd.preflight()
    if reason:
        pytest.skip(f"systemd container unavailable: {reason}")
    image = sd.ensure_image()
    tmp = tmp_path_factory.mktemp("systemd")
    wheels = sd.build_wheels(tmp / "wheels")
    checkout = sd.copy_checkout(tmp / "checkout")
    the_box = sd.Box(
        f"{PREFIX}extsock-systemd-{os.getpid()}",
        image,
        {wheels: "/media/wheels", checkout: CHECKOUT},
    )
    try:
        the_box.start()
        the_box.sh(f"bash {CHECKOUT}/tests/integration/systemd/lab-setup.sh {secret}", timeout=90)
        assert wait(lambda: tunnels(the_box) == ["uplink"], 20.0), the_box.out("swanctl -l")
        yield the_box
    finally:
        the_box.remove()


def readme_deploy_lines() -> list[str]:
    """The commands of the README's deployment block, as a new user types them."""
    text = (sd.REPO / "README.md").read_text()
    block = text.split("<!-- deploy:", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_deployment_starts_extsock_under_systemd(box: sd.Box) -> None:
    # Configuration a user adds (the lab set up swanctl.conf like `sudoedit` would):
    box.sh("echo 'EXTSOCK_RUN_ARGS=--metrics 127.0.0.1:9814' > /etc/default/extsock")
    script = ["set -e", "umask 077"]  # a root shell as hardened hosts have it
    for line in readme_deploy_lines():
        command = line.split("  #", 1)[0].strip().removeprefix("sudo ")
        if command.startswith("apt-get install"):  # in the image already: check they are
            packages = command.split()[2:]
            script.append(f"dpkg-query -W {' '.join(shlex.quote(p) for p in packages)} >/dev/null")
        elif command.startswith("git clone"):  # the clone: a copy of this checkout
            script.append(f"cp -a {CHECKOUT} /root/extsock_py && cd /root/extsock_py")
        elif command.startswith("sudoedit"):
            continue
        else:
            script.append(command)
    started = time.monotonic()
    # pip as configured on a machine with a local wheel mirror: no network in the container
    proc = box.sh(
        "\n".join(script),
        timeout=240,
        check=False,
        env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/media/wheels"},
    )
    assert proc.returncode == 0, (script, proc.stdout[-3000:], proc.stderr[-3000:])
    print(f"README deployment block ran in {time.monotonic() - started:.1f}s")
    assert "uplink" in proc.stdout  # `extsock failover status` at the end of the block
    # the dependencies exactly as requirements.lock pins them (installed --require-hashes)
    frozen = box.out("/opt/extsock/bin/python -m pip freeze --exclude extsock-py").splitlines()
    names = {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in frozen}
    locked = read_lock((sd.REPO / "requirements.lock").read_text())
    assert names == {p.name: str(p.version) for p in locked.values()}, frozen
    # umask 022 in the script: the venv is readable and nothing in it writable by others
    assert box.out("stat -c %a /opt/extsock /opt/extsock/bin/extsock") == "755\n755"
    assert box.out("find /opt/extsock -perm -o+w ! -type l | head -3") == ""
    assert box.active("extsock") == "active"  # Type=notify: READY=1 came
    assert box.out("systemctl is-enabled extsock") == "enabled"
    assert box.out("readlink /usr/local/bin/extsock") == "/opt/extsock/bin/extsock"
    for doc in INSTALLED_DOCS:
        assert box.sh(f"test -s {doc}", check=False).returncode == 0, f"{doc} not installed"
    assert "50-extsock.conf" in box.show("strongswan", "DropInPaths")
    assert wait(lambda: tunnels(box) == [f"uplink@{GW1}"], 15.0), box.out("swanctl -l")
    assert "uplink" not in conns(box)  # the as-written copy strongswan.service loaded
    assert ping(box)
    took = [line for line in journal(box).splitlines() if "took over" in line]
    assert len(took) == 1 and "uplink: took over the as-written" in took[0], took


def test_install_again_is_idempotent_and_keeps_it_running(box: sd.Box) -> None:
    pid = box.show("extsock", "MainPID")
    proc = box.sh(
        "cd /root/extsock_py && scripts/install-system.sh",
        timeout=240,
        env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/media/wheels"},
    )
    assert "installed" in proc.stdout
    assert box.show("extsock", "MainPID") == pid
    assert box.out("getent group extsock | cut -d: -f1") == "extsock"


def test_the_units_sandbox_runs_cffi_ctypes_and_cryptography(box: sd.Box) -> None:
    """MemoryDenyWriteExecute=, SystemCallFilter=~@resources, ProcSubset=pid...: the unit's
    sandbox on a Python of the venv that imports what extsock needs and uses it."""
    unit = (sd.REPO / "systemd" / "extsock.service").read_text()
    service = unit.split("[Service]", 1)[1].split("[Install]", 1)[0]
    # not the service's own: its directories (a transient unit's RuntimeDirectory= would
    # be removed, the control socket with it, when it ends) and its process management
    skip = ("Type", "NotifyAccess", "EnvironmentFile", "ExecStart", "ExecReload", "WatchdogSec",
            "Restart", "RestartSec", "TimeoutStartSec", "TimeoutStopSec", "RuntimeDirectory",
            "RuntimeDirectoryMode", "StateDirectory", "StateDirectoryMode")  # fmt: skip
    props = [
        arg
        for line in service.splitlines()
        if "=" in line and not line.startswith("#") and line.split("=", 1)[0] not in skip
        for arg in ("-p", line.strip())
    ]
    assert "MemoryDenyWriteExecute=yes" in props and "SystemCallFilter=~@resources" in props
    code = (
        "import ctypes, _cffi_backend;"
        " from cryptography.hazmat.primitives import hashes;"
        " from cryptography.hazmat.primitives.asymmetric import ec;"
        " k = ec.generate_private_key(ec.SECP256R1());"
        " k.public_key().verify(k.sign(b'x', ec.ECDSA(hashes.SHA256())), b'x',"
        " ec.ECDSA(hashes.SHA256()));"
        " libc = ctypes.CDLL(None, use_errno=True); assert libc.getpid() > 0;"
        " import extsock_py.app, extsock_py.adapters.swanctl.creds; print('sandbox-ok')"
    )
    proc = box.sh(
        "systemd-run --quiet --wait --pipe --collect "
        + " ".join(shlex.quote(a) for a in props)
        + f" /opt/extsock/bin/python -c {shlex.quote(code)}",
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "sandbox-ok" in proc.stdout, (proc.stdout, proc.stderr)
    assert box.show("extsock", "MemoryDenyWriteExecute") == "yes"  # the unit installed


def test_sandboxed_features_work(box: sd.Box) -> None:
    # the control socket, for a member of the group extsock and for nobody else
    box.sh("id op >/dev/null 2>&1 || useradd --no-create-home -G extsock op")
    member = box.sh("runuser -u op -- extsock failover status --json", check=False)
    assert member.returncode == 0 and '"uplink"' in member.stdout, member
    stranger = box.sh("runuser -u nobody -- extsock failover status", check=False)
    assert stranger.returncode != 0
    # metrics, from /etc/default/extsock
    metrics = box.out(
        'python3 -c "import urllib.request as u;'
        " print(u.urlopen('http://127.0.0.1:9814/metrics', timeout=5).read().decode())\""
    )
    assert "extsock_" in metrics
    # the tunnel monitor probes through the CHILD_SA (UDP, no raw socket)
    assert "monitoring the tunnel via" in journal(box)


def test_reload_and_a_broken_file(box: sd.Box) -> None:
    pid = box.show("extsock", "MainPID")
    box.sh("systemctl reload extsock")
    assert wait(lambda: "reloaded /etc/swanctl/swanctl.conf" in journal(box), 10.0)
    box.sh("cp /etc/swanctl/swanctl.conf /root/swanctl.conf.good")
    box.sh(
        "printf 'connections {\\n  broken {\\n    remote_addrs = \\n' >> /etc/swanctl/swanctl.conf"
    )
    try:
        box.sh("systemctl reload extsock")
        assert wait(lambda: "reload refused, running config kept" in journal(box), 10.0)
        assert box.active("extsock") == "active"
        assert box.show("extsock", "MainPID") == pid
        assert tunnels(box) == [f"uplink@{GW1}"]
    finally:
        box.sh("cp /root/swanctl.conf.good /etc/swanctl/swanctl.conf")
    refused = [line for line in journal(box).splitlines() if "reload refused" in line]
    assert "/etc/swanctl/swanctl.conf" in refused[-1], refused
    # at the journal's priority "err" (a syslog prefix), and no second time stamp of ours
    errors = box.out("journalctl --no-pager -o cat -u extsock -p err")
    assert "reload refused, running config kept" in errors
    assert refused[-1].startswith("ERROR"), refused[-1]


def test_what_the_sandbox_forbids_is_an_error_naming_the_setting(box: sd.Box) -> None:
    conf = "/etc/swanctl/swanctl.conf"
    # monitor.netns: setns(2) is what RestrictNamespaces=yes refuses
    box.sh(f"cp {conf} /root/swanctl.conf.good")
    box.sh(f"sed -i 's/misses = 3 }}/misses = 3\\n              netns = segw1 }}/' {conf}")
    assert "netns = segw1" in box.out(f"cat {conf}")
    try:
        box.sh("systemctl reload extsock")
        assert wait(lambda: "RestrictNamespaces=" in journal(box), 10.0), journal(box)[-2000:]
        assert box.active("extsock") == "active"
    finally:
        box.sh(f"cp /root/swanctl.conf.good {conf} && systemctl reload extsock")
    # a metrics port below 1024: CAP_NET_BIND_SERVICE is not in CapabilityBoundingSet=
    box.sh("echo 'EXTSOCK_RUN_ARGS=--metrics 127.0.0.1:99' > /etc/default/extsock")
    try:
        box.sh("systemctl restart extsock", check=False, timeout=90)
        assert wait(lambda: "CAP_NET_BIND_SERVICE" in journal(box), 15.0), journal(box)[-2000:]
        assert box.active("extsock") != "active"
        assert "Traceback" not in journal(box)
    finally:
        box.sh("echo 'EXTSOCK_RUN_ARGS=--metrics 127.0.0.1:9814' > /etc/default/extsock")
        box.sh("systemctl reset-failed extsock; systemctl restart extsock", timeout=90)
    assert box.active("extsock") == "active"
    assert tunnels(box) == [f"uplink@{GW1}"]  # the tunnel never went down meanwhile


def test_a_hung_main_loop_is_restarted_by_the_watchdog(box: sd.Box) -> None:
    pid = box.show("extsock", "MainPID")
    restarts = int(box.show("extsock", "NRestarts"))
    before = sas(box)
    started = time.monotonic()
    box.sh(f"kill -STOP {pid}")

    def restarted() -> bool:  # a new main process: systemd killed the hung one and waited
        return box.show("extsock", "MainPID") not in (pid, "0")

    limit = WATCHDOG_SEC + RESTART_SEC
    assert wait(restarted, limit + 15.0, interval=0.1), journal(box)[-3000:]
    took = time.monotonic() - started
    assert wait(lambda: box.active("extsock") == "active", 20.0), journal(box)[-3000:]
    ready = time.monotonic() - started
    print(
        f"watchdog: SIGSTOP to a new main process in {took:.1f}s, active (READY=1) in"
        f" {ready:.1f}s (WatchdogSec+RestartSec={limit:.0f})"
    )
    assert took <= limit + 1.0  # the polling of this test
    assert int(box.show("extsock", "NRestarts")) == restarts + 1
    assert "Watchdog timeout" in journal(box, None)
    assert sas(box) == before  # the tunnel stayed up: the same IKE_SA, adopted
    assert ping(box)


def restart_strongswan(box: sd.Box) -> float:
    """`systemctl restart strongswan`; the seconds until extsock's one tunnel is back."""
    charon = box.show("strongswan", "MainPID")
    started = time.monotonic()
    box.sh("systemctl restart strongswan", timeout=60)  # returns after its ExecStartPost
    assert box.show("strongswan", "MainPID") != charon

    def back() -> bool:
        now = tunnels(box)
        return len(now) == 1 and now[0].startswith("uplink@") and conns(box) == now

    assert wait(back, 30.0, interval=0.1), (sas(box), conns(box), journal(box)[-3000:])
    took = time.monotonic() - started
    for _ in range(20):  # and it stays one tunnel (5 s)
        assert len(tunnels(box)) == 1, sas(box)
        time.sleep(0.25)
    assert ping(box)
    return took


def test_strongswan_restart_brings_back_one_tunnel(box: sd.Box) -> None:
    """As deployed (the drop-in: no --load-all), only extsock loads after charon restarts."""
    assert tunnels(box) == [f"uplink@{GW1}"]
    taken = journal(box).count("took over")
    took = restart_strongswan(box)
    print(f"strongswan restart (drop-in): one tunnel back in {took:.1f}s")
    assert tunnels(box) == [f"uplink@{GW1}"]
    assert journal(box).count("took over") == taken  # nothing loaded as written


def test_failover_and_return_under_systemd(box: sd.Box) -> None:
    box.sh("ip link set ini1 down")
    try:
        assert wait(lambda: tunnels(box) == [f"uplink@{GW2}"], 30.0), (
            sas(box),
            journal(box)[-2000:],
        )
        assert ping(box)
    finally:
        box.sh("ip link set ini1 up")
    time.sleep(3.0)  # the first gateway is back: nothing goes back to it by itself
    assert tunnels(box) == [f"uplink@{GW2}"]
    assert conns(box) == [f"uplink@{GW2}"]


def took_over(box: sd.Box, times: int) -> bool:
    return journal(box).count("took over") == times


def test_strongswan_restart_with_load_all_kept_leaves_one_tunnel(box: sd.Box) -> None:
    """strongswan.service as Debian ships it: its --load-all brings the as-written `uplink`
    up on the first gateway after every charon restart; extsock takes it over."""
    box.sh(
        "cd /root/extsock_py && scripts/install-system.sh --keep-load-all",
        timeout=240,
        env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/media/wheels"},
    )
    assert "50-extsock.conf" not in box.show("strongswan", "DropInPaths")
    for attempt in range(3):
        taken = journal(box).count("took over")
        took = restart_strongswan(box)
        assert wait(functools.partial(took_over, box, taken + 1), 35.0), journal(box)
        assert "uplink" not in conns(box)
        print(f"strongswan restart (--load-all kept) #{attempt + 1}: one tunnel back in"
              f" {took:.1f}s, on {tunnels(box)[0]}")  # fmt: skip


def test_stop_leaves_the_tunnel_up(box: sd.Box) -> None:
    before = sas(box)
    box.sh("systemctl stop extsock", timeout=60)
    assert box.active("extsock") == "inactive"
    assert sas(box) == before
    assert ping(box)
    assert "tunnels left up" in journal(box)


def test_journal_has_extsock_lines_and_no_secret(box: sd.Box, secret: Secret) -> None:
    assert "extsock.daemon: loaded 1 managed" in journal(box)
    # counted inside the box, so a failure never prints the secret
    hits = box.sh(f"journalctl --no-pager | grep -c -F -- {secret}", check=False).stdout
    assert hits.strip() == "0", "the PSK is in the journal"
    stored = box.sh(f"grep -rl -F -- {secret} /var/lib/extsock", check=False)
    assert stored.returncode == 1, "the PSK is in extsock's state"


def test_uninstall_removes_it_and_hands_charon_back_to_swanctl(box: sd.Box) -> None:
    """After --uninstall charon holds what Debian's strongswan.service would load: `uplink`
    as written (its own failover-less retrying back), no clone of extsock's loaded, and no
    IKE_SA left on a clone's config (keyingtries = 1, dpd_action = clear)."""
    before = sas(box)
    assert [name for name, _ in before] == conns(box) and "@" in before[0][0]
    proc = box.sh("cd /root/extsock_py && scripts/install-system.sh --uninstall", timeout=90)
    assert "extsock uninstalled" in proc.stdout and "warning" not in proc.stderr, proc
    assert box.sh("test -e /opt/extsock || test -e /usr/local/bin/extsock", check=False).returncode
    assert box.sh("test -e /etc/systemd/system/extsock.service", check=False).returncode
    assert box.sh("getent group extsock", check=False).returncode
    for doc in INSTALLED_DOCS:
        assert box.sh(f"test -e {doc}", check=False).returncode, f"{doc} left behind"
    assert box.sh("test -d /var/lib/extsock").returncode == 0  # state kept without --purge
    assert "50-extsock.conf" not in box.show("strongswan", "DropInPaths")
    assert conns(box) == ["uplink"], conns(box)  # swanctl --list-conns: no NAME@GATEWAY
    assert wait(lambda: tunnels(box) == ["uplink"], 20.0), box.out("swanctl -l")
    assert not [name for name, _ in sas(box) if "@" in name]
    assert ping(box)
    # and strongswan.service restarts as Debian ships it: --load-all, `uplink` as written
    restarted = box.show("strongswan", "MainPID")
    box.sh("systemctl restart strongswan", timeout=60)
    assert box.show("strongswan", "MainPID") != restarted
    assert wait(lambda: tunnels(box) == ["uplink"] and conns(box) == ["uplink"], 30.0)
