"""The disk image of the XFRM lab's VM: Debian bookworm with its own kernel, built once.

The host's kernel may lack ESP (``CONFIG_INET_ESP``), so the lab on the kernel's IPsec runs in
a QEMU VM with Debian's kernel (``vm.py``). Its image is built from Debian's packages with
mmdebstrap (like the release roots of ``roots.py``, under the same kind of lock), the kernel
and initrd copied out of its ``/boot``, and the tree turned into an ext4 file with
``mke2fs -d`` (no loop mount). The tree is then removed: the cache keeps three files,
``vmlinuz``, ``initrd.img`` and ``root.img`` (sparse, 2 GiB apparent).

The image holds a tiny PID 1 (``INIT_IN_IMAGE``) that mounts the control share and hands over
to the ``init.sh`` the host writes there, so changing what the guest does needs no rebuild.
``IMAGE_VERSION`` names what the image holds: a cache of another version is rebuilt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from extsock_py.lab.roots import cache_lock

CACHE_ENV = "EXTSOCK_VM_CACHE"
DEFAULT_CACHE = Path("/var/cache/extsock/xfrm-vm")
BUILD_TIMEOUT = 900.0
IMAGE_SIZE = "2G"
SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "kmod",
    "iproute2",
    "iputils-ping",
    "procps",
    "util-linux",
    "mount",
    "nftables",
    "iptables",
    "python3",
    "strongswan-charon",
    "strongswan-swanctl",
    "strongswan-pki",
    "libstrongswan-standard-plugins",
    "libstrongswan-extra-plugins",
    "libcharon-extra-plugins",
)
CTL_TAG = "extsockctl"
CTL_MOUNT = "/extsock-ctl"
INIT_PATH = "/sbin/extsock-vm-init"
# PID 1 of the guest: the basic mounts, the 9p modules, the control share, then the host's
# init.sh. If that ever returns, power off (a PID 1 that exits panics the kernel).
INIT_IN_IMAGE = f"""#!/bin/sh
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
modprobe 9pnet_virtio
modprobe 9p
mkdir -p {CTL_MOUNT}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {CTL_TAG} {CTL_MOUNT}
/bin/sh {CTL_MOUNT}/init.sh
echo "extsock-vm: init.sh returned $?, powering off"
echo o > /proc/sysrq-trigger
sleep 30
"""
IMAGE_VERSION = "1 " + " ".join(PACKAGES) + f" {INIT_PATH} {CTL_TAG}"
FILES = ("vmlinuz", "initrd.img", "root.img")
_READY = "ready"


class ImageError(RuntimeError):
    """The VM image could not be built or is unusable."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def is_ready(cache: Path) -> bool:
    try:
        version = (cache / _READY).read_text().strip()
    except OSError:
        return False
    return version == IMAGE_VERSION and all((cache / name).is_file() for name in FILES)


def missing_tools() -> list[str]:
    """The host tools a build needs and PATH lacks, with the Debian package of each."""
    need = {"mmdebstrap": "mmdebstrap", "mke2fs": "e2fsprogs"}
    return [f"{tool} ({pkg})" for tool, pkg in need.items() if shutil.which(tool) is None]


def mmdebstrap_argv(target: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        f"--include={','.join(PACKAGES)}",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        SUITE,
        str(target),
    ]


def _run_logged(argv: list[str], log: Path, timeout: float, what: str) -> None:
    try:
        with open(log, "ab") as out:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, timeout),
                check=False,
            )
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what} took over {timeout:.0f} s; see {log}") from None
    if proc.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
        raise ImageError(f"{what} failed (exit {proc.returncode}): {tail}; see {log}")


def _newest(boot: Path, prefix: str) -> Path:
    found = sorted(boot.glob(f"{prefix}-*"))
    if not found:
        raise ImageError(f"no {prefix}-* in {boot}: is linux-image-amd64 installed?")
    return found[-1]


def ensure_image(cache: Path | None = None, timeout: float = BUILD_TIMEOUT) -> Path:
    """The cache directory holding the three files, built first if needed; ImageError else."""
    cache = cache or cache_dir()
    if is_ready(cache):
        return cache
    missing = missing_tools()
    if missing:
        raise ImageError(f"building the VM image needs {', '.join(missing)}: not on PATH")
    with cache_lock(cache, timeout, ImageError):
        if is_ready(cache):
            return cache
        deadline = time.monotonic() + timeout
        for stale in cache.glob(".build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        (cache / _READY).unlink(missing_ok=True)
        tmp = cache / f".build-{os.getpid()}"
        log = cache / "build.log"
        log.write_text("")
        try:
            tmp.mkdir()
            root = tmp / "root"
            _run_logged(mmdebstrap_argv(root), log, deadline - time.monotonic(), "mmdebstrap")
            init = root / INIT_PATH.lstrip("/")
            init.write_text(INIT_IN_IMAGE)
            init.chmod(0o755)
            shutil.copyfile(_newest(root / "boot", "vmlinuz"), tmp / "vmlinuz")
            shutil.copyfile(_newest(root / "boot", "initrd.img"), tmp / "initrd.img")
            argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root), str(tmp / "root.img")]
            _run_logged([*argv, IMAGE_SIZE], log, deadline - time.monotonic(), "mke2fs")
            for name in FILES:
                (tmp / name).replace(cache / name)
            (cache / _READY).write_text(IMAGE_VERSION + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return cache
