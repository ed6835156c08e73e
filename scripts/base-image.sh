#!/usr/bin/env bash
# Builds a Debian base image for podman from Debian's packages (no container registry
# needed): mmdebstrap --variant=minbase, then `podman import`.  Cached: an image with the
# same tag built from the same settings is reused; --rebuild builds it again.
# Usage: scripts/base-image.sh [--tag TAG] [--suite SUITE] [--include PKG,PKG...]
#                              [--variant minbase] [--rebuild] [-- extra mmdebstrap args]
# Defaults: --tag localhost/extsock-base:bookworm --suite bookworm --include ca-certificates
# Prints the tag on its last line.  Needs root, podman and mmdebstrap
# (scripts/container-host.sh installs them); exits 2 saying so where one is missing.
#
# The host's apt options (/etc/apt/apt.conf.d: proxies, ...) are used to download the
# packages and left out of the image: containers get the host's configuration mounted at
# run time (scripts/lib/host-config.sh), as a pristine machine has its own.
set -euo pipefail

TAG=localhost/extsock-base:bookworm
SUITE=bookworm
VARIANT=minbase
INCLUDE=ca-certificates
REBUILD=0
EXTRA=()
while (($#)); do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --suite) SUITE=$2; shift 2 ;;
    --include) INCLUDE=$2; shift 2 ;;
    --variant) VARIANT=$2; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "base-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "base-image: needs root (podman as root here; mmdebstrap)" >&2
  exit 2
fi
if ! command -v podman >/dev/null; then
  echo "base-image: podman not found (run scripts/container-host.sh as root)" >&2
  exit 2
fi

SPEC="suite=$SUITE variant=$VARIANT include=$INCLUDE extra=${EXTRA[*]:-}"
if ((REBUILD == 0)) && podman image exists "$TAG"; then
  have=$(podman image inspect --format '{{ index .Config.Labels "extsock.base.spec" }}' "$TAG" 2>/dev/null || true)
  if [ "$have" = "$SPEC" ]; then
    echo "base-image: $TAG is there (cached; --rebuild to build again)" >&2
    echo "$TAG"
    exit 0
  fi
  echo "base-image: $TAG was built from other settings ($have); building again" >&2
fi
if ! command -v mmdebstrap >/dev/null; then
  echo "base-image: mmdebstrap not found (run scripts/container-host.sh as root)" >&2
  exit 2
fi

work=$(mktemp -d /var/tmp/extsock-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
aptopts=()
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] && aptopts+=("--aptopt=$f")
done
started=$(date +%s)
echo "base-image: mmdebstrap --variant=$VARIANT --include=$INCLUDE $SUITE ..." >&2
mmdebstrap --quiet --variant="$VARIANT" --include="$INCLUDE" "${aptopts[@]}" \
  --customize-hook='rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"' \
  "${EXTRA[@]}" "$SUITE" "$work/root.tar" >&2
podman import --quiet \
  --change "LABEL extsock.base.spec=\"$SPEC\"" \
  --change 'CMD ["/bin/bash"]' \
  "$work/root.tar" "$TAG" >/dev/null
echo "base-image: built $TAG in $(( $(date +%s) - started )) s" >&2
echo "$TAG"
