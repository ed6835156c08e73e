#!/usr/bin/env bash
# Makes a Debian machine ready to run this project's containers, idempotently (run it again
# at will): installs podman, runc, mmdebstrap (and, with --compose, docker-compose), and sets
# the two podman settings these machines need in /etc/containers/containers.conf, keeping
# every other setting there:
#   [engine]     runtime = "runc"      (crun refuses: "cgroups in hybrid mode not supported")
#   [containers] default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
#                (podman's default raises RLIMIT_NOFILE past the hard limit: setrlimit fails)
# Usage: scripts/container-host.sh [--compose] [--check]
#   --check: change nothing; exit 0 when ready, 1 when not (and say what is missing).
# Exit 2 (with the reason) where it cannot run: not root, or no apt-get.
set -euo pipefail

CONF=${CONTAINERS_CONF:-/etc/containers/containers.conf}
PACKAGES=(podman runc mmdebstrap)
check=0
for arg in "$@"; do
  case "$arg" in
    --compose) PACKAGES+=(docker-compose) ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "container-host: unknown argument $arg" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

# Prints the settings file with both settings in place (others kept), on stdout.
merged_conf() {
  python3 - "$CONF" <<'PY'
import re, sys
from pathlib import Path

WANT = {
    "engine": ("runtime", '"runc"'),
    "containers": ("default_ulimits", '["nofile=1024:1024", "nproc=4096:4096"]'),
}
path = Path(sys.argv[1])
lines = path.read_text().splitlines() if path.exists() else []
section = None
done = set()
out = []
skipping = False  # inside the continuation lines of a multi-line value being replaced
def flush(sec):
    # The key was not in its section: add it at the section's end.
    if sec in WANT and sec not in done:
        key, value = WANT[sec]
        while out and not out[-1].strip():
            out.pop()
        out.append(f"{key} = {value}")
        out.append("")
        done.add(sec)
for line in lines:
    if skipping:
        skipping = "]" not in line
        continue
    head = re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line)
    if head:
        flush(section)
        section = head.group(1).strip()
        out.append(line)
        continue
    if section in WANT:
        key, value = WANT[section]
        if re.match(rf"^\s*#?\s*{key}\s*=", line):
            rest = line.split("=", 1)[1].split("#", 1)[0]
            skipping = not line.lstrip().startswith("#") and "[" in rest and "]" not in rest
            if section not in done:
                out.append(f"{key} = {value}")
                done.add(section)
            continue
    out.append(line)
flush(section)
for sec, (key, value) in WANT.items():
    if sec not in done:
        if out and out[-1].strip():
            out.append("")
        out += [f"[{sec}]", f"{key} = {value}"]
sys.stdout.write("\n".join(out).rstrip("\n") + "\n")
PY
}

conf_ok() {
  [ -f "$CONF" ] && command -v python3 >/dev/null && [ "$(merged_conf)" = "$(cat "$CONF")" ]
}

if ((check)); then
  ok=0
  ((${#missing[@]})) && { echo "container-host: missing packages: ${missing[*]}"; ok=1; }
  conf_ok || { echo "container-host: $CONF lacks runtime = \"runc\" or default_ulimits"; ok=1; }
  ((ok == 0)) && echo "container-host: ready"
  exit "$ok"
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "container-host: needs root (installs packages, writes $CONF)" >&2
  exit 2
fi
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "container-host: no apt-get; install ${missing[*]} by hand" >&2
    exit 2
  fi
  echo "container-host: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! conf_ok; then
  mkdir -p "$(dirname "$CONF")"
  new=$(merged_conf)
  [ -f "$CONF" ] && cp -p "$CONF" "$CONF.bak"
  printf '%s\n' "$new" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
  echo "container-host: set runtime = \"runc\" and default_ulimits in $CONF"
fi
echo "container-host: ready"
