"""debian/ stays in step with the repository (tests/integration/test_deb.py builds and installs it).

These checks fail before `make deb` would, or where it would build a package that differs
from what the repository says: a version other than pyproject's, a file that moved, a unit
whose ExecStart the package can no longer point at /usr/bin/extsock, a lintian override
without its reason.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "debian"


def test_the_changelog_version_is_pyprojects() -> None:
    """dpkg-buildpackage names the .deb after debian/changelog's first entry."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.fullmatch(r"extsock \(([^)]+)\) \S+; urgency=\w+", first)
    assert match, first
    assert match.group(1) == project["version"], (
        f"debian/changelog is at {match.group(1)}, pyproject.toml at {project['version']}:"
        " add a debian/changelog entry (dch -v VERSION)"
    )


def test_every_file_the_package_installs_is_in_the_repository() -> None:
    sources = [
        line.split()[0]
        for name in ("extsock.install", "extsock.manpages")
        for line in (DEBIAN / name).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "docs/man/extsock.8" in sources and "contrib/bash-completion/extsock" in sources
    missing = [src for src in sources if not (REPO / src).is_file()]
    assert not missing, f"debian/ installs files the repository does not have: {missing}"
    assert (REPO / "requirements.lock").is_file()  # the venv's hash-pinned dependencies


def test_the_unit_has_the_execstart_the_package_rewrites() -> None:
    """debian/rules points the repository's unit at /usr/bin/extsock (not install-system.sh's
    /opt/extsock): the line it rewrites must be there."""
    rules = (DEBIAN / "rules").read_text()
    unit = (REPO / "systemd/extsock.service").read_text()
    match = re.search(r"sed 's\|\^(ExecStart=\S+ )\|", rules)
    assert match, "debian/rules no longer rewrites ExecStart="
    assert re.search(rf"^{re.escape(match.group(1))}", unit, re.M), match.group(1)


def test_every_lintian_override_says_why() -> None:
    lines = (DEBIAN / "extsock.lintian-overrides").read_text().splitlines()
    overrides = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    assert overrides
    for i in overrides:
        assert lines[i].startswith("extsock: "), lines[i]
        assert i > 0 and lines[i - 1].startswith("# "), f"no reason above: {lines[i]}"
