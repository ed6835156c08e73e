#!/usr/bin/env bash
# make fresh-check: the README's two commands, as a new user runs them, on a pristine Debian.
# Builds (once, cached) a bookworm image from Debian's packages (minbase + ca-certificates,
# python3, make, git: scripts/base-image.sh), starts a new container from it (privileged:
# network namespaces, /dev/net/tun; host network and the host's apt/pip configuration,
# read only, so installs work: scripts/lib/host-config.sh), clones the committed HEAD of this
# repository there (a git bundle: the dirty worktree is not what is checked), and runs the
# README's first command, `make demo`, then its second, `make test`.
# Exit 0 only when both pass and the integration tests ran (none skipped but the soak test,
# which runs with make soak only); 1 when one fails; 2 where it cannot run (no root, podman).
# Usage: scripts/fresh-check.sh [--demo-only] [--keep]
#   --demo-only  only the first command (CI runs it on every submission)
#   --keep       leave the container running afterwards (for a look inside)
# Logs: .build/fresh-check/{demo,test}.log.  Env FRESH_IMAGE overrides the image tag.
set -euo pipefail

DEMO_ONLY=0
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --demo-only) DEMO_ONLY=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "fresh-check: unknown argument $arg" >&2; exit 2 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
IMAGE=${FRESH_IMAGE:-localhost/extsock-fresh:bookworm}
NAME="extsock-fresh-$$"
LOGS="$ROOT/.build/fresh-check"

if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-check: needs root (podman runs as root here; the lab inside needs --privileged)" >&2
  exit 2
fi
if ! command -v podman >/dev/null; then
  echo "fresh-check: podman not found; run scripts/container-host.sh as root first" >&2
  exit 2
fi
if ! bash "$HERE/container-host.sh" --check >/dev/null; then
  echo "fresh-check: podman is not set up for this machine:" >&2
  bash "$HERE/container-host.sh" --check >&2 || true
  echo "fresh-check: run scripts/container-host.sh as root first" >&2
  exit 2
fi

if ! command -v git >/dev/null || ! HEAD=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null); then
  echo "fresh-check: $ROOT is not a git checkout (it checks a clone of the committed HEAD)" >&2
  exit 2
fi
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
  echo "fresh-check: note: uncommitted changes are not checked; checking commit ${HEAD:0:12}" >&2
fi
bash "$HERE/base-image.sh" --tag "$IMAGE" --include ca-certificates,python3,make,git >/dev/null || exit $?

work=$(mktemp -d /var/tmp/extsock-fresh.XXXXXX)
cleanup() {
  if ((KEEP == 0)); then
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  else
    echo "fresh-check: container $NAME kept (podman rm -f $NAME when done)" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# in/: the clone's source; containers/: podman's storage for the systemd tests' own
# containers inside (overlay cannot stack on the container's overlay root).
mkdir -p "$work/in" "$work/containers"
git -C "$ROOT" bundle create --quiet "$work/in/repo.bundle" HEAD
mkdir -p "$LOGS"

# shellcheck source=scripts/lib/host-config.sh
source "$HERE/lib/host-config.sh"
host_config_args
podman run -d --name "$NAME" --privileged --network host \
  "${HOST_CONFIG_ARGS[@]}" -v "$work/in:/in:ro" -v "$work/containers:/var/lib/containers" \
  "$IMAGE" sleep infinity >/dev/null
podman exec "$NAME" git -c advice.detachedHead=false clone --quiet /in/repo.bundle /root/extsock
podman exec -w /root/extsock "$NAME" git checkout --quiet --detach "$HEAD"

# step NAME COMMAND: run one README command in the clone; log, time and exit code.
step() {
  local name=$1 cmd=$2 started rc
  started=$(date +%s)
  echo "fresh-check: $cmd ..." >&2
  set +e
  # In the background, so that Ctrl-C or SIGTERM (traps run between commands) ends it now.
  podman exec -w /root/extsock "$NAME" sh -c "$cmd" >"$LOGS/$name.log" 2>&1 &
  wait $!
  rc=$?
  set -e
  STEP_SECONDS=$(($(date +%s) - started))
  STEP_RC=$rc
  echo "fresh-check: $cmd exited $rc after ${STEP_SECONDS} s (log: ${LOGS#"$ROOT"/}/$name.log)" >&2
}

result=0
step demo "make demo"
demo_seconds=$STEP_SECONDS
if ((STEP_RC != 0)); then
  tail -n 25 "$LOGS/demo.log" >&2
  echo "fresh-check: FAILED: make demo (exit $STEP_RC)" >&2
  exit 1
fi
grep -E "tunnel|segw" "$LOGS/demo.log" | tail -n 4 >&2 || true
if ((DEMO_ONLY)); then
  echo "fresh-check: ok: make demo passed in a pristine bookworm container (demo ${demo_seconds} s)"
  exit 0
fi

step test "make test"
test_seconds=$STEP_SECONDS
summary=$(grep -E "^(=+ )?[0-9]+ (passed|failed)|^[0-9]+ (passed|failed|error)" "$LOGS/test.log" | tail -n 1 || true)
echo "fresh-check: pytest: ${summary:-no summary line}" >&2
if ((STEP_RC != 0)); then
  grep -E "^(FAILED|ERROR) " "$LOGS/test.log" | head -n 20 >&2 || tail -n 25 "$LOGS/test.log" >&2
  echo "fresh-check: FAILED: make test (exit $STEP_RC)" >&2
  result=1
elif grep -E "^SKIPPED .*tests/integration/" "$LOGS/test.log" | grep -vq "soak"; then
  grep -E "^SKIPPED .*tests/integration/" "$LOGS/test.log" | grep -v "soak" | head -n 5 >&2
  echo "fresh-check: FAILED: integration tests were skipped (only the soak test may be)" >&2
  result=1
elif ! grep -qE "[0-9]+ passed" <<<"$summary"; then
  echo "fresh-check: FAILED: no pytest summary in the log" >&2
  result=1
fi
grep -E "^SKIPPED" "$LOGS/test.log" >&2 || true
if ((result == 0)); then
  echo "fresh-check: ok: make demo (${demo_seconds} s) and make test (${test_seconds} s, $summary) passed in a pristine bookworm container"
fi
exit "$result"
