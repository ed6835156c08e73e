#!/usr/bin/env bash
# Runs INSIDE the systemd container of tests/integration/test_systemd.py (root, PID 1 is
# systemd, Debian's strongSwan installed): makes Debian's strongswan.service work with
# userspace ESP, starts two lab gateways (charon in network namespaces segw1, segw2, run
# as transient systemd units), and writes /etc/swanctl/swanctl.conf with the managed
# connection `uplink` as a user writes it for swanctl (start_action = start).
# Usage: lab-setup.sh SECRET
set -euo pipefail
SECRET="${1:?usage: lab-setup.sh SECRET}"
PLUGINS="random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey sha1 sha2 hmac gcm aes kdf kernel-libipsec kernel-netlink socket-default vici counters"

# --- the three settings Debian's strongswan.service needs here (LAB-FACTS) -----------------
cat > /etc/strongswan.d/zz-lab.conf <<CONF
charon-systemd {
    load_modular = no
    load = $PLUGINS
    install_virtual_ip = no
}
CONF
sed -i 's/^\(\s*\)load = no/\1load = yes/' /etc/strongswan.d/charon/kernel-libipsec.conf
systemctl disable --now strongswan-starter.service >/dev/null 2>&1 || true

# --- network: this container's root namespace is the initiator ---------------------------
ip link set lo up
ip addr replace 10.100.0.1/24 dev lo   # inside local_ts: libipsec's policy route needs it
for n in 1 2; do
  ns="segw$n"
  ip netns del "$ns" 2>/dev/null || true
  ip link del "ini$n" 2>/dev/null || true
  ip netns add "$ns"
  ip link add "ini$n" type veth peer name eth0 netns "$ns"
  ip addr add "10.99.$n.1/24" dev "ini$n"
  ip link set "ini$n" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add 10.200.0.1/24 dev lo
  ip -n "$ns" addr add "10.99.$n.2/24" dev eth0
  ip -n "$ns" link set eth0 up
  dir="/srv/lab/$ns"
  mkdir -p "$dir"
  cat > "$dir/strongswan.conf" <<CONF
charon {
    load = $PLUGINS
    install_virtual_ip = no
    plugins { vici { socket = unix://$dir/charon.vici } }
    filelog { lab { path = $dir/charon.log
                    flush_line = yes
                    default = 1 } }
}
CONF
  cat > "$dir/swanctl.conf" <<CONF
connections {
    lab-ini {
        version = 2
        local_addrs = 10.99.$n.2
        remote_addrs = %any
        unique = replace
        local { auth = psk
                id = segw.lab }
        remote { auth = psk
                 id = %any }
        children { net { local_ts = 10.200.0.0/24
                         remote_ts = 10.100.0.0/24
                         esp_proposals = default } }
    }
}
secrets { ike-lab { secret = "$SECRET" } }
CONF
  chmod 0600 "$dir/swanctl.conf"
  systemctl stop "lab-$ns.service" 2>/dev/null || true
  systemctl reset-failed "lab-$ns.service" 2>/dev/null || true
  systemd-run --quiet --unit="lab-$ns" --setenv=STRONGSWAN_CONF="$dir/strongswan.conf" \
    ip netns exec "$ns" unshare -m sh -c 'mount -t tmpfs tmpfs /run && exec /usr/lib/ipsec/charon'
  for _ in $(seq 100); do [ -S "$dir/charon.vici" ] && break; sleep 0.1; done
  swanctl --load-all --noprompt --file "$dir/swanctl.conf" -u "unix://$dir/charon.vici" >/dev/null 2>&1
done

# --- the initiator's config, as a user writes it for swanctl --------------------------------
cat > /etc/swanctl/swanctl.conf <<CONF
connections {
    uplink {
        version = 2
        remote_addrs = 10.99.1.2, 10.99.2.2
        dpd_delay = 1s
        local { auth = psk
                id = ini.lab }
        remote { auth = psk
                 id = segw.lab }
        children {
            net {
                local_ts = 10.100.0.0/24
                remote_ts = 10.200.0.0/24
                esp_proposals = default
                dpd_action = restart
                start_action = start
            }
        }
    }
}
secrets { ike-lab { secret = "$SECRET" } }
extsock {
    connect_timeout = 5s
    backoff { initial = 500ms
              maximum = 2s }
    monitor { enabled = yes
              local = 10.100.0.1
              remote = 10.200.0.1
              interval = 1s
              misses = 3 }
}
CONF
chmod 0600 /etc/swanctl/swanctl.conf
systemctl restart strongswan.service
