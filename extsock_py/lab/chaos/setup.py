"""The chaos lab's configuration: two managed connections that share three gateways, with
short rekey timers, and extsock's policy. Pure: renders text."""

from __future__ import annotations

from dataclasses import dataclass

from extsock_py.lab.topology import ID_DOMAIN, PROTECTED_NET

CHILD_REKEY = 20  # s
IKE_REKEY = 40  # s: as the first chaos run of issue 26; faults end many IKE_SAs before 60 s
# Margins to the hard lifetimes as a real deployment has (minutes at charon's defaults), not
# charon's 10 % (2 s for a CHILD_SA): with 2 s a CHILD rekey that met an IKE rekey was not done
# before the hard expiry (seed 2603: `closing expired CHILD_SA da{13}`, 22 s after it came up).
CHILD_MARGIN = 10  # s from a CHILD_SA's rekey to its hard lifetime
IKE_OVER = 15  # s from an IKE_SA's rekey to its hard lifetime
REKEY_RAND = 2  # s: rekeys come up to this much before their time
DRAIN = 1.0  # s: extsock's switch_drain (the default)


@dataclass(frozen=True)
class ChaosConn:
    """A managed connection: its name, its CHILD_SA's name, its half of ini's net and the
    address inside it that its traffic comes from."""

    name: str
    child: str
    net: str
    source: str


CONNS = (
    ChaosConn("upa", "da", "10.100.0.0/25", "10.100.0.1"),
    ChaosConn("upb", "db", "10.100.0.128/25", "10.100.0.129"),
)


def policy(changed: bool = False) -> str:
    """extsock's section. `changed`: the variant a SIGHUP with a changed file loads."""
    timeout = "6s" if changed else "5s"
    return f"""extsock {{
    connect_timeout = {timeout}
    dead_after_retransmits = 1
    max_cycles = 0
    switch_drain = {DRAIN:g}s
    backoff {{
        initial = 200ms
        maximum = 2s
    }}
}}
"""


def _conn(conn: ChaosConn, gateways: list[str], changed: bool) -> str:
    # Equal IKE configs but for their children: charon puts both CHILD_SAs into one IKE_SA
    # towards a gateway (reuse_ikesa). The changed file moves upb's CHILD rekey by 2 s.
    child_rekey = CHILD_REKEY + (2 if changed and conn.name == "upb" else 0)
    return f"""    {conn.name} {{
        version = 2
        local_addrs = %any
        remote_addrs = {", ".join(gateways)}
        dpd_delay = 1s
        rekey_time = {IKE_REKEY}s
        over_time = {IKE_OVER}s
        rand_time = {REKEY_RAND}s
        local {{
            auth = psk
            id = ini.{ID_DOMAIN}
        }}
        remote {{
            auth = psk
            id = *.{ID_DOMAIN}
        }}
        children {{
            {conn.child} {{
                local_ts = {conn.net}
                remote_ts = {PROTECTED_NET}
                esp_proposals = default
                rekey_time = {child_rekey}s
                life_time = {child_rekey + CHILD_MARGIN}s
                rand_time = {REKEY_RAND}s
                dpd_action = restart
                start_action = none
            }}
        }}
    }}
"""


def swanctl_conf(gateways: list[str], secrets: str, changed: bool = False) -> str:
    """ini's swanctl.conf for extsock: the two connections, the lab's secrets block as it
    is rendered (copied, never printed), and the policy."""
    conns = "".join(_conn(c, gateways, changed) for c in CONNS)
    return f"connections {{\n{conns}}}\n\n{secrets}\n{policy(changed)}"
