"""requirements.lock against pyproject.toml: every runtime dependency, transitive ones too,
pinned to a release its floor allows, each with sha256 hashes; and floors past the known
advisories (issue 24, supply chain)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)\s*\\?$")
HASH = re.compile(r"^\s+--hash=sha256:([0-9a-f]{64})\s*\\?$")

# Releases whose wheels bundle an OpenSSL with published advisories. Measured with
# `strings _rust.abi3.so | grep '^OpenSSL '` on the manylinux x86_64 wheels: 50.0.2 carries
# OpenSSL 4.0.3 (29 Sep 2026), before 4.0.4 (advisory of 1 Dec 2026); 51.0.0 and 51.0.1
# carry 4.1.1 (1 Dec 2026). From cryptography's changelog: 48.0.1 carries 4.0.1, before
# 4.0.2-4.0.4; 46.0.7 (8 Apr 2026) predates the OpenSSL release of 9 Jun 2026 (CVE-2026-45447,
# 3.5.0-3.5.6); 41.0.7 carries 3.1.4, before the 2024 fixes. The floor excludes them all.
ADVISED_AGAINST = {
    "cryptography": ("41.0.7", "46.0.7", "48.0.1", "50.0.2"),
}


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    hashes: tuple[str, ...]
    line: int


def read_lock(text: str) -> dict[str, Pin]:
    """The pins of a pip-compile --generate-hashes file; ValueError names the line."""
    pins: dict[str, Pin] = {}
    current: tuple[str, Version, int] | None = None
    hashes: list[str] = []

    def close() -> None:
        if current is not None:
            pins[current[0]] = Pin(current[0], current[1], tuple(hashes), current[2])

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("-"):
            raise ValueError(f"requirements.lock:{number}: option line {line!r} (none accepted)")
        pin, digest = PIN.match(line), HASH.match(line)
        if pin:
            close()
            current, hashes = (canonicalize_name(pin[1]), Version(pin[2]), number), []
        elif digest and current is not None:
            hashes.append(digest[1])
        else:
            raise ValueError(f"requirements.lock:{number}: not NAME==VERSION or --hash=sha256:")
    close()
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


@pytest.fixture(scope="module")
def pins() -> dict[str, Pin]:
    return read_lock(LOCK.read_text())


def test_every_pin_has_sha256_hashes_and_names_no_index(pins: dict[str, Pin]) -> None:
    assert pins
    for pin in pins.values():
        assert pin.hashes, f"requirements.lock:{pin.line}: {pin.name} has no --hash"
    text = LOCK.read_text()
    assert "://" not in text and "--index-url" not in text and "--find-links" not in text


def test_every_runtime_dependency_is_pinned_within_its_floor(pins: dict[str, Pin]) -> None:
    for req in runtime_requirements():
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} (pyproject.toml) is not in requirements.lock"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"requirements.lock:{pin.line}: {pin.name}=={pin.version} is outside {req}"
        )


def test_the_lock_is_closed_under_the_pins_own_requirements(pins: dict[str, Pin]) -> None:
    """Each pinned release's own runtime requirements (from its installed metadata) are
    pinned too, to a version they accept: the lock needs nothing from outside it."""
    checked = 0
    for pin in pins.values():
        try:
            dist = importlib.metadata.distribution(pin.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != pin.version:
            continue  # the venv holds another release: its metadata says nothing of the pin
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            env = {
                "extra": "",
                "python_version": "3.11",
                "platform_python_implementation": "CPython",
            }
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = pins.get(canonicalize_name(req.name))
            assert dep is not None, f"{pin.name} {pin.version} needs {req}: not in the lock"
            assert req.specifier.contains(dep.version, prereleases=True), (pin.name, req, dep)
    assert checked >= len(runtime_requirements())  # `make install` installs from the same index


def test_floors_exclude_releases_with_advisories() -> None:
    floors = {canonicalize_name(r.name): r.specifier for r in runtime_requirements()}
    for name, bad in ADVISED_AGAINST.items():
        spec: SpecifierSet = floors[canonicalize_name(name)]
        allowed = [v for v in bad if spec.contains(v)]
        assert not allowed, f"pyproject.toml: {name}{spec} still allows {allowed}"


def test_the_reader_refuses_what_is_not_a_hashed_pin() -> None:
    good = "vici==6.0.3 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    assert read_lock(good)["vici"].hashes == ("a" * 64,)
    with pytest.raises(ValueError, match=r"requirements.lock:1: option line"):
        read_lock("--index-url https://example.invalid/simple\n" + good)
    with pytest.raises(ValueError, match=r"requirements.lock:1: not NAME==VERSION"):
        read_lock("vici>=6 \\\n")
