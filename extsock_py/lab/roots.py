"""Debian roots holding another strongSwan release, built with mmdebstrap on first use.

One cache directory (``$EXTSOCK_CHARON_ROOT_CACHE``, default ``/var/cache/extsock/charon-root``)
holds one root per release (``trixie/``, ``sid/``). A build happens under an exclusive lock
on ``<cache>/.lock`` into a temporary directory renamed into place when complete, so
concurrent labs never see or make a half-built root, and a crashed build leaves only a
temporary directory that the next build removes.

mmdebstrap is given no mirror: it uses Debian's default (deb.debian.org), which the host's
apt setup (proxy, if any) serves like the host's own apt. ``Check-Valid-Until`` is off
because a mirror may be a dated snapshot (sid's Release file then looks expired).

A charon runs from a root in its own mount namespace (``lab.py``), so the mounts it needs
(/dev, /proc, a tmpfs /run) vanish with it. ``leftover_mounts`` finds any mount below the
cache that a crash could still have left in the host's namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from extsock_py.lab.releases import ROOT_PACKAGES, Release

CACHE_ENV = "EXTSOCK_CHARON_ROOT_CACHE"
DEFAULT_CACHE = Path("/var/cache/extsock/charon-root")
CHARON_IN_ROOT = "/usr/lib/ipsec/charon"
BUILD_TIMEOUT = 600.0
_READY = ".extsock-root-ready"
_PLUGIN_SO = re.compile(r"/usr/lib/ipsec/plugins/libstrongswan-(?P<name>[a-z0-9-]+)\.so$")


class RootError(RuntimeError):
    """A root could not be built or is unusable."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def root_dir(rel: Release, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / rel.name


def is_ready(root: Path) -> bool:
    return (root / _READY).is_file() and (root / CHARON_IN_ROOT.lstrip("/")).is_file()


@contextlib.contextmanager
def cache_lock(
    cache: Path, timeout: float, error: type[RuntimeError] = RootError
) -> Iterator[None]:
    """One build at a time in `cache` (an flock on its .lock, across processes); `error` if
    another build holds it past `timeout` s. The release roots and the VM image share it."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a+") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise error(
                        f"{cache}/.lock held for {timeout:.0f} s by another build"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def mmdebstrap_argv(rel: Release, target: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        f"--include={','.join(ROOT_PACKAGES)}",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        rel.name,
        str(target),
    ]


def ensure_root(rel: Release, cache: Path | None = None, timeout: float = BUILD_TIMEOUT) -> Path:
    """The root of ``rel``, built first if the cache lacks it; RootError if that fails."""
    if rel.host:
        raise RootError(f"{rel.name} is the host's own charon: it has no root")
    cache = cache or cache_dir()
    root = root_dir(rel, cache)
    if is_ready(root):
        return root
    if shutil.which("mmdebstrap") is None:
        raise RootError(
            f"charon {rel.name} needs a Debian root and mmdebstrap is not installed "
            "(apt-get install mmdebstrap)"
        )
    with cache_lock(cache, timeout):
        if is_ready(root):  # another process built it while we waited
            return root
        for stale in cache.glob(f".{rel.name}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if root.exists():
            shutil.rmtree(root)
        tmp = cache / f".{rel.name}.build-{os.getpid()}"
        log = cache / f"{rel.name}.build.log"
        try:
            with open(log, "wb") as out:
                proc = subprocess.run(
                    mmdebstrap_argv(rel, tmp),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RootError(f"mmdebstrap {rel.name} took over {timeout:.0f} s; see {log}") from None
        if proc.returncode != 0 or not (tmp / CHARON_IN_ROOT.lstrip("/")).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            tail = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
            raise RootError(f"mmdebstrap {rel.name} failed (exit {proc.returncode}): {tail}")
        (tmp / _READY).write_text(f"{charon_version(tmp) or '?'}\n")
        tmp.rename(root)
    return root


def charon_version(root: Path) -> str | None:
    """The strongSwan version the root's dpkg database records for strongswan-charon."""
    status = root / "var/lib/dpkg/status"
    try:
        text = status.read_text(errors="replace")
    except OSError:
        return None
    for block in text.split("\n\n"):
        if "Package: strongswan-charon\n" in block + "\n":
            match = re.search(r"^Version: (?:\d+:)?([0-9.]+)", block, re.MULTILINE)
            if match:
                return match.group(1)
    return None


def plugin_packages(root: Path) -> Mapping[str, str]:
    """plugin -> Debian package, read from the root's dpkg file lists (for the preflight)."""
    found: dict[str, str] = {}
    for listing in sorted((root / "var/lib/dpkg/info").glob("*.list")):
        package = listing.name.removesuffix(".list").split(":")[0]
        with contextlib.suppress(OSError):
            for line in listing.read_text(errors="replace").splitlines():
                match = _PLUGIN_SO.search(line)
                if match:
                    found.setdefault(match["name"], package)
    return found


def leftover_mounts(cache: Path | None = None, mountinfo: str | None = None) -> list[str]:
    """Mount points below the cache in this mount namespace, deepest first."""
    base = str((cache or cache_dir()).resolve())
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point == base or point.startswith(base + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_leftovers(cache: Path | None = None) -> list[str]:
    """Lazily unmount every leftover mount below the cache; returns what was unmounted.

    Lab charons mount only inside their own mount namespaces, so in the host's namespace a
    mount below the cache is what a crashed build left (mmdebstrap mounts /dev, /proc... in
    its target). Nothing is touched while a build holds the lock: its mounts are live."""
    cache = cache or cache_dir()
    points = leftover_mounts(cache)
    if not points:
        return []
    done = []
    with open(cache / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        try:
            for point in points:
                proc = subprocess.run(["umount", "-l", point], capture_output=True, check=False)
                if proc.returncode == 0:
                    done.append(point)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return done
