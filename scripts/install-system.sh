#!/usr/bin/env bash
# Installs extsock system-wide, next to Debian's strongswan.service:
#   - a virtualenv in /opt/extsock with extsock in it (from this checkout, or from wheels),
#     its dependencies exactly as pinned in requirements.lock, each file checked against
#     the sha256 there (pip --require-hashes), then extsock itself with --no-deps,
#   - /usr/local/bin/extsock (on PATH) pointing into it,
#   - the group `extsock`, whose members may use the control socket,
#   - /var/lib/extsock (state), /etc/systemd/system/extsock.service, enabled (not started),
#   - the man pages extsock(8), extsock.conf(5) and bash completion, under /usr/local/share,
#   - a drop-in for Debian's strongswan.service that removes its `swanctl --load-all`
#     (extsock loads the whole of swanctl.conf itself, as swanctl would); --keep-load-all
#     leaves strongswan.service as it is (extsock then takes over what swanctl loaded).
# Idempotent: run it again to upgrade. `--uninstall` removes all of it except the state
# (add --purge to remove /var/lib/extsock too) and hands charon back to swanctl.conf as
# Debian's strongswan.service has it: `swanctl --load-all` (which unloads extsock's clones
# NAME@GATEWAY and probes), then each clone's IKE_SA is ended once the connection as written
# has its own (at most 10 s in all). strongSwan's config files are never touched.
#
#   sudo scripts/install-system.sh [--wheels DIR] [--keep-load-all] [--start]
#   sudo scripts/install-system.sh --uninstall [--purge]
#
# --wheels DIR installs offline from a folder of wheels, made on a machine that reaches the
# package index with `pip wheel --require-hashes -r requirements.lock -w DIR` and
# `pip wheel --no-deps . -w DIR`; without it pip fetches the dependencies as configured on
# this machine (/etc/pip.conf, PIP_* variables), checked against the same hashes.
# EXTSOCK_PREFIX (default /opt/extsock) must be an absolute, normalised path of at least two
# parts; --uninstall removes it only when it is a virtualenv (has pyvenv.cfg).
set -euo pipefail
umask 022  # the venv, the unit and the drop-in readable by all, whatever the caller's umask

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
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-system.sh: unknown option '$1' (accepted: --wheels DIR, --keep-load-all, --start, --uninstall, --purge)" >&2; exit 2 ;;
  esac
done
# The prefix is removed with rm -rf on --uninstall: refuse anything but a plain absolute path
# of two parts or more (not /, not /opt, no `.` or `..`, no empty part, no odd characters).
valid_prefix() {
  local p="$1"
  [[ "$p" == /* ]] || return 1
  [[ "$p" =~ ^[A-Za-z0-9._/+-]+$ ]] || return 1
  [[ "$p" != */ && "$p" != *//* ]] || return 1
  [[ "/$p/" != */./* && "/$p/" != */../* ]] || return 1
  [[ "$p" == /*/* ]] || return 1
}
if ! valid_prefix "$PREFIX"; then
  echo "install-system.sh: EXTSOCK_PREFIX='$PREFIX' refused (accepted: an absolute path of at least two parts, e.g. /opt/extsock, without '.', '..', '//', a trailing '/' or characters outside A-Z a-z 0-9 . _ + - /)" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system.sh: run it as root (sudo)" >&2
  exit 2
fi
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

warn() { echo "install-system.sh: warning: $*" >&2; }

# IKE_SAs whose config is one of extsock's clones or probes (NAME@GATEWAY[~probe]) and is
# not a connection loaded now (a connection of swanctl.conf may have '@' in its name).
clone_sas() {
  local loaded
  loaded="$(swanctl --list-conns 2>/dev/null | sed -n 's/^\([^ ]*\): .*/\1/p')"
  swanctl --list-sas 2>/dev/null | sed -n 's/^\([^ ]*@[^ ]*\): #[0-9]*, .*/\1/p' | sort -u |
    while read -r name; do
      grep -qxF -- "$name" <<<"$loaded" || echo "$name"
    done
}

has_sa() {  # an IKE_SA of connection $1 (ESTABLISHED only, with a second argument)
  swanctl --list-sas --ike "$1" 2>/dev/null | grep -E "^[^ ]+: #[0-9]+, ${2:-}" |
    grep -qF -- "$1: #"
}

# charon as Debian's strongswan.service leaves it: swanctl.conf loaded by swanctl. The clones
# keep keyingtries = 1 and dpd_action = clear, which only extsock makes up for; unloading
# their config leaves their SAs on it, so each clone's IKE_SA is ended too, once the
# connection as written is up (its start_action) or 10 s have passed.
restore_charon() {
  if ! command -v swanctl >/dev/null; then
    return 0
  fi
  if ! swanctl --stats >/dev/null 2>&1; then
    echo "charon is not running: no clone of extsock's to unload"
    return 0
  fi
  # (swanctl's own messages are not repeated: a parse error may quote the file's secrets)
  if ! swanctl --load-all --noprompt >/dev/null 2>&1; then
    warn "swanctl --load-all failed (run it to see why); extsock's clones may still be loaded: check swanctl --list-conns"
  fi
  local clones name waited=0
  clones="$(clone_sas)" || clones=""  # charon gone meanwhile: nothing left to end
  for name in $clones; do
    while ((waited < 50)) && ! has_sa "${name%@*}" ESTABLISHED; do
      sleep 0.2
      waited=$((waited + 1))
    done
    if ! has_sa "$name"; then
      continue  # gone meanwhile (a gateway with unique = replace drops it for the new one)
    elif swanctl --terminate --ike "$name" --force --timeout 5 >/dev/null 2>&1; then
      echo "ended the IKE_SA of extsock's clone $name"
    else
      warn "could not end the IKE_SA of $name: swanctl --terminate --ike '$name'"
    fi
  done
}

if ((uninstall)); then
  if have_systemd; then
    systemctl disable --now extsock.service 2>/dev/null || true
  fi
  rm -f "$UNIT_DIR/extsock.service" "$DROPIN"
  rmdir "$DROPIN_DIR" 2>/dev/null || true
  if have_systemd; then systemctl daemon-reload; fi
  restore_charon
  if [ -L "$BIN_LINK" ] && [ "$(readlink "$BIN_LINK")" = "$PREFIX/bin/extsock" ]; then
    rm -f "$BIN_LINK"
  fi
  if [ -f "$PREFIX/pyvenv.cfg" ]; then
    rm -rf "$PREFIX"
  elif [ -e "$PREFIX" ]; then
    warn "$PREFIX is not a virtualenv (no pyvenv.cfg): left in place"
  fi
  if getent group "$GROUP" >/dev/null; then
    groupdel "$GROUP" || warn "groupdel $GROUP failed: the group is left (remove it with groupdel $GROUP)"
  fi
  rm -f "$MAN_DIR/man8/extsock.8" "$MAN_DIR/man5/extsock.conf.5" "$COMPLETION_DIR/extsock"
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
# The dependencies exactly as locked, every file checked against its sha256; then extsock
# alone (--no-deps), and pip check that the lock satisfies what it requires.
pip=("$PREFIX/bin/python" -m pip install -q)
if [ -n "$wheels" ]; then
  pip+=(--no-index --find-links "$wheels")
fi
"${pip[@]}" --require-hashes -r "$SRC/requirements.lock"
if [ -n "$wheels" ]; then
  "${pip[@]}" --no-deps --upgrade extsock_py
else
  "${pip[@]}" --no-deps --upgrade "$SRC"
fi
"$PREFIX/bin/python" -m pip check -q >/dev/null
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
