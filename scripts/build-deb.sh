#!/usr/bin/env bash
# make deb: builds extsock_<version>_amd64.deb with Debian's tooling (debian/, dpkg-buildpackage)
# from this tree (committed or not), in a copy under .build/ so that the checkout stays
# clean, then checks it with lintian (no error, no warning that debian/extsock.lintian-overrides
# does not explain). The Python dependencies come from requirements.lock (hash-pinned wheels,
# fetched with this machine's pip configuration). Build dependencies: scripts/install-deps.sh.
# Usage: scripts/build-deb.sh [--out DIR] [--no-lintian]      (DIR defaults to the checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT
LINTIAN=1
while (($#)); do
  case "$1" in
    --out) OUT=$(mkdir -p "${2:?--out needs a folder}" && cd "$2" && pwd); shift 2 ;;
    --no-lintian) LINTIAN=0; shift ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument '$1' (accepted: --out DIR, --no-lintian)" >&2; exit 2 ;;
  esac
done
for tool in dpkg-buildpackage dh python3; do
  command -v "$tool" >/dev/null \
    || { echo "build-deb.sh: $tool is missing: run scripts/install-deps.sh as root (make deb does)" >&2; exit 2; }
done

version=$(cd "$ROOT" && dpkg-parsechangelog -S Version)
mkdir -p "$ROOT/.build"
work=$(mktemp -d "$ROOT/.build/deb.XXXXXX")   # one per build: builds may run side by side
src="$work/extsock-$version"
mkdir -p "$src"
tar -C "$ROOT" --exclude-vcs --exclude=./.venv --exclude=./.build --exclude=./build \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
  --exclude=.pytest_cache --exclude=.hypothesis --exclude=./.bench --exclude='./*.deb' \
  -cf - . | tar -C "$src" -xf -

started=$(date +%s)
# The Build-Depends are checked, but not the implicit build-essential set (gcc, g++...):
# nothing here is compiled, and a machine that only packages extsock needs no compiler.
(cd "$src" && dpkg-checkbuilddeps -I) || {
  echo "build-deb.sh: build dependencies missing (above): run scripts/install-deps.sh as root (make deb does)" >&2
  exit 2
}
(cd "$src" && dpkg-buildpackage -b -d --no-sign >"$work/build.log" 2>&1) || {
  tail -n 40 "$work/build.log" >&2
  echo "build-deb.sh: dpkg-buildpackage failed (whole log: ${work#"$ROOT"/}/build.log)" >&2
  exit 1
}
deb=$(cd "$work" && ls extsock_"$version"_*.deb)
cp "$work/$deb" "$OUT/$deb"
echo "built $OUT/$deb ($(du -k "$OUT/$deb" | cut -f1) KiB) in $(($(date +%s) - started)) s"

if ((LINTIAN)); then
  command -v lintian >/dev/null \
    || { echo "build-deb.sh: lintian is missing: run scripts/install-deps.sh as root" >&2; exit 2; }
  # --fail-on warning: a warning without an override (and its reason) fails the build
  if ! lintian --fail-on error,warning --info "$work/$deb"; then
    echo "build-deb.sh: lintian found problems in $deb (above)" >&2
    exit 1
  fi
  echo "lintian: no errors, no warnings ($deb)"
fi
rm -rf "$work"
