"""The pure parts of the chaos run (extsock_py/lab/chaos): the seeded schedule, the invariant
checks on synthetic observations, the summary, the timeline. No lab, no sleeping."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from extsock_py.lab.chaos import invariants, schedule, setup, summary
from extsock_py.lab.chaos.observations import (
    Answers,
    ConnSample,
    FaultRun,
    HistoryEntry,
    RunRecord,
    Sample,
)

CONNS = ("upa", "upb")
GW1, GW2 = "10.99.1.2", "10.99.2.2"


def steady_answers(end: float, holes: Sequence[tuple[float, float]] = (), step: float = 0.1,
                   gw: str = "segw1") -> Answers:  # fmt: skip
    """Answers every `step` s through both connections but inside `holes` (start, end)."""
    answers = Answers()
    for k in range(int(end / step) + 1):
        t = round(k * step, 3)
        if any(a <= t < b for a, b in holes):
            continue
        for conn in CONNS:
            answers.note(conn, t, gw)
    return answers


def samples(end: float, every: float = 0.5, **overrides: object) -> list[Sample]:
    out = []
    for k in range(int(end / every) + 1):
        t = k * every
        conns = {c: ConnSample("up", GW1, 1, (GW1,), 1) for c in CONNS}
        fields: dict[str, object] = {"status_s": 0.01, "pid": 100, "rss_kib": 30000, "fds": 20,
                                     "threads": 5}  # fmt: skip
        fields.update(overrides)
        out.append(Sample(t, conns, **fields))  # type: ignore[arg-type]
    return out


def record(
    end: float = 200.0,
    *,
    the_samples: Sequence[Sample] | None = None,
    faults: Sequence[FaultRun] = (),
    answers: Answers | None = None,
    history: Sequence[HistoryEntry] = (),
) -> RunRecord:
    return RunRecord(
        seed=1,
        duration=end,
        conns=CONNS,
        drain=1.0,
        samples=list(the_samples if the_samples is not None else samples(end)),
        faults=list(faults),
        answers=answers if answers is not None else steady_answers(end),
        history=list(history),
    )


def with_conn(samples_: list[Sample], start: float, stop: float, conn: str,
              cs: ConnSample) -> list[Sample]:  # fmt: skip
    return [
        Sample(s.t, {**s.conns, conn: cs}, status_s=s.status_s, pid=s.pid, rss_kib=s.rss_kib,
               fds=s.fds, threads=s.threads) if start <= s.t < stop else s
        for s in samples_
    ]  # fmt: skip


# ---------------------------------------------------------------------- the schedule


def test_the_same_seed_gives_the_same_schedule() -> None:
    a = schedule.generate(42, 600, 10)
    b = schedule.generate(42, 600, 10)
    assert a == b
    assert a.lines() == b.lines()
    assert schedule.generate(43, 600, 10).faults != a.faults


def test_a_long_schedule_has_every_kind_and_its_times_stay_inside_the_run() -> None:
    plan = schedule.generate(5, 3600, 10)
    assert {f.kind for f in plan.faults} == set(schedule.KINDS)
    ats = [f.at for f in plan.faults]
    assert ats == sorted(ats)
    assert ats[0] >= 20.0
    assert plan.last_fault_end <= 3600 - 60 - 5
    assert 3600 / 10 * 0.7 < len(plan.faults) < 3600 / 10 * 1.1


@pytest.mark.parametrize("seed", range(20))
def test_at_most_one_gateway_down_and_nothing_for_extsock_while_it_is_stalled(seed: int) -> None:
    plan = schedule.generate(seed, 1200, 6)
    down_until = -1.0
    stalled_until = -1.0
    for fault in plan.faults:
        if fault.kind in schedule.GATEWAY_DOWN:
            assert fault.at >= down_until, fault.line()
            down_until = fault.at + fault.lasts + schedule.GATEWAY_GAP
            assert schedule.LINK_HEAL[0] <= fault.lasts <= schedule.LINK_HEAL[1] or (
                fault.kind == "gateway-restart"
            )
        if fault.kind in schedule.NEEDS_EXTSOCK:
            assert fault.at >= stalled_until, fault.line()
        if fault.kind == "stall":
            assert schedule.STALL[0] <= fault.lasts <= schedule.STALL[1]
            stalled_until = fault.at + fault.lasts


def test_the_schedule_refuses_values_that_make_none() -> None:
    with pytest.raises(ValueError, match="fault_every"):
        schedule.generate(1, 600, 0)
    with pytest.raises(ValueError, match="kinds"):
        schedule.generate(1, 600, 10, kinds=())
    assert schedule.generate(1, 60, 10).faults == ()  # too short for any fault: all quiet


# ---------------------------------------------------------------------- observations


def test_answers_keep_one_mark_per_resolution_and_find_the_first_after() -> None:
    answers = Answers(resolution=0.05)
    for t in (1.0, 1.01, 1.02, 1.06, 3.0):
        answers.note("upa", t, "segw1")
    answers.note("upa", 3.01, "segw2")  # another gateway is always kept
    assert answers.times["upa"] == [1.0, 1.06, 3.0, 3.01]
    assert answers.first_after("upa", 1.06) == 3.0
    assert answers.first_after("upa", 4.0) is None
    assert answers.gaps("upa", 0.9, 0.0, 10.0) == [(0.0, 1.0), (1.06, 3.0), (3.01, 10.0)]
    assert answers.gaps("upa", 1.0, 0.0, 10.0) == [(1.06, 3.0), (3.01, 10.0)]


# ---------------------------------------------------------------------- invariants


def test_i1_two_installed_child_sas_past_the_drain_and_three_seconds() -> None:
    two = ConnSample("up", GW2, 2, (GW1, GW2), 2)
    # seen at 10.0 ... 14.0: at most 4.5 s, at least 4 s: not proven longer than drain + 3
    short = with_conn(samples(100), 10.0, 14.5, "upa", two)
    assert invariants.check_i1(record(100, the_samples=short)) == []
    longer = with_conn(samples(100), 10.0, 15.0, "upa", two)  # seen 10.0 ... 14.5
    assert len(invariants.check_i1(record(100, the_samples=longer))) == 1
    long = with_conn(samples(100), 10.0, 20.0, "upb", two)
    found = invariants.check_i1(record(100, the_samples=long))
    assert [(v.invariant, v.t) for v in found] == [("I1", 10.0)]
    assert "upb: 2 installed CHILD_SAs for 9.5 s" in found[0].what
    assert "10.99.1.2, 10.99.2.2" in found[0].what


def test_i1_unknown_samples_neither_start_nor_end_an_interval() -> None:
    two = ConnSample("up", GW2, 2, (GW1, GW2), 2)
    unknown = ConnSample(None, None, -1, (), -1)
    s = with_conn(samples(100), 10.0, 12.0, "upa", two)
    s = with_conn(s, 12.0, 16.0, "upa", unknown)  # charon restarting
    s = with_conn(s, 16.0, 17.0, "upa", two)
    assert len(invariants.check_i1(record(100, the_samples=s))) == 1


def test_i2_traffic_back_within_the_bound_of_the_fault_kind() -> None:
    cut = FaultRun(50.0, "link-cut", 50.0, 60.0, "upa on segw1")
    ok = record(200, faults=[cut], answers=steady_answers(200, [(50.0, 60.0)]))
    assert invariants.check_i2(ok) == []
    late = record(200, faults=[cut], answers=steady_answers(200, [(50.0, 70.0)]))
    found = invariants.check_i2(late)
    assert {v.what.split(":")[0] for v in found} == {"upa", "upb"}
    assert "traffic after 20.0 s after link-cut" in found[0].what
    assert "bound 15 s" in found[0].what


def test_i2_a_later_fault_before_the_recovery_carries_the_deadline_on() -> None:
    cut = FaultRun(50.0, "link-cut", 50.0, 60.0, "upa on segw1")
    ini = FaultRun(58.0, "ini-restart", 58.0, 59.0, "")
    answers = steady_answers(200, [(50.0, 75.0)])  # back 25 s after the cut, 17 after ini's
    assert invariants.check_i2(record(200, faults=[cut, ini], answers=answers)) == []
    alone = invariants.check_i2(record(200, faults=[cut], answers=answers))
    assert len(alone) == 2


def test_i2_ignores_a_fault_that_was_not_applied() -> None:
    failed = FaultRun(50.0, "switch", 50.0, 50.0, "upa", error="no healthy gateway")
    answers = steady_answers(200, [(50.0, 100.0)])
    assert invariants.check_i2(record(200, faults=[failed], answers=answers)) == []


def test_i3_status_must_answer_outside_a_stall_and_a_kill() -> None:
    s = samples(10)
    s[3] = Sample(s[3].t, s[3].conns, status_s=None, status_error="TimeoutError")
    s[4] = Sample(s[4].t, s[4].conns, status_s=2.5)
    s[5] = Sample(s[5].t, s[5].conns, stalled=True, status_s=None)
    s[6] = Sample(s[6].t, s[6].conns, expected_down=True, status_s=None)
    r = RunRecord(1, 10, CONNS, 1.0, s, [], steady_answers(10), [],
                  unexpected_exits=[(7.0, "exit code 1")])  # fmt: skip
    found = invariants.check_i3(r)
    assert [v.t for v in found] == [7.0, 1.5, 2.0]
    assert "no answer (TimeoutError)" in found[1].what
    assert "2.50 s" in found[2].what


def test_i4_rss_fds_threads_and_clones() -> None:
    flat = samples(300)
    assert invariants.check_i4(record(300, the_samples=flat)) == []
    growing = [
        Sample(s.t, s.conns, status_s=0.01, pid=100, rss_kib=30000 + int(s.t * 20),
               fds=20 + (s.t > 250), threads=5)
        for s in flat
    ]  # fmt: skip
    found = invariants.check_i4(record(300, the_samples=growing))
    whats = " | ".join(v.what for v in found)
    assert "RSS" in whats and "fds grew 20 -> 21" in whats and "threads" not in whats
    three = with_conn(flat, 100.0, 102.0, "upa", ConnSample("up", GW1, 1, (GW1,), 3))
    found = invariants.check_i4(record(300, the_samples=three))
    assert [(v.t, v.what) for v in found] == [(100.0, "upa: 3 clones loaded in charon")]


def test_i4_judges_each_extsock_process_on_its_own() -> None:
    # a restarted extsock is smaller at first: no growth is read across processes
    s = [
        Sample(x.t, x.conns, pid=100 if x.t < 150 else 200,
               rss_kib=40000 if x.t < 150 else 25000 + int(x.t), fds=20, threads=5)
        for x in samples(300)
    ]  # fmt: skip
    assert invariants.check_i4(record(300, the_samples=s)) == []


def test_i5_quiet_window_after_the_last_fault_and_its_recovery() -> None:
    cut = FaultRun(50.0, "link-cut", 50.0, 60.0, "upa on segw1")
    answers = steady_answers(200, [(50.0, 53.0)])
    entry = HistoryEntry(53.0, "upa", GW1, GW2, "retransmit", "up")
    # the heal at 60 s plus the bound of a link-cut (15 s): what it moves may move until then
    assert invariants.quiet_start(record(200, faults=[cut], answers=answers)) == 75.0
    ok = record(200, faults=[cut], answers=answers, history=[entry])
    assert invariants.check_i5(ok) == []
    late = HistoryEntry(150.0, "upb", GW1, GW2, "retransmit", "up")
    found = invariants.check_i5(record(200, faults=[cut], answers=answers, history=[entry, late]))
    assert [(v.invariant, v.t) for v in found] == [("I5", 150.0)]
    moved = with_conn(samples(200), 150.0, 201.0, "upa", ConnSample("up", GW2, 1, (GW2,), 1))
    found = invariants.check_i5(record(200, the_samples=moved, faults=[cut], answers=answers))
    assert "upa: moved 10.99.1.2 -> 10.99.2.2" in found[0].what
    short = invariants.check_i5(record(100, faults=[cut], answers=answers))
    assert "quiet window lasted 25.0 s only" in short[0].what


def test_i6_history_and_outages_need_a_fault_and_a_fault_that_took_a_tunnel_down_a_sequel() -> None:
    cut = FaultRun(50.0, "link-cut", 50.0, 60.0, "upa on segw1")
    answers = steady_answers(300, [(50.0, 53.0)])
    explained = HistoryEntry(53.0, "upa", GW1, GW2, "retransmit", "up")
    stray = HistoryEntry(120.0, "upb", GW1, GW2, "connect-timeout", "up")
    found = invariants.check_i6(record(300, faults=[cut], answers=answers,
                                       history=[explained, stray]))  # fmt: skip
    assert [(v.t, v.what.split(":")[0]) for v in found] == [(120.0, "upb")]
    outage = steady_answers(300, [(50.0, 53.0), (150.0, 155.0)])
    found = invariants.check_i6(record(300, faults=[cut], answers=outage, history=[explained]))
    assert len(found) == 2 and all("no fault explains it" in v.what for v in found)
    dead = steady_answers(300, [(50.0, 301.0)])
    found = invariants.check_i6(record(300, faults=[cut], answers=dead, history=[]))
    assert any("neither a failover nor traffic" in v.what for v in found)


def test_check_all_is_sorted_by_time() -> None:
    two = ConnSample("up", GW2, 2, (GW1, GW2), 2)
    s = with_conn(samples(200), 100.0, 110.0, "upa", two)
    stray = HistoryEntry(20.0, "upb", GW1, GW2, "lost", "up")
    found = invariants.check_all(record(200, the_samples=s, history=[stray]))
    # no fault at all: the stray entry (I6, and I5: the whole run is quiet), the two CHILD_SAs
    # (I1) and the moves to segw2 and back (I5)
    assert {v.invariant for v in found} == {"I1", "I5", "I6"}
    assert [v.t for v in found if v.invariant == "I5"] == [20.0, 100.0, 110.0]
    assert [v.t for v in found] == sorted(v.t for v in found)


# ---------------------------------------------------------------------- summary, timeline


def test_summary_counts_faults_recoveries_and_violations() -> None:
    faults = [
        FaultRun(50.0, "link-cut", 50.0, 60.0, "upa on segw1"),
        FaultRun(80.0, "link-cut", 80.0, 85.0, "upb on segw2"),
        FaultRun(100.0, "switch", 100.0, 100.0, "upa", error="no healthy gateway"),
    ]
    answers = steady_answers(300, [(50.0, 53.0), (80.0, 84.0)])
    r = record(300, faults=faults, answers=answers,
               history=[HistoryEntry(53.0, "upa", GW1, GW2, "retransmit", "up")])  # fmt: skip
    text = summary.lines(r, invariants.check_all(r))
    row = next(line for line in text if line.startswith("link-cut"))
    assert row.split()[:6] == ["link-cut", "2", "0", "3.50", "4.00", "4.00"]
    assert any(line.startswith("switch") and line.split()[1:3] == ["0", "1"] for line in text)
    assert "history entries: 1 (retransmit/up 1)" in text
    assert any(line.startswith("violations: I1 0, I2 0, I3 0, I4 0, I5 0") for line in text)
    assert "I4: 1 extsock process(es) lived past the warm-up + 20 s:" in text
    assert any(
        line.startswith("  pid 100 60-300 s: RSS 30000 -> 30000 KiB (+0.0 %)") for line in text
    )
    assert summary.p95([float(k) for k in range(1, 101)]) == 95.0
    assert summary.p95([3.0]) == 3.0


def test_timeline_is_a_small_png(tmp_path: Path) -> None:
    from extsock_py.lab.chaos import timeline

    faults = [FaultRun(50.0, "link-cut", 50.0, 60.0, "upa on segw1")]
    r = record(600, faults=faults, answers=steady_answers(600, [(50.0, 53.0)]))
    path = timeline.draw(r, invariants.check_all(r), tmp_path / "t.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 300_000


# ---------------------------------------------------------------------- the lab's config


def test_the_chaos_config_has_two_managed_connections_equal_but_for_their_children() -> None:
    text = setup.swanctl_conf([GW1, GW2, "10.99.3.2"], "secrets {\n    ike-lab {\n    }\n}\n")
    changed = setup.swanctl_conf([GW1, GW2, "10.99.3.2"], "secrets {\n}\n", changed=True)
    assert text.count("remote_addrs = 10.99.1.2, 10.99.2.2, 10.99.3.2") == 2
    assert "rekey_time = 40s" in text and "rekey_time = 20s" in text and "life_time = 30s" in text
    assert "connect_timeout = 5s" in text and "connect_timeout = 6s" in changed
    assert "rekey_time = 22s" in changed and "rekey_time = 22s" not in text


def test_a_record_survives_its_json(tmp_path: Path) -> None:
    import dataclasses
    import json

    from extsock_py.lab.chaos.cli import main
    from extsock_py.lab.chaos.observations import record_from_json

    faults = [FaultRun(50.0, "link-cut", 50.0, 60.0, "upa on segw1")]
    r = record(300, faults=faults, answers=steady_answers(300, [(50.0, 53.0)]),
               history=[HistoryEntry(53.0, "upa", GW1, GW2, "retransmit", "up")])  # fmt: skip
    text = json.dumps(dataclasses.asdict(r), default=list)
    again = record_from_json(json.loads(text))
    assert again == dataclasses.replace(r, unexpected_exits=[])  # a tuple comes back a list
    (tmp_path / "record.json").write_text(text)
    assert main(["--check", str(tmp_path)]) == 0
    assert "violations: I1 0" in (tmp_path / "summary.txt").read_text()
    assert (tmp_path / "timeline.png").stat().st_size > 1000
