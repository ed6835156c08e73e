#!/usr/bin/env bash
# Installs extsock system-wide, next to Debian's strongswan.service:
#   - a virtualenv in /opt/extsock with extsock in it (from this checkout, or from wheels),
#   - /usr/local/bin/extsock (on PATH) pointing into it,
#   - the group `extsock`, whose members may use the control socket,
#   - /var/lib/extsock (state), /etc/systemd/system/extsock.service, enabled (not started),
#   - the man pages extsock(8), extsock.conf(5) and bash completion, under /usr/local/share,
#   - a drop-in for Debian's strongswan.service that removes its `swanctl --load-all`
#     (extsock loads the whole of swanctl.conf itself, as swanctl would); --keep-load-all
#     leaves strongswan.service as it is (extsock then takes over what swanctl loaded).
# Idempotent: run it again to upgrade. `--uninstall` removes all of it except the state
# (add --purge to remove /var/lib/extsock too); strongSwan and its config are never touched.
#
#   sudo scripts/install-system.sh [--wheels DIR] [--keep-load-all] [--start]
#   sudo scripts/install-system.sh --uninstall [--purge]
#
# --wheels DIR installs offline from a folder of wheels (`pip wheel . -w DIR` made on a
# machine that reaches the package index); without it pip fetches the dependencies as
# configured on this machine (/etc/pip.conf, PIP_* variables).
set -euo pipefail

PREFIX="${EXTSOCK_PREFIX:-/opt/extsock}"
BIN_LINK="${EXTSOCK_BIN_LINK:-/usr/local/bin/extsock}"
UNIT_DIR="${EXTSOCK_UNIT_DIR:-/etc/systemd/system}"
STATE_DIR=/var/lib/extsock
GROUP=extsock
DROPIN_DIR="$UNIT_DIR/strongswan.service.d"
DROPIN="$DROPIN_DIR/50-extsock.conf"
MAN_DIR="${EXTSOCK_MAN_DIR:-/usr/local/share/man}"
COMPLETION_DIR="${EXTSOCK_COMPLETION_DIR:-/usr/local/share/bash-completion/completions}"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

wheels="" uninstall=0 purge=0 start=0 keep_load_all=0
while (($#)); do
  case "$1" in
    --wheels) wheels="${2:?--wheels needs a folder}"; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    --start) start=1; shift ;;
    --keep-load-all) keep_load_all=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-system.sh: unknown option '$1' (accepted: --wheels DIR, --keep-load-all, --start, --uninstall, --purge)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system.sh: run it as root (sudo)" >&2
  exit 2
fi
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

if ((uninstall)); then
  if have_systemd; then
    systemctl disable --now extsock.service 2>/dev/null || true
  fi
  rm -f "$UNIT_DIR/extsock.service" "$DROPIN"
  rmdir "$DROPIN_DIR" 2>/dev/null || true
  have_systemd && systemctl daemon-reload
  if [ -L "$BIN_LINK" ] && [ "$(readlink "$BIN_LINK")" = "$PREFIX/bin/extsock" ]; then
    rm -f "$BIN_LINK"
  fi
  rm -rf "$PREFIX"
  rm -f "$MAN_DIR/man8/extsock.8" "$MAN_DIR/man5/extsock.conf.5" "$COMPLETION_DIR/extsock"
  if getent group "$GROUP" >/dev/null; then groupdel "$GROUP"; fi
  if ((purge)); then rm -rf "$STATE_DIR"; fi
  if ((purge)); then echo "extsock uninstalled (state removed)"; else echo "extsock uninstalled (state kept in $STATE_DIR)"; fi
  exit 0
fi

# python3 -m venv needs Debian's python3-venv (ensurepip).
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  if command -v apt-get >/dev/null; then
    echo "installing Debian's python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  else
    echo "install-system.sh: python3 with the venv module is needed" >&2
    exit 1
  fi
fi
if [ ! -x "$PREFIX/bin/python" ]; then
  python3 -m venv "$PREFIX"
fi
if [ -n "$wheels" ]; then
  "$PREFIX/bin/python" -m pip install -q --no-index --find-links "$wheels" --upgrade extsock_py
else
  "$PREFIX/bin/python" -m pip install -q --upgrade "$SRC"
fi
ln -sfn "$PREFIX/bin/extsock" "$BIN_LINK"
version="$("$PREFIX/bin/python" -c 'import importlib.metadata as m; print(m.version("extsock-py"))')"

getent group "$GROUP" >/dev/null || groupadd --system "$GROUP"
install -d -m 0700 -o root -g root "$STATE_DIR"
install -m 0644 "$SRC/systemd/extsock.service" "$UNIT_DIR/extsock.service"
install -D -m 0644 "$SRC/docs/man/extsock.8" "$MAN_DIR/man8/extsock.8"
install -D -m 0644 "$SRC/docs/man/extsock.conf.5" "$MAN_DIR/man5/extsock.conf.5"
install -D -m 0644 "$SRC/contrib/bash-completion/extsock" "$COMPLETION_DIR/extsock"
if ((keep_load_all)); then
  rm -f "$DROPIN"
else
  install -d -m 0755 "$DROPIN_DIR"
  install -m 0644 "$SRC/systemd/strongswan.service.d/50-extsock.conf" "$DROPIN"
fi
if have_systemd; then
  systemctl daemon-reload
  systemctl enable extsock.service >/dev/null 2>&1
  if ((start)); then systemctl restart extsock.service; fi
  echo "extsock $version installed: $BIN_LINK, unit extsock.service enabled"
  if ((start)); then
    :
  elif systemctl is-active --quiet extsock.service; then
    echo "extsock is running the version it started with: systemctl restart extsock (tunnels stay up)"
  else
    echo "start it with: systemctl start extsock"
  fi
else
  echo "extsock $version installed: $BIN_LINK; no running systemd here, the unit is in $UNIT_DIR"
fi
