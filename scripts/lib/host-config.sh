# shellcheck shell=bash
# Source this file, then call host_config_args: it fills the array HOST_CONFIG_ARGS with the
# podman run/build options that hand a container this machine's package configuration, read
# only, read at run time (nothing about any machine is written here):
#   - apt: /etc/apt/sources.list(.d), apt.conf(.d), preferences.d, trusted.gpg.d, keyrings.
#     Where the host keeps its sources only in sources.list.d, the image's own sources.list
#     is hidden (/dev/null over it), so apt reads the host's sources once.
#   - pip: /etc/pip.conf, /etc/xdg/pip, $PIP_CONFIG_FILE, every PIP_* variable (passed on),
#     and every existing absolute path those name (cert, find-links, constraint files...).
#   - the CA bundle /etc/ssl/certs/ca-certificates.crt (pip over a TLS proxy needs it);
#   - http_proxy, https_proxy, no_proxy (either case), when set.
# A path is mounted at the same path inside.  Only existing paths are mounted.
# `host_config_args --mounts-only` leaves the -e options out (podman build takes -v, not -e).

host_config_args() {
  local with_env=1
  [ "${1:-}" = "--mounts-only" ] && with_env=0
  HOST_CONFIG_ARGS=()
  local -A seen=()
  local p
  _hc_mount() {
    local path=$1
    [ -e "$path" ] || return 0
    [ -n "${seen[$path]:-}" ] && return 0
    seen[$path]=1
    HOST_CONFIG_ARGS+=(-v "$path:$path:ro")
  }
  # apt
  for p in /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/apt.conf /etc/apt/apt.conf.d \
           /etc/apt/preferences.d /etc/apt/trusted.gpg.d /etc/apt/keyrings; do
    _hc_mount "$p"
  done
  if [ ! -e /etc/apt/sources.list ] && [ -d /etc/apt/sources.list.d ]; then
    HOST_CONFIG_ARGS+=(-v /dev/null:/etc/apt/sources.list:ro)
  fi
  # pip: config files, and the paths they and the PIP_* variables name
  local files=(/etc/pip.conf /etc/xdg/pip/pip.conf)
  [ -n "${PIP_CONFIG_FILE:-}" ] && files+=("$PIP_CONFIG_FILE")
  _hc_mount /etc/pip.conf
  _hc_mount /etc/xdg/pip
  [ -n "${PIP_CONFIG_FILE:-}" ] && _hc_mount "$PIP_CONFIG_FILE"
  local values=() f line var
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    while IFS= read -r line; do
      case "$line" in *=*) values+=("${line#*=}") ;; esac
    done <"$f"
  done
  while IFS= read -r var; do
    ((with_env)) && HOST_CONFIG_ARGS+=(-e "$var")
    values+=("${!var}")
  done < <(compgen -e | grep '^PIP_' || true)
  local v word
  for v in "${values[@]}"; do
    for word in $v; do
      word=${word#file://}
      case "$word" in /*) _hc_mount "$word" ;; esac
    done
  done
  # CA bundle and proxies
  _hc_mount /etc/ssl/certs/ca-certificates.crt
  for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!var:-}" ] && ((with_env)) && HOST_CONFIG_ARGS+=(-e "$var")
  done
  unset -f _hc_mount
  return 0
}
