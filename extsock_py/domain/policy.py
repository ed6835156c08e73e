"""Failover policy values: how fast to declare a gateway dead, how to retry, when to fail back.

Each key's default lives here, once, and so does what it accepts (`Accepts`, plain metadata
in the field's annotation): the config adapters validate these dataclasses themselves, so a
new key is one field here and nothing else.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Literal

ProbeKind = Literal["udp", "icmp"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("udp", "icmp")
# Whose identity each clone expects of its gateway: the connection's remote id as written,
# or the gateway's own address (a PSK per gateway: charon picks the PSK by that id).
RemoteIdKind = Literal["configured", "address"]


class Form(StrEnum):
    """How a key is written in a config file."""

    NUMBER = "number"
    DURATION = "duration"  # 500ms, 5s, 2m, 1h; a bare number means seconds
    FLAG = "flag"  # yes or no
    ADDRESS = "address"  # an IPv4 or IPv6 address
    NETNS = "netns"  # the name of a network namespace in /run/netns
    CHOICE = "choice"  # one of the words of the field's Literal type, in any case


@dataclass(frozen=True)
class Accepts:
    """What a policy key accepts: its written form and its bounds (None: unbounded). Every
    duration has both a lower (`ge`) and an upper (`le`) bound."""

    form: Form = Form.NUMBER
    ge: float | None = None
    gt: float | None = None
    le: float | None = None


MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
# The shortest duration a policy may set where 0 has no meaning: a timeout, a delay or an
# interval of less would turn the daemon into a busy loop of charon commands or probes.
SHORTEST = 0.1
# The tunnel monitor's interval goes lower: its probes are one small datagram each, sent by a
# thread of its own on its own timer (BFD-class detection: 3 x 30 ms). 20 ms is the shortest
# interval measured to be honoured within 5 ms here; below it a scheduler's slice is the
# same order as the interval.
SHORTEST_PROBE = 0.02


@dataclass(frozen=True)
class BackoffPolicy:
    """Pause between whole failed cycles: initial * multiplier**(n-1), capped, plus jitter."""

    initial: Annotated[float, Accepts(Form.DURATION, ge=SHORTEST, le=HOUR)] = 1.0
    maximum: Annotated[float, Accepts(Form.DURATION, ge=SHORTEST, le=DAY)] = 60.0
    multiplier: Annotated[float, Accepts(ge=1.0, le=10.0)] = 2.0
    # fraction of the delay added at most, spreads many connections apart
    jitter: Annotated[float, Accepts(ge=0.0, le=1.0)] = 0.2


@dataclass(frozen=True)
class FailbackPolicy:
    """Return to the primary gateway once it has answered probes for `hold_down` seconds."""

    enabled: Annotated[bool, Accepts(Form.FLAG)] = False
    probe_interval: Annotated[float, Accepts(Form.DURATION, ge=SHORTEST, le=HOUR)] = 10.0
    probe_timeout: Annotated[float, Accepts(Form.DURATION, ge=SHORTEST, le=10 * MINUTE)] = 5.0
    hold_down: Annotated[float, Accepts(Form.DURATION, ge=0, le=DAY)] = 30.0


@dataclass(frozen=True)
class MonitorPolicy:
    """Probe through the tunnel; `misses` unanswered probes in a row mean the gateway is dead.

    `probe`: "udp" (a datagram to a closed `port`; the ICMP port-unreachable answers) or
    "icmp" (an ICMP echo request; the echo reply answers, `port` unused)."""

    enabled: Annotated[bool, Accepts(Form.FLAG)] = False
    local: Annotated[str | None, Accepts(Form.ADDRESS)] = None
    remote: Annotated[str | None, Accepts(Form.ADDRESS)] = None
    port: Annotated[int, Accepts(ge=1, le=65535)] = 33434
    interval: Annotated[float, Accepts(Form.DURATION, ge=SHORTEST_PROBE, le=MINUTE)] = 0.5
    misses: Annotated[int, Accepts(ge=1, le=100)] = 3
    # probe from this network namespace (/run/netns/<name>)
    netns: Annotated[str | None, Accepts(Form.NETNS)] = None
    probe: Annotated[ProbeKind, Accepts(Form.CHOICE)] = "udp"


@dataclass(frozen=True)
class FailoverPolicy:
    """Everything that decides when a gateway counts as failed and what happens next."""

    connect_timeout: Annotated[float, Accepts(Form.DURATION, ge=SHORTEST, le=10 * MINUTE)] = 5.0
    # 0: wait for charon's own verdict
    dead_after_retransmits: Annotated[int, Accepts(ge=0, le=10)] = 1
    attempts_per_gateway: Annotated[int, Accepts(ge=1, le=100)] = 1
    # whole cycles through the list that may fail in a row; 0: never give up
    max_cycles: Annotated[int, Accepts(ge=0, le=1_000_000)] = 10
    # After a make-before-break switch (failback, operator), how long the old tunnel stays
    # for what is still on its way through it; 0: it goes as soon as the new one is up.
    switch_drain: Annotated[float, Accepts(Form.DURATION, ge=0, le=10 * MINUTE)] = 1.0
    # Route-based clones (the kernel's IPsec, XFRM): > 0 gives each clone its own XFRM
    # interface ID (if_id_in = if_id_out = this + the gateway's place in the list), so its
    # own policies: both tunnels of a switch take inbound during the drain, and the route
    # (charon's updown, extsock_py/data/xfrmi-updown.sh) moves outbound. 0: off, all
    # clones share one policy pair (whose inbound template follows the newest SA).
    clone_if_id_base: Annotated[int, Accepts(ge=0, le=2**31)] = 0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    failback: FailbackPolicy = field(default_factory=FailbackPolicy)
    monitor: MonitorPolicy = field(default_factory=MonitorPolicy)
    # Keep a childless IKE_SA up towards the next gateway (off: it is a second IKE_SA).
    standby: Annotated[bool, Accepts(Form.FLAG)] = False
    # "address": each clone's remote auth rounds expect the gateway's address as its id.
    remote_id: Annotated[RemoteIdKind, Accepts(Form.CHOICE)] = "configured"


def backoff_delay(policy: BackoffPolicy, failed_cycles: int, seed: str) -> float:
    """Seconds to wait after `failed_cycles` whole cycles failed (>= 1).

    The exponential part is capped at `maximum`; the jitter comes on top of it, so
    connections at the cap still spread over [maximum, maximum * (1 + jitter)].

    The jitter is drawn from a hash of `seed` and the cycle number rather than from a
    random source, so the state machine stays a pure function: connections with
    different names still spread apart, and a test can reproduce every delay.
    """
    try:
        grown = policy.initial * policy.multiplier ** (max(1, failed_cycles) - 1)
    except OverflowError:  # far past any cap
        grown = math.inf
    base = float(max(0.0, min(grown, policy.maximum)))
    digest = hashlib.blake2b(f"{seed}/{failed_cycles}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / float(1 << 64)
    return base + base * policy.jitter * fraction
