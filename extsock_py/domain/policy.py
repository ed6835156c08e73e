"""Failover policy values: how fast to declare a gateway dead, how to retry, when to fail back."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Literal

ProbeKind = Literal["udp", "icmp"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("udp", "icmp")


@dataclass(frozen=True)
class BackoffPolicy:
    """Pause between whole failed cycles: initial * multiplier**(n-1), capped, plus jitter."""

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2  # fraction of the delay added at most, spreads many connections apart


@dataclass(frozen=True)
class FailbackPolicy:
    """Return to the primary gateway once it has answered probes for `hold_down` seconds."""

    enabled: bool = False
    probe_interval: float = 10.0
    probe_timeout: float = 5.0
    hold_down: float = 30.0


@dataclass(frozen=True)
class MonitorPolicy:
    """Probe through the tunnel; `misses` unanswered probes in a row mean the gateway is dead.

    `probe`: "udp" (a datagram to a closed `port`; the ICMP port-unreachable answers) or
    "icmp" (an ICMP echo request; the echo reply answers, `port` unused)."""

    enabled: bool = False
    local: str | None = None
    remote: str | None = None
    port: int = 33434
    interval: float = 0.5
    misses: int = 3
    netns: str | None = None  # probe from this network namespace (/run/netns/<name>)
    probe: ProbeKind = "udp"


@dataclass(frozen=True)
class FailoverPolicy:
    """Everything that decides when a gateway counts as failed and what happens next."""

    connect_timeout: float = 5.0
    dead_after_retransmits: int = 1  # 0: wait for charon's own verdict
    attempts_per_gateway: int = 1
    max_cycles: int = 10  # whole cycles through the list that may fail in a row; 0: never give up
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    failback: FailbackPolicy = field(default_factory=FailbackPolicy)
    monitor: MonitorPolicy = field(default_factory=MonitorPolicy)


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
