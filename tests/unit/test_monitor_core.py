"""The tunnel monitor's pure core, with a fake clock: times are plain numbers."""

from __future__ import annotations

from extsock_py.domain import monitor as m

INTERVAL, MISSES = 0.5, 3


def started(now: float = 0.0) -> m.MonitorState:
    state, actions = m.step(m.initial_state(INTERVAL, MISSES), m.Start(), now)
    assert actions == []
    return state


def run(
    state: m.MonitorState, until: float, answer: bool = False, step: float = 0.01
) -> tuple[m.MonitorState, list[tuple[float, m.Action]]]:
    """Tick every `step` up to `until`, sending the probes asked for (answered if `answer`)."""
    log: list[tuple[float, m.Action]] = []
    t = 0.0
    while t <= until + 1e-9:
        state, actions = m.step(state, m.Tick(), t)
        for action in actions:
            log.append((round(t, 3), action))
            if isinstance(action, m.SendProbe):
                state, _ = m.step(state, m.ProbeSent(), t)
                if answer:
                    state, _ = m.step(state, m.ReplySeen(), t + 0.001)
        t += step
    return state, log


def test_nothing_happens_before_start_or_after_stop() -> None:
    idle = m.initial_state(INTERVAL, MISSES)
    assert m.step(idle, m.Tick(), 100.0) == (idle, [])
    assert m.wake_at(idle) is None
    stopped, _ = m.step(started(), m.Stop(), 0.1)
    state, log = run(stopped, 5.0)
    assert log == [] and m.wake_at(state) is None


def test_probes_every_interval_and_dead_after_misses_times_interval_of_silence() -> None:
    state, log = run(started(), 3.0)
    probes = [t for t, a in log if isinstance(a, m.SendProbe)]
    dead = [(t, a) for t, a in log if isinstance(a, m.DeclareDead)]
    assert probes == [0.5, 1.0]
    assert len(dead) == 1
    t, action = dead[0]
    assert t == 1.5
    assert isinstance(action, m.DeclareDead)
    assert action.unanswered == 2 and abs(action.silence - 1.5) < 1e-9
    assert state.dead and not state.running and m.wake_at(state) is None


def test_answered_probes_never_declare_dead() -> None:
    state, log = run(started(), 30.0, answer=True)
    assert not any(isinstance(a, m.DeclareDead) for _, a in log)
    probes = [a for _, a in log if isinstance(a, m.SendProbe)]
    assert 55 <= len(probes) <= 60  # one per interval
    assert state.unanswered == 0 and state.running


def test_a_reply_resets_the_miss_count() -> None:
    state = started()
    state, _ = m.step(state, m.Tick(), 0.5)
    state, _ = m.step(state, m.ProbeSent(), 0.5)
    state, _ = m.step(state, m.Tick(), 1.0)
    state, _ = m.step(state, m.ProbeSent(), 1.0)
    assert state.unanswered == 2
    state, _ = m.step(state, m.ReplySeen(), 1.2)
    assert state.unanswered == 0 and state.replies_total == 1
    # The answer dates life to the probe it answers (sent at 1.0): dead at 1.0 + 1.5.
    assert state.last_life == 1.0
    for t in (1.5, 2.0):  # the probes that follow, on schedule, lost
        state, actions = m.step(state, m.Tick(), t)
        assert actions == [m.SendProbe()]
        state, _ = m.step(state, m.ProbeSent(), t)
    state, actions = m.step(state, m.Tick(), 2.49)
    assert actions == []
    state, actions = m.step(state, m.Tick(), 2.5)
    assert any(isinstance(a, m.DeclareDead) for a in actions)


def test_answers_do_not_shift_the_probe_schedule() -> None:
    state = started()
    sent = []
    for k in range(1, 21):
        t = k * 0.1
        state, actions = m.step(state, m.Tick(), t)
        if actions == [m.SendProbe()]:
            state, _ = m.step(state, m.ProbeSent(), t)
            sent.append(round(t, 3))
        state, _ = m.step(state, m.ReplySeen(), t + 0.05)  # noticed late: no matter
    assert sent == [0.5, 1.0, 1.5, 2.0]


def test_every_other_probe_answered_is_alive() -> None:
    """The remote's ICMP rate limit (about one answer a second) must not kill the tunnel."""
    state = started()
    t, answered = 0.0, 0
    for k in range(1, 60):
        t = k * INTERVAL
        state, actions = m.step(state, m.Tick(), t)
        assert not any(isinstance(a, m.DeclareDead) for a in actions), t
        if any(isinstance(a, m.SendProbe) for a in actions):
            state, _ = m.step(state, m.ProbeSent(), t)
            if k % 2 == 0:
                state, _ = m.step(state, m.ReplySeen(), t + 0.002)
                answered += 1
    assert answered > 20 and state.running


def test_growing_inbound_packets_are_life_and_no_probe_goes_out() -> None:
    state = started()
    count, probes = 100, 0
    state, _ = m.step(state, m.InboundPackets(count), 0.0)
    t = 0.0
    while t < 10.0:
        t = round(t + 0.1, 3)
        if m.look_due(state, t):  # the usecase reads the counter when the core asks
            count += 25
            state, _ = m.step(state, m.InboundPackets(count), t)
        state, actions = m.step(state, m.Tick(), t)
        assert not any(isinstance(a, m.DeclareDead) for a in actions)
        probes += sum(isinstance(a, m.SendProbe) for a in actions)
    assert probes == 0 and state.running


def test_probes_resume_when_traffic_stops() -> None:
    state = started()
    state, _ = m.step(state, m.InboundPackets(10), 0.4)
    state, _ = m.step(state, m.InboundPackets(20), 0.5)  # grew: life at 0.4, probe postponed
    state, actions = m.step(state, m.Tick(), 0.5)
    assert actions == [] and state.flowing and state.next_probe_at == 1.0
    assert m.wake_at(state) == 0.75 and m.look_due(state, 0.75)  # looks every half interval
    state, _ = m.step(state, m.InboundPackets(20), 0.75)  # flat: no life, no more quick looks
    assert not state.flowing and not m.look_due(state, 0.9)
    state, actions = m.step(state, m.Tick(), 1.0)
    assert actions == [m.SendProbe()]


def test_a_gateway_dying_under_load_is_detected_as_fast_as_an_idle_one() -> None:
    """Traffic until the failure at 10.0; the counter stops there; dead by 10.0 + 1.5."""
    state = started()
    count, t, dead_at = 0, 0.0, None
    while t < 20.0 and dead_at is None:
        t = round(t + 0.01, 3)
        if t < 10.0:
            count += 1  # 100 packets a second until the gateway dies
        if m.look_due(state, t):
            state, _ = m.step(state, m.InboundPackets(count), t)
        state, actions = m.step(state, m.Tick(), t)
        for action in actions:
            if isinstance(action, m.SendProbe):
                state, _ = m.step(state, m.ProbeSent(), t)
            if isinstance(action, m.DeclareDead):
                dead_at = t
    assert dead_at is not None and 10.0 + 1.0 <= dead_at <= 10.0 + 1.5


def test_a_smaller_counter_is_a_new_baseline_not_life() -> None:
    state = started()
    state, _ = m.step(state, m.InboundPackets(500), 0.1)
    state, _ = m.step(state, m.InboundPackets(3), 0.2)  # rekeyed CHILD_SA: counter restarted
    assert state.last_life == 0.0 and state.packets_in == 3
    state, _ = m.step(state, m.InboundPackets(4), 0.3)
    assert state.last_life == 0.2  # grown since the look at 0.2: alive at 0.2 at least


def test_start_resets_counters_for_a_new_tunnel() -> None:
    state, _ = run(started(), 3.0)
    assert state.dead
    state, _ = m.step(state, m.InboundPackets(77), 3.1)
    again, _ = m.step(state, m.Start(), 4.0)
    assert again.running and not again.dead
    assert again.unanswered == 0 and again.packets_in is None
    assert again.last_life == 4.0 and again.next_probe_at == 4.5
    assert again.probes_total == state.probes_total  # totals are kept for operators


def test_no_probes_and_no_verdict_while_down() -> None:
    state = started()
    state, _ = m.step(state, m.Stop(), 0.2)
    for event in (m.ReplySeen(), m.ProbeSent(), m.Tick(), m.InboundPackets(9)):
        state, actions = m.step(state, event, 5.0)
        assert actions == []
    assert not state.running and not state.dead


def test_wake_at_is_the_next_probe_or_the_dead_line() -> None:
    state = started(10.0)
    assert m.wake_at(state) == 10.5
    state, _ = m.step(state, m.Tick(), 10.5)
    assert m.wake_at(state) == 11.5  # a probe asked for, not yet sent: the dead-line
    state, _ = m.step(state, m.ProbeSent(), 10.5)
    assert m.wake_at(state) == 11.0


def test_the_probes_own_answers_in_the_counter_are_not_traffic() -> None:
    """Each answered probe adds one inbound packet: probes must keep their interval."""
    state = started()
    count, sent = 0, []
    for k in range(1, 41):
        t = k * 0.25
        if m.look_due(state, t):
            state, _ = m.step(state, m.InboundPackets(count), t)
        state, actions = m.step(state, m.Tick(), t)
        if m.SendProbe() in actions:
            state, _ = m.step(state, m.ProbeSent(), t)
            sent.append(t)
            count += 1  # its ICMP answer comes back through the CHILD_SA
            state, _ = m.step(state, m.ReplySeen(), t + 0.001)
    assert not state.flowing
    assert sent == [0.5 * k for k in range(1, 21)]


def test_an_unreadable_counter_stops_the_quick_looks() -> None:
    state = started()
    state, _ = m.step(state, m.InboundPackets(1), 0.1)
    state, _ = m.step(state, m.InboundPackets(9), 0.2)
    assert state.flowing and m.wake_at(state) == 0.45
    state, _ = m.step(state, m.InboundUnknown(), 0.45)
    assert not state.flowing and not m.look_due(state, 0.5)
    assert m.wake_at(state) == 0.7  # the postponed probe


# --- a stall of the monitor itself (the process not scheduled, the loop busy) -------------


def _probe(state: m.MonitorState, t: float) -> m.MonitorState:
    state, _ = m.step(state, m.ProbeSent(), t)
    return state


def test_a_stall_past_the_dead_line_holds_the_verdict_for_one_fresh_probe() -> None:
    state, _ = run(started(), 0.6, answer=True)  # steady: probes at 0.5 answered
    # The monitor does not run from 0.6 to 2.5: no probe out, the dead-line (2.0) passed.
    state, actions = m.step(state, m.Tick(), 2.5)
    assert actions == [m.SendProbe()] and state.stalls == 1 and state.running
    state = _probe(state, 2.5)
    state, _ = m.step(state, m.ReplySeen(), 2.51)  # the gateway was alive all along
    state, actions = m.step(state, m.Tick(), 2.6)
    assert actions == [] and state.running and not state.dead
    assert state.held_until is None  # life clears the hold


def test_after_a_stall_the_misses_count_from_its_end() -> None:
    """A silent gateway met by a stall: the count starts again when the monitor runs, and
    the verdict falls misses x interval after that, the probes on schedule meanwhile."""
    state, _ = run(started(), 0.6, answer=True)
    state, actions = m.step(state, m.Tick(), 2.5)
    assert actions == [m.SendProbe()] and state.stalls == 1
    state = _probe(state, 2.5)
    assert m.wake_at(state) == 3.0
    for t in (3.0, 3.5):
        state, actions = m.step(state, m.Tick(), t)
        assert actions == [m.SendProbe()]
        state = _probe(state, t)
    state, actions = m.step(state, m.Tick(), 3.99)
    assert actions == []
    state, actions = m.step(state, m.Tick(), 4.0)
    assert len(actions) == 1 and isinstance(actions[0], m.DeclareDead)
    assert state.dead and state.stalls == 1


def test_every_stall_discounts_its_window() -> None:
    """Stalled again (SIGSTOP twice, a long GC pause under load): that window's misses do not
    count either; no verdict until the monitor has run on time for misses x interval."""
    state, _ = run(started(), 0.6, answer=True)
    state, _ = m.step(state, m.Tick(), 2.5)
    state = _probe(state, 2.5)
    state, actions = m.step(state, m.Tick(), 5.0)  # stalled again past the held verdict
    assert actions == [m.SendProbe()] and state.stalls == 2 and state.running
    state = _probe(state, 5.0)
    state, _ = m.step(state, m.ReplySeen(), 5.02)  # the gateway was alive all along
    state, _ = run_from(state, 5.0, 20.0, answer=True)
    assert state.running and not state.dead and state.stalls == 2


def run_from(
    state: m.MonitorState, start: float, until: float, answer: bool, step: float = 0.01
) -> tuple[m.MonitorState, list[tuple[float, m.Action]]]:
    """As `run`, from `start`: a Tick every `step` (on time), answered probes if `answer`."""
    log: list[tuple[float, m.Action]] = []
    k = 0
    while start + k * step <= until + 1e-9:
        t = start + k * step
        state, actions = m.step(state, m.Tick(), t)
        for action in actions:
            log.append((round(t, 3), action))
            if isinstance(action, m.SendProbe):
                state = _probe(state, t)
                if answer:
                    state, _ = m.step(state, m.ReplySeen(), t + step / 2)
        k += 1
    return state, log


# --- BFD-class intervals (issue 28): 30 ms x 3 on the fake clock ----------------------------


def fast(now: float = 0.0) -> m.MonitorState:
    state, _ = m.step(m.initial_state(0.03, 3), m.Start(), now)
    return state


def test_at_30ms_a_timer_late_by_more_than_half_an_interval_is_a_stall() -> None:
    state = fast()
    assert m.stall_of(state, 0.03 + 0.014) is None  # 14 ms late: within the rule
    late = m.stall_of(state, 0.03 + 0.016)
    assert late is not None and abs(late - 0.016) < 1e-9
    state, actions = m.step(state, m.Tick(), 0.046)
    assert actions == [m.SendProbe()] and state.stalls == 1
    assert state.held_until is not None and abs(state.held_until - (0.046 + 0.09)) < 1e-9


def test_at_30ms_a_silent_gateway_is_dead_90ms_after_its_last_answer() -> None:
    """The timer on time (ticks at each wake-up, 2 ms late): no stall, dead at 3 x 30 ms."""
    state = fast()
    state = _probe(state, 0.0)
    state, _ = m.step(state, m.ReplySeen(), 0.004)  # life at 0.0
    t, dead_at = 0.0, None
    for _ in range(20):
        wake = m.wake_at(state)
        if wake is None:
            break
        t = wake + 0.002
        state, actions = m.step(state, m.Tick(), t)
        for action in actions:
            if isinstance(action, m.SendProbe):
                state = _probe(state, t)
            if isinstance(action, m.DeclareDead):
                dead_at = t
    assert dead_at is not None and abs(dead_at - 0.092) < 1e-9 and state.stalls == 0


def test_at_30ms_a_stall_of_extsock_with_the_gateway_alive_is_no_verdict() -> None:
    """SIGSTOP for 0.5 s: the answers to the probes sent before it wait in the socket and
    are read at once on waking (ReplySeen dates life to the last probe sent, long past the
    dead-line); the misses of the stall do not count, the fresh probe is answered."""
    state, _ = run_from(fast(), 0.0, 0.3, answer=True, step=0.005)
    state, _ = m.step(state, m.ReplySeen(), 0.8)  # drained first on waking
    state, actions = m.step(state, m.Tick(), 0.8)
    assert actions == [m.SendProbe()] and state.stalls == 1 and state.running
    state = _probe(state, 0.8)
    state, _ = m.step(state, m.ReplySeen(), 0.84)  # answered after 40 ms (> one interval)
    state, log = run_from(state, 0.8, 5.0, answer=True, step=0.005)
    assert not any(isinstance(a, m.DeclareDead) for _, a in log) and state.running


def test_at_30ms_the_old_rule_would_have_declared_after_a_stall() -> None:
    """The same stall, answer to the fresh probe 40 ms late: one interval's hold (the rule
    before issue 28) would have declared at 0.83; the window restarted holds to 0.89."""
    state, _ = run_from(fast(), 0.0, 0.3, answer=True, step=0.005)
    state, _ = m.step(state, m.Tick(), 0.8)
    state = _probe(state, 0.8)
    state, actions = m.step(state, m.Tick(), 0.831)
    assert actions == [m.SendProbe()]  # the schedule goes on; no verdict
    state = _probe(state, 0.831)
    state, _ = m.step(state, m.ReplySeen(), 0.84)
    assert state.running and state.last_life == 0.831


def test_ticks_on_schedule_are_no_stall_and_the_rule_is_unchanged() -> None:
    # Ticks only at the wake-ups (one per interval, a little late): no hold, dead at 1.5 s.
    state = started()
    t, log = 0.0, []
    for _ in range(10):
        wake = m.wake_at(state)
        if wake is None:
            break
        t = wake + 0.02  # the loop wakes a little late each time
        state, actions = m.step(state, m.Tick(), t)
        for action in actions:
            log.append((t, action))
            if isinstance(action, m.SendProbe):
                state = _probe(state, t)
    assert state.dead and state.stalls == 0
    assert isinstance(log[-1][1], m.DeclareDead) and abs(log[-1][0] - 1.52) < 1e-9


def test_a_late_first_tick_after_start_is_a_stall_too() -> None:
    state = started(0.0)
    state, actions = m.step(state, m.Tick(), 3.0)
    assert actions == [m.SendProbe()] and state.stalls == 1


def _traffic_then_quiet() -> m.MonitorState:
    """misses = 1: after traffic, the dead-line (life + 0.5) comes before the next probe is
    due (last look + 0.5), so no probe is out when it passes. Ticks on time (no stall)."""
    state, _ = m.step(m.initial_state(0.5, 1), m.Start(), 0.0)
    state, _ = m.step(state, m.InboundPackets(5), 0.1)
    state, _ = m.step(state, m.InboundPackets(9), 0.2)  # life dated to 0.1
    for t in (0.3, 0.45):
        state, actions = m.step(state, m.Tick(), t)
        assert actions == []
    return state


def test_no_verdict_while_no_probe_is_out_since_the_last_sign_of_life() -> None:
    state = _traffic_then_quiet()
    state, actions = m.step(state, m.Tick(), 0.6)
    assert actions == [m.SendProbe()] and state.unanswered == 0 and state.running
    state = _probe(state, 0.6)
    state, _ = m.step(state, m.ReplySeen(), 0.61)
    state, actions = m.step(state, m.Tick(), 1.1)
    assert not state.dead and not any(isinstance(a, m.DeclareDead) for a in actions)


def test_the_held_verdict_falls_when_that_probe_is_lost() -> None:
    state = _traffic_then_quiet()
    state, _ = m.step(state, m.Tick(), 0.6)
    state = _probe(state, 0.6)
    state, actions = m.step(state, m.Tick(), 1.1)
    assert len(actions) == 1 and isinstance(actions[0], m.DeclareDead)
    assert actions[0].unanswered == 1


def test_a_host_stall_reported_when_the_verdict_is_due_discounts_the_window() -> None:
    """The timer on time, the answers late because the path through this host stalled
    (charon waited for a CPU): HostStalled restarts the count like a stall of extsock."""
    state = fast()
    state = _probe(state, 0.0)
    state, _ = m.step(state, m.ReplySeen(), 0.002)
    for t in (0.03, 0.06):
        state, _ = m.step(state, m.Tick(), t)
        state = _probe(state, t)
    assert not m.verdict_due(state, 0.089) and m.verdict_due(state, 0.09)
    state, actions = m.step(state, m.HostStalled(), 0.09)
    assert actions == [m.SendProbe()] and state.stalls == 1
    state = _probe(state, 0.09)
    assert not m.verdict_due(state, 0.17) and m.verdict_due(state, 0.18)
    state, _ = m.step(state, m.ReplySeen(), 0.13)  # the late answers came
    assert state.running and state.last_life == 0.09 and state.unanswered == 0


def test_stalls_again_in_one_silence_lengthen_the_window_up_to_8_times() -> None:
    """Under stress-ng the path drains a backlog for a few hundred ms after a stall: each
    further stall in the same silence doubles the discounted window (90, 180, 360, 720,
    720 ms at 30 ms x 3); an answer starts over at one window."""
    state = fast()
    windows = []
    t = 0.0
    for _ in range(5):
        state, actions = m.step(state, m.HostStalled(), t)
        assert actions == [m.SendProbe()]
        held = state.held_until
        assert held is not None
        windows.append(round(held - t, 3))
        state = _probe(state, t)
        t = held
    assert windows == [0.09, 0.18, 0.36, 0.72, 0.72] and state.stalls == 5
    state, _ = m.step(state, m.ReplySeen(), t + 0.001)  # life
    state, _ = m.step(state, m.HostStalled(), t + 0.01)
    assert state.held_until is not None and abs(state.held_until - (t + 0.01 + 0.09)) < 1e-9


def test_a_quiet_host_keeps_the_plain_rule_no_doubling_without_stalls() -> None:
    state = fast()
    state = _probe(state, 0.0)
    state, _ = m.step(state, m.ReplySeen(), 0.001)
    for t in (0.03, 0.06):
        state, _ = m.step(state, m.Tick(), t)
        state = _probe(state, t)
    state, actions = m.step(state, m.Tick(), 0.09)
    assert isinstance(actions[0], m.DeclareDead) and state.discounted == 0
