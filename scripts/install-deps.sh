#!/usr/bin/env bash
# Installs what extsock_py needs on a Debian machine: strongSwan and lab tools from
# Debian's packages (when root), and the Python packages into a virtualenv.
set -euo pipefail
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# One package a line (tests/unit/test_lab_plugins.py reads this list: every plugin in the
# lab's load lists must come from a package named here).
DEB_PACKAGES=(
  strongswan-charon              # /usr/lib/ipsec/charon
  charon-systemd                 # charon-systemd (strongswan.service)
  strongswan-swanctl             # swanctl, vici plugin
  strongswan-pki                 # pki (the lab's certificates)
  libstrongswan                  # random nonce pem pkcs1 pkcs8 x509 ... sha1 sha2 hmac aes kdf kernel-netlink
  strongswan-libcharon           # socket-default counters
  libstrongswan-standard-plugins # openssl gcm (not pulled in with --no-install-recommends)
  libstrongswan-extra-plugins    # curve25519
  libcharon-extra-plugins        # kernel-libipsec
  iproute2                       # ip (namespaces, veth)
  iptables
  nftables                       # nft (lab faults)
  iputils-ping                   # ping
  procps
  util-linux                     # unshare
  mount                          # mount (each charon's own /run)
  mmdebstrap                     # Debian roots of other strongSwan releases (lab --charon trixie|sid)
  qemu-system-x86                # the XFRM lab's VM (lab up --kernel xfrm, the [xfrm] tests)
  e2fsprogs                      # mke2fs -d: the VM's disk image
  python3-venv
  systemd                        # systemd-analyze (tests/unit/test_systemd_unit.py scores the unit)
  docker-compose                 # validates docker/compose.yaml
  dpkg-dev                       # dpkg-buildpackage (make deb)
  debhelper                      # dh, debian/rules (make deb)
  python3-pip                    # pip --python: the package's bundled venv (make deb)
  lintian                        # make deb checks the package
  groff-base                     # groff: the man pages are checked for warnings
  prometheus                     # promtool: the alerting rules' tests, `check metrics`
  openssl                        # keys encrypted with each PEM cipher (differential tests)
  stress-ng                      # the bench's busy-host row of figure 2f (both cores busy)
)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's prometheus (here for promtool) enables and starts a Prometheus server: not
    # wanted here. Only when this run installed it, so an admin's own server is left alone.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
      systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
  else
    echo "note: not root or no apt-get; missing Debian packages: ${missing[*]}" >&2
    echo "      the lab and integration tests need them (they will be skipped)" >&2
  fi
fi
# The systemd tests run Debian's strongswan.service under systemd in a podman container:
# podman, runc, mmdebstrap and the two settings podman needs on Debian 12 (idempotent).
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  bash "$(dirname "$0")/container-host.sh" >/dev/null \
    || echo "note: scripts/container-host.sh failed: the systemd tests will be skipped" >&2
fi

# strongSwan's Debian package starts a system charon; the lab runs its own daemons.
if command -v systemctl >/dev/null && systemctl is-active --quiet strongswan 2>/dev/null; then
  true
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # the runtime dependencies as deployed (requirements.lock, hashes checked), then the rest
  "$VENV/bin/python" -m pip install -q --require-hashes -r requirements.lock
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
