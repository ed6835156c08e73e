#!/usr/bin/env bash
# make compose-demo: the compose lab (docker/compose.yaml) for real.  Builds the lab image,
# starts ini, extsock, segw1 and segw2, waits for the tunnel through segw1 (a UDP echo from
# ini's 10.100.0.1 to 10.200.0.1 answered by segw1), kills segw1, and waits for the echo to
# be answered by segw2.  Everything is torn down afterwards, also on failure or Ctrl-C (no
# container, network, volume or namespace left).  Exit 0 only when the tunnel moved; 1 when
# it did not; 2 where it cannot run.
# Engine: Docker where `docker info` answers; else podman as root, serving the Docker API on
# a private socket for compose, with the image FROM a bookworm base built from
# Debian's packages (scripts/base-image.sh: no registry needed) and the Python wheels built
# beforehand with the host's pip configuration (.build/wheels).
# Env: COMPOSE_PROJECT (default extsock-compose), TUNNEL_TIMEOUT (s, default 60).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PROJECT=${COMPOSE_PROJECT:-extsock-compose}
TUNNEL_TIMEOUT=${TUNNEL_TIMEOUT:-60}
BASE_TAG=localhost/extsock-base:bookworm
LAB_IMAGE=extsock-lab:latest
VENV=${VENV:-$ROOT/.venv}
cd "$ROOT"

say() { echo "compose-demo: $*" >&2; }
t0=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)"; }

# Compose: Docker's plugin (`docker compose`) where there is one, else docker-compose.
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  say "neither \`docker compose\` nor docker-compose found (apt-get install docker-compose)"
  exit 2
fi
ENGINE=
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker
elif command -v podman >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    say "needs root with podman (no Docker engine answers here)"
    exit 2
  fi
  if ! bash "$HERE/container-host.sh" --check >/dev/null; then
    bash "$HERE/container-host.sh" --check >&2 || true
    say "run scripts/container-host.sh as root first"
    exit 2
  fi
  ENGINE=podman
else
  say "neither a Docker engine nor podman here (scripts/container-host.sh installs podman)"
  exit 2
fi

work=$(mktemp -d /var/tmp/extsock-compose.XXXXXX)
service_pid=
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml "$@"; }

teardown() {
  local rc=$?
  set +e
  local sandboxes=""
  if [ "$ENGINE" = podman ]; then
    # The network namespaces podman made for our containers: checked for leftovers below.
    sandboxes=$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
      | xargs -r podman inspect --format '{{.NetworkSettings.SandboxKey}}' 2>/dev/null)
  fi
  if [ -n "${DOCKER_HOST:-}" ] || [ "$ENGINE" = docker ]; then
    if ((rc != 0)); then
      say "logs of the failed run:"
      compose logs --no-color --tail 15 >&2 2>/dev/null
    fi
    compose down --volumes --remove-orphans --timeout 2 >/dev/null 2>&1
  fi
  if [ -n "$service_pid" ]; then
    kill "$service_pid" 2>/dev/null
    wait "$service_pid" 2>/dev/null
  fi
  if [ "$ENGINE" = podman ]; then
    # Whatever the API service may have left behind (it should be nothing).
    podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman rm -f -t 0 >/dev/null
    podman network ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman network rm -f >/dev/null
    podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null
    left=$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT"; \
           podman network ls -q --filter "label=com.docker.compose.project=$PROJECT"; \
           podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
    for ns in $sandboxes; do
      [ -e "$ns" ] && left="$left $ns"
    done
    if [ -n "$(echo $left)" ]; then
      say "LEFT BEHIND:" $left
      ((rc == 0)) && rc=1
    fi
  fi
  rm -rf "$work"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- image
if [ "$ENGINE" = podman ]; then
  bash "$HERE/base-image.sh" --tag "$BASE_TAG" --include ca-certificates >/dev/null
  say "wheels of extsock-py and its dependencies (host pip configuration) ..."
  [ -x "$VENV/bin/python" ] || VENV=$VENV bash "$HERE/install-deps.sh"
  rm -rf .build/wheels
  if ! "$VENV/bin/python" -m pip wheel --quiet --wheel-dir .build/wheels . >"$work/pip.log" 2>&1; then
    tail -n 20 "$work/pip.log" >&2
    say "FAILED: pip wheel"
    exit 1
  fi
  # shellcheck source=scripts/lib/host-config.sh
  source "$HERE/lib/host-config.sh"
  host_config_args --mounts-only
  say "building $LAB_IMAGE FROM $BASE_TAG ..."
  if ! podman build --network host "${HOST_CONFIG_ARGS[@]}" \
    --build-arg BASE_IMAGE="$BASE_TAG" --ignorefile docker/Dockerfile.dockerignore \
    -f docker/Dockerfile -t "$LAB_IMAGE" . >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" >&2
    say "FAILED: podman build"
    exit 1
  fi
  rm -rf .build/wheels
  say "image built at $(elapsed) s"
  podman system service --time=0 "unix://$work/podman.sock" >"$work/service.log" 2>&1 &
  service_pid=$!
  export DOCKER_HOST="unix://$work/podman.sock"
  for _ in $(seq 100); do [ -S "$work/podman.sock" ] && break; sleep 0.1; done
else
  compose build >&2
fi

# ---------------------------------------------------------------- run
compose down --volumes --remove-orphans --timeout 2 >/dev/null 2>&1 || true
say "starting ini, extsock, segw1, segw2 ..."
compose up -d --no-build ini segw1 segw2 extsock >&2

echo_client='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.100.0.1", 0))
s.settimeout(0.5)
s.sendto(b"ping", ("10.200.0.1", 7777))
try:
    print(s.recvfrom(4096)[0].decode().split()[0])
except OSError:
    sys.exit(1)
'
# answered_by GATEWAY TIMEOUT: wait for a UDP echo through the tunnel answered by GATEWAY.
answered_by() {
  local want=$1 deadline=$(($(date +%s) + $2)) got
  while (($(date +%s) < deadline)); do
    got=$(compose exec -T ini python3 -c "$echo_client" 2>/dev/null || true)
    if [ "$got" = "$want" ]; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

if ! answered_by segw1 "$TUNNEL_TIMEOUT"; then
  say "FAILED: no UDP echo answered through segw1 within $TUNNEL_TIMEOUT s"
  exit 1
fi
say "tunnel up through segw1, UDP echo answered by segw1 ($(elapsed) s)"
compose kill segw1 >/dev/null 2>&1
killed=$(date +%s.%N)
say "segw1 killed"
if ! answered_by segw2 "$TUNNEL_TIMEOUT"; then
  say "FAILED: the tunnel did not move to segw2 within $TUNNEL_TIMEOUT s of segw1's kill"
  exit 1
fi
moved=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$killed" "$(date +%s.%N)")
compose exec -T extsock extsock -u unix:///run/lab-vici/charon.vici list-sas 2>/dev/null | head -n 3 >&2 || true
echo "compose-demo: ok: tunnel moved segw1 -> segw2, UDP echo answered by segw2 ${moved} s after segw1 was killed (engine $ENGINE, total $(elapsed) s)"
