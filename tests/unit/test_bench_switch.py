"""Figure 7 (switches and failbacks with a 200/s UDP stream): counting, per switch, goals."""

from __future__ import annotations

from extsock_py.bench.fig_switch import Trial, _count, figures
from extsock_py.lab.seqstream import StreamResult


def stream(lost_out: set[int], lost_back: set[int]) -> StreamResult:
    """10 s at 10 datagrams/s; each answer 50 ms after it reached the far end."""
    r = StreamResult()
    for seq in range(100):
        at = seq * 0.1
        r.sent[seq] = at
        if seq not in lost_out:
            r.far[seq] = ("segw1", at + 0.001)
            if seq not in lost_back:
                r.back[seq] = ("segw1", at + 0.051)
    return r


def test_losses_each_way_go_to_the_nearest_switch_and_gaps_per_switch() -> None:
    t = _count(stream({21}, {22, 23, 71}), [2.0, 7.0], drained=False)
    assert (t.sent, t.lost_out, t.lost_back, t.per_switch) == (100, 1, 3, [3, 1])
    assert [round(g, 3) for g in t.gaps_out] == [0.2, 0.1]  # 20 -> 22 at the far end
    assert [round(g, 3) for g in t.gaps_back] == [0.4, 0.2]  # 20 -> 24; 70 -> 72


def test_the_goal_is_zero_in_every_trial() -> None:
    clean = Trial(True, 0, 0, 100, [0, 0], [0.01], [0.01])
    lossy = Trial(False, 0, 9, 100, [5, 4], [0.01], [0.06])
    lost, gap = figures([clean, lossy, clean], [], 10)
    assert lost.met and lost.extsock.max == 0 and lost.baseline.median == 9
    assert lost.name.startswith("7 switch and failback") and "10 switches" in lost.name
    assert [t["side"] for t in lost.extra["trials"]] == ["extsock", "baseline", "extsock"]
    assert gap.extsock.median == 10.0 and gap.extra["back_ms"]["baseline"]["median"] == 60.0
    one_lost = Trial(True, 1, 0, 100, [1, 0], [0.01], [0.01])
    assert not figures([clean, lossy, one_lost], [], 10)[0].met
    assert figures([], ["broken"], 10)[0].skipped == "broken"
