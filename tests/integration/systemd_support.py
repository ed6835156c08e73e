"""A systemd container built from Debian's packages, for tests/integration/test_systemd.py.

The image comes from `mmdebstrap --variant=minbase` (systemd, Debian's strongSwan,
python3-venv) with the machine's own apt sources, and is imported into podman under a tag
that hashes what went into it, so it is built once and then reused (about a minute the
first time). The container runs systemd as PID 1 (`--systemd=always --privileged`) with
no network: it needs none, the lab's gateways live in namespaces inside it and extsock is
installed from wheels built here with this machine's pip configuration.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SUITE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "iproute2", "procps", "iputils-ping", "python3",
    "python3-venv", "charon-systemd", "strongswan-swanctl", "strongswan-charon",
    "libcharon-extra-plugins", "libstrongswan-standard-plugins",
)  # fmt: skip
IMAGE_NAME = "localhost/extsock-systemd"
REPO = Path(__file__).resolve().parents[2]
SA_LINE = re.compile(r"^(\S+): #(\d+), (\w+),", re.M)


def preflight() -> str | None:
    """Why the systemd test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (podman with --privileged, systemd as PID 1)"
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian package {tool})"
    return None


def run(
    argv: list[str], timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])}... exited {proc.returncode}:\n{proc.stderr[-2000:]}"
        )
    return proc


def _apt_sources() -> list[str]:
    """This machine's apt sources, handed to mmdebstrap as they are (no host is named here)."""
    found = sorted(str(p) for p in Path("/etc/apt/sources.list.d").glob("*.sources"))
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists() and any(
        line.strip().startswith("deb ") for line in legacy.read_text().splitlines()
    ):
        found.append(str(legacy))
    return found


def ensure_image() -> str:
    """The image's tag, built when no image with that tag exists yet."""
    sources = _apt_sources()
    key = "\n".join([SUITE, *PACKAGES, *(Path(s).read_text() for s in sources)])
    tag = f"{IMAGE_NAME}:{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if run(["podman", "image", "exists", tag], check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="extsock-systemd-") as tmp:
        tar = Path(tmp) / "root.tar"
        run(
            [
                "mmdebstrap", "--variant=minbase", "--mode=root",
                # snapshot mirrors serve Release files past their Valid-Until
                '--aptopt=Acquire::Check-Valid-Until "false"',
                f"--include={','.join(PACKAGES)}",
                SUITE, str(tar), *sources,
            ],
            timeout=900,
        )  # fmt: skip
        run(["podman", "import", str(tar), tag], timeout=300)
    return tag


def build_wheels(dest: Path) -> Path:
    """extsock and its dependencies as wheels, made with this machine's pip configuration:
    the dependencies as requirements.lock pins them (install-system.sh checks the hashes)."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(dest)]
    run([*pip, "--require-hashes", "-r", str(REPO / "requirements.lock")], timeout=600)
    run([*pip, "--no-deps", str(REPO)], timeout=600)
    run([*pip, "setuptools>=77"], timeout=600)  # what `pip install <checkout>` builds with
    return dest


def copy_checkout(dest: Path) -> Path:
    """The repository as a user's clone has it (no venv, no caches)."""
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "*.egg-info", "build", "__pycache__", ".mypy_cache", ".ruff_cache",
        ".pytest_cache", ".bench",
    )  # fmt: skip
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


class Box:
    """One running systemd container; every method runs a command inside it."""

    def __init__(self, name: str, image: str, mounts: dict[Path, str]) -> None:
        self.name = name
        self.image = image
        self.mounts = mounts

    def start(self, timeout: float = 60.0) -> None:
        volumes = [
            arg for host, inside in self.mounts.items() for arg in ("-v", f"{host}:{inside}:ro")
        ]
        run(
            ["podman", "run", "-d", "--name", self.name, "--privileged", "--systemd=always",
             "--network", "none", *volumes, self.image, "/sbin/init"],
            timeout=120,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"systemd in {self.name} not up after {timeout}s: {state!r}")

    def remove(self) -> None:
        run(["podman", "rm", "-f", "-t", "0", self.name], timeout=120, check=False)

    def sh(
        self,
        script: str,
        timeout: float = 60.0,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        envs = [arg for k, v in (env or {}).items() for arg in ("-e", f"{k}={v}")]
        return run(
            ["podman", "exec", *envs, self.name, "bash", "-c", script], timeout=timeout, check=check
        )

    def out(self, script: str, timeout: float = 60.0) -> str:
        return self.sh(script, timeout=timeout).stdout.strip()

    def active(self, unit: str) -> str:
        """`systemctl is-active UNIT`: active, activating, inactive, failed..."""
        return self.sh(f"systemctl is-active {unit}", check=False).stdout.strip()

    def show(self, unit: str, prop: str) -> str:
        return self.out(f"systemctl show -p {prop} --value {unit}")


# What the tests of the container look at (test_systemd.py, test_deb.py).


class Secret(str):
    """The lab's PSK: its repr (in pytest's failure output) does not show it."""

    def __repr__(self) -> str:
        return "'<the PSK>'"


def wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def sas(box: Box) -> list[tuple[str, int]]:
    """(name, unique id) of each IKE_SA with an INSTALLED CHILD_SA, from `swanctl --list-sas`."""
    text = box.sh("swanctl --list-sas 2>/dev/null", check=False).stdout
    found = []
    blocks = re.split(r"^(?=\S)", text, flags=re.M)
    for block in blocks:
        head = SA_LINE.match(block)
        if head and head.group(3) == "ESTABLISHED" and "INSTALLED" in block:
            found.append((head.group(1), int(head.group(2))))
    return sorted(found)


def tunnels(box: Box) -> list[str]:
    return [name for name, _ in sas(box)]


def conns(box: Box) -> list[str]:
    text = box.sh("swanctl --list-conns 2>/dev/null", check=False).stdout
    return sorted(m.group(1) for m in re.finditer(r"^(\S+): ", text, re.M))


def ping(box: Box) -> bool:
    return box.sh("ping -c 2 -W 1 -I 10.100.0.1 10.200.0.1", check=False).returncode == 0


def journal(box: Box, unit: str | None = "extsock") -> str:
    return box.sh(f"journalctl --no-pager -o cat {'-u ' + unit if unit else ''}").stdout
