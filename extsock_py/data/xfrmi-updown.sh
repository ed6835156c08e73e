#!/bin/sh
# charon's updown script for extsock's route-based clones (policy `clone_if_id_base` > 0).
#
# Each clone of a managed connection has its own XFRM interface ID (if_id_in = if_id_out),
# so its own policies and SAs: during a make-before-break switch both the old and the new
# clone accept inbound ESP, and outbound follows the route. This script makes that route:
# when a clone's CHILD_SA is up it creates the clone's XFRM interface `exs<IF_ID>` (once) and
# points the route to the remote traffic selector at it, with a source address of this host
# inside the local selector. When a CHILD_SA goes down it leaves the route alone: traffic
# meant for the tunnel is dropped on the interface without SAs (it never leaves in clear)
# until the next clone's CHILD_SA moves the route.
#
# Use: in the managed connection's child, `updown = /path/to/xfrmi-updown.sh`
# (`extsock xfrmi-updown` prints the path); charon needs its `updown` plugin.
set -u
IFID="${PLUTO_IF_ID_OUT:-}"
case "$IFID" in
  '' | 0 | *[!0-9]*) exit 0 ;; # not a route-based clone: nothing to do
esac
DEV="exs$IFID"
case "${PLUTO_VERB:-}" in
  up-client* | up-host*)
    SRC=""
    if [ -n "${PLUTO_MY_SOURCEIP:-}" ]; then
      SRC="src ${PLUTO_MY_SOURCEIP%%/*}"
    else
      # shellcheck disable=SC2046 # word splitting wanted: "N: IF FAMILY ADDR/LEN ..."
      set -- $(ip -o addr show to "${PLUTO_MY_CLIENT:-0.0.0.0/32}" 2>/dev/null)
      [ $# -ge 4 ] && SRC="src ${4%/*}"
    fi
    ADD=""
    [ -e "/sys/class/net/$DEV" ] || ADD="link add $DEV type xfrm dev ${PLUTO_INTERFACE:-lo} if_id $IFID"
    # One `ip` for all (charon waits for this script, and each process start counts).
    ip -batch - <<EOF || exit 1
$ADD
link set dev $DEV up
route replace $PLUTO_PEER_CLIENT dev $DEV $SRC
EOF
    ;;
esac
exit 0
