"""The tunnel monitor of one managed connection: `step(state, event, now)`, no I/O, no clock.

A probe is a small UDP datagram sent through the CHILD_SA to a closed port of an address
inside the remote traffic selector; the ICMP port-unreachable (or any datagram) that comes
back is a sign of life. So is any growth of the CHILD_SA's inbound packet counter: real
traffic proves the tunnel as well as a probe, and while it flows no probe is sent.

The rule (BFD's detection time, RFC 5880 section 6.8.4, with `misses` as the detect
multiplier): the gateway is dead when nothing has come back for `misses * interval`.
Meanwhile a probe goes out every `interval` of silence, so `misses - 1` probes at least
have had an interval or more to be answered. Measured from the failure, detection takes
between `(misses - 1) * interval` and `misses * interval`; a rule that waited for
`misses` probes each given a full interval would take up to `(misses + 1) * interval`,
the first lost probe leaving up to an interval after the failure.

Life is dated to the earliest moment its evidence covers, so that noticing it late never
postpones the verdict:
- an answer dates life to when the latest probe went out (this assumes the round trip is
  shorter than the interval); probes keep their schedule, one every interval;
- growth of the inbound counter between two looks, beyond what the probes themselves
  may have brought back (one answer each: the counter minus the probes sent on this
  tunnel must grow), dates life to the earlier look, and postpones the next probe by an
  interval. Hence the back-off: while the counter grows
  between looks, no probe goes out at all. The counter is looked at just before a probe
  is due and, while traffic flows, every half interval (`look_due`), so that a gateway
  dying under load is noticed as fast as an idle one.

The rule assumes the probes went out on schedule and their answers were read. When the
monitor itself did not run on time, the silence it finds proves nothing about the gateway,
least of all at 30 ms intervals on a loaded host. It counts as a stall of extsock (SIGSTOP,
a long GC pause, the host's CPUs busy with other work) when a Tick comes
- more than `STALL_LATE` intervals after the moment it was due for (a probe due, the
  dead-line): the prober's own timer ran late, so the probes were not out on schedule or
  the answers that came back were not read when the verdict fell due; or
- more than `STALL_FACTOR` intervals after the previous one (the monitor did not run).
The misses of that window do not count: the count starts again at the end of the stall
(`held_until`: the dead-line is pushed to `misses * interval` after it; a fresh probe goes
out at once, and the schedule goes on from there). Each stall is such a restart (`stalls`
counts them), so the verdict needs `misses * interval` of silence measured while extsock
ran on time: a real failure met by a stall is declared at most that much after the stall
ends. A second stall in the same silence doubles that window, a third doubles it again (up
to 8 times, `MAX_DOUBLINGS`): seen in the lab under `stress-ng --cpu 2`, the path drains a
backlog for a few hundred ms after a stall. A host so starved that the monitor never runs
on time for that long gets no verdict from the monitor (charon's own DPD still applies),
and never a false one.
The same holds when the path through this host stalled rather than extsock: the caller
reports it as `HostStalled` (charon, which carries the probes through the tunnel on this
host, waited for a CPU for an interval or more while the answers were due); that window's
misses do not count either.
A verdict due with no probe out at all since the last sign of life (traffic held the
probes back, then a slow look at the counters let the dead-line pass) is held back once
per silence for one fresh probe and one interval: silence is only believed once a probe
has gone unanswered.

The monitor runs only while `Start` has armed it (the tunnel is up on the current gateway)
and stops on `Stop` or after `DeclareDead`, until the next `Start` (a new tunnel).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MonitorState:
    interval: float
    misses_allowed: int
    running: bool = False
    dead: bool = False
    last_life: float | None = None
    next_probe_at: float | None = None
    unanswered: int = 0  # probes sent since the last sign of life
    last_sent: float | None = None
    packets_in: int | None = None  # the inbound counter at the last look
    excess: int | None = None  # that counter minus the probes sent on this tunnel
    sent_on_tunnel: int = 0
    looked_at: float | None = None  # when that look was taken
    flowing: bool = False  # the last look found the counter grown
    probes_total: int = 0
    replies_total: int = 0
    last_tick: float | None = None  # when the monitor last ran (Start or Tick)
    held_until: float | None = None  # no verdict before this (a stall, or no probe out)
    unprobed_held: bool = False  # the hold for "no probe out" was used in this silence
    discounted: int = 0  # windows discounted in this silence (stalls): each hold is longer
    stalls: int = 0  # windows discounted so far (a stall of extsock, or no probe out)

    @property
    def dead_at(self) -> float | None:
        if not self.running or self.last_life is None:
            return None
        due = self.last_life + self.misses_allowed * self.interval
        return due if self.held_until is None else max(due, self.held_until)


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """A new tunnel is up on the current gateway: arm the monitor, counters reset."""


@dataclass(frozen=True)
class Stop:
    """The tunnel is no longer up (or no longer current): no probe until the next Start."""


@dataclass(frozen=True)
class ProbeSent:
    """A probe went out (or was attempted: a send the kernel refused is lost all the same)."""


@dataclass(frozen=True)
class ReplySeen:
    """An answer came back: ICMP port unreachable (ECONNREFUSED) or a datagram."""


@dataclass(frozen=True)
class InboundPackets:
    """The CHILD_SA's inbound packet counter (list-sas `packets-in`) read now."""

    count: int


@dataclass(frozen=True)
class InboundUnknown:
    """The counter could not be read: no quick looks until it can; the probes decide."""


@dataclass(frozen=True)
class Tick:
    """Time passed: a probe or the dead-line may be due."""


@dataclass(frozen=True)
class HostStalled:
    """The probes' path through this host stalled while the answers were due (the caller
    measured it: charon's threads waited for a CPU): that window's misses do not count."""


Event = Start | Stop | ProbeSent | ReplySeen | InboundPackets | InboundUnknown | Tick | HostStalled


# --- actions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SendProbe:
    """Send one probe now, then report ProbeSent."""


@dataclass(frozen=True)
class DeclareDead:
    """Nothing came back for misses * interval: the gateway is dead."""

    silence: float
    unanswered: int


Action = SendProbe | DeclareDead
Result = tuple[MonitorState, list[Action]]
STALL_FACTOR = 1.5  # a gap between two runs of the monitor longer than this many intervals
STALL_LATE = 0.5  # a Tick later than this many intervals after what it was due for
MAX_DOUBLINGS = 3  # stalls in one silence lengthen the discounted window up to 8 times


def initial_state(interval: float, misses: int) -> MonitorState:
    if interval <= 0 or misses < 1:
        raise ValueError("interval must be > 0 and misses >= 1")
    return MonitorState(interval=interval, misses_allowed=misses)


def wake_at(state: MonitorState) -> float | None:
    """The earliest time at which a Tick may change this state, or a look is due."""
    if not state.running:
        return None
    times = [t for t in (state.next_probe_at, state.dead_at, _next_look(state)) if t is not None]
    return min(times) if times else None


def timer_at(state: MonitorState) -> float | None:
    """The earliest time at which a Tick may send a probe or declare the gateway dead (the
    probe timer's wake-up; the looks at the counters are the caller's own schedule)."""
    if not state.running:
        return None
    times = [t for t in (state.next_probe_at, state.dead_at) if t is not None]
    return min(times) if times else None


def next_look(state: MonitorState) -> float | None:
    """While traffic flows, when the counters should be looked at again."""
    return _next_look(state)


def _next_look(state: MonitorState) -> float | None:
    if state.flowing and state.looked_at is not None:
        return state.looked_at + state.interval / 2
    return None


def look_due(state: MonitorState, now: float) -> bool:
    """Whether the inbound counter should be read now (then fed as InboundPackets)."""
    if not state.running:
        return False
    look = _next_look(state)
    return probe_due(state, now) or (look is not None and now >= look)


def probe_due(state: MonitorState, now: float) -> bool:
    """Whether a Tick now would send a probe: the moment to look at the inbound counter first."""
    return (
        state.running
        and state.next_probe_at is not None
        and now >= state.next_probe_at
        and not _silent_too_long(state, now)
    )


def _silent_too_long(state: MonitorState, now: float) -> bool:
    dead_at = state.dead_at
    return dead_at is not None and now >= dead_at


def _life(state: MonitorState, now: float) -> MonitorState:
    return replace(
        state,
        last_life=now,
        next_probe_at=now + state.interval,
        unanswered=0,
        held_until=None,
        unprobed_held=False,
        discounted=0,
    )


def _answered(state: MonitorState, now: float) -> MonitorState:
    when = state.last_sent if state.unanswered and state.last_sent is not None else now
    last = max(when, state.last_life) if state.last_life is not None else when
    return replace(
        state,
        last_life=last,
        unanswered=0,
        replies_total=state.replies_total + 1,
        held_until=None,
        unprobed_held=False,
        discounted=0,
    )


def step(state: MonitorState, event: Event, now: float) -> Result:
    """Apply one event at time `now`; return the new state and the actions to carry out."""
    match event:
        case Start():
            fresh = replace(
                initial_state(state.interval, state.misses_allowed),
                running=True,
                probes_total=state.probes_total,
                replies_total=state.replies_total,
                stalls=state.stalls,
                last_tick=now,
            )
            return _life(fresh, now), []
        case Stop():
            return replace(state, running=False, next_probe_at=None, unanswered=0), []
        case _ if not state.running:
            if isinstance(event, InboundPackets):
                return replace(state, packets_in=event.count), []
            return state, []
        case ReplySeen():
            return _answered(state, now), []
        case InboundPackets(count):
            before, since = state.excess, state.looked_at
            excess = count - state.sent_on_tunnel
            counted = replace(state, packets_in=count, excess=excess, looked_at=now, flowing=False)
            if before is None or since is None or excess <= before:
                return counted, []  # first look, no traffic, or a new CHILD_SA (rekey)
            last = since if state.last_life is None else max(since, state.last_life)
            grown = replace(
                counted,
                flowing=True,
                last_life=last,
                unanswered=0,
                next_probe_at=now + state.interval,
                held_until=None,
                unprobed_held=False,
                discounted=0,
            )
            return grown, []
        case InboundUnknown():
            return replace(state, flowing=False), []
        case ProbeSent():
            return replace(
                state,
                unanswered=state.unanswered + 1,
                probes_total=state.probes_total + 1,
                sent_on_tunnel=state.sent_on_tunnel + 1,
                last_sent=now,
                next_probe_at=now + state.interval,
            ), []
        case Tick():
            return _tick(state, now)
        case HostStalled():
            return _discount(replace(state, last_tick=now), now)
    return state, []


def verdict_due(state: MonitorState, now: float) -> bool:
    """Whether a Tick now would find the silence long enough for a verdict (the moment for
    the caller to check whether the host stalled meanwhile)."""
    return state.running and _silent_too_long(state, now)


def _discount(state: MonitorState, now: float) -> Result:
    """The misses so far do not count: the count starts again now, with a fresh probe. A
    stall met again in the same silence is a host whose path drains a backlog after it:
    each further window is twice as long, up to 2**MAX_DOUBLINGS times."""
    window = state.misses_allowed * state.interval * 2 ** min(state.discounted, MAX_DOUBLINGS)
    held = replace(
        state,
        held_until=now + window,
        stalls=state.stalls + 1,
        discounted=state.discounted + 1,
        next_probe_at=None,
    )
    return held, [SendProbe()]


def stall_of(state: MonitorState, now: float) -> float | None:
    """How long the monitor was stalled if a Tick at `now` finds it was (see the module
    docstring), else None: the lateness past what the Tick was due for, or the gap since
    the previous Tick."""
    if not state.running:
        return None
    due = [t for t in (state.next_probe_at, state.dead_at) if t is not None and t <= now]
    late = now - min(due) if due else 0.0
    if late > STALL_LATE * state.interval:
        return late
    gap = now - state.last_tick if state.last_tick is not None else 0.0
    return gap if gap > STALL_FACTOR * state.interval else None


def _tick(state: MonitorState, now: float) -> Result:
    stalled = stall_of(state, now) is not None
    state = replace(state, last_tick=now)
    if stalled and (_silent_too_long(state, now) or probe_due(state, now)):
        # Extsock did not run on time: the misses of that window do not count. The count
        # starts again now, with a fresh probe at once.
        return _discount(state, now)
    unprobed = state.unanswered == 0  # no probe out since the last sign of life
    if _silent_too_long(state, now) and unprobed and not state.unprobed_held:
        # Our own probes were not out: one fresh probe, an interval to answer it.
        held = replace(
            state,
            held_until=now + state.interval,
            unprobed_held=True,
            stalls=state.stalls + 1,
            next_probe_at=None,
        )
        return held, [SendProbe()]
    if _silent_too_long(state, now):
        assert state.last_life is not None
        dead = replace(state, running=False, dead=True, next_probe_at=None)
        return dead, [DeclareDead(silence=now - state.last_life, unanswered=state.unanswered)]
    if probe_due(state, now):
        # Not due again until ProbeSent re-arms it: a probe that cannot go out is not retried
        # in a loop; the dead-line still comes.
        return replace(state, next_probe_at=None), [SendProbe()]
    return state, []
