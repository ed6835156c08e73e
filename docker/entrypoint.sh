#!/bin/sh
# Start one lab node in a container: render swanctl/ templates, add the lo address the
# tunnel's traffic selector needs, run charon, and (gateways) load the responder conn.
# Env: LAB_NODE (ini|segw1|segw2|segw3), LAB_GATEWAYS (2), LAB_PSK, LAB_CONF_DIR,
# LAB_VICI_SOCKET.  Any arguments are run instead of waiting on charon (debugging).
set -eu

NODE=${LAB_NODE:?set LAB_NODE to ini, segw1, segw2 or segw3}
GATEWAYS=${LAB_GATEWAYS:-2}
CONF_DIR=${LAB_CONF_DIR:-/etc/swanctl-lab}
VICI=${LAB_VICI_SOCKET:-/run/lab-vici/charon.vici}
LOG=${LAB_LOG:-/var/log/charon.log}

mkdir -p "$CONF_DIR" "$(dirname "$VICI")" "$(dirname "$LOG")"
EXTSOCK_LAB_PSK=${LAB_PSK:-extsock-lab-shared-secret} \
    python3 -m extsock_py.lab.cli render "$NODE" --out "$CONF_DIR" --gateways "$GATEWAYS" \
    --auth psk --vici-socket "$VICI" --log-path "$LOG" >/dev/null

case "$NODE" in
    ini) ip addr replace 10.100.0.1/24 dev lo ;;
    *) ip addr replace 10.200.0.1/24 dev lo ;;
esac

rm -f "$VICI"
STRONGSWAN_CONF="$CONF_DIR/strongswan.conf" /usr/lib/ipsec/charon &
CHARON=$!
trap 'kill "$CHARON" 2>/dev/null; wait "$CHARON"; exit 0' TERM INT

i=0
until [ -S "$VICI" ]; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$CHARON" 2>/dev/null; then
        echo "charon did not open $VICI" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.1
done

# Every plugin of the load list must have loaded (else: which, and the package to install).
python3 -m extsock_py.lab.cli check-plugins --conf "$CONF_DIR/strongswan.conf" \
    --vici-socket "$VICI" --name "charon of $NODE" || { kill "$CHARON"; exit 1; }

case "$NODE" in
    segw*)
        timeout 15 swanctl --load-all --file "$CONF_DIR/swanctl.conf" -u "unix://$VICI"
        # UDP echo on the protected address: replies name the gateway that answered.
        python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.200.0.1", 7777))
while True:
    data, peer = s.recvfrom(4096)
    s.sendto(sys.argv[1].encode() + b" " + data, peer)
' "$NODE" &
        ;;
esac

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
wait "$CHARON"
