"""The bench's own pieces that need no lab: statistics, verdicts, report, replayed events."""

from __future__ import annotations

import json
from pathlib import Path

from extsock_py.bench import fig_events, report
from extsock_py.bench.cli import Plan
from extsock_py.bench.confgen import conn_addr, conn_name
from extsock_py.bench.record import DATA
from extsock_py.bench.stats import Figure, Summary, skipped
from extsock_py.bench.watch import EventWatch, summarise
from tests.fakes.fake_charon import FakeCharon


def test_summary_uses_nearest_rank_p95_and_ignores_missing() -> None:
    s = Summary.of([float(v) for v in range(1, 21)])
    assert (s.median, s.p95, s.min, s.max, s.n) == (10.5, 19.0, 1.0, 20.0, 20)
    assert Summary.of([]).n == 0 and Summary.of([]).median is None
    assert Summary.of([3.0, float("nan")]).n == 1


def test_figure_ratio_and_goals_both_ways() -> None:
    lower = Figure("x", "s", Summary.of([2.0]), Summary.of([1.0]), "ratio <= 1.5", goal_ratio=1.5)
    assert lower.ratio == 2.0 and not lower.met
    higher = Figure(
        "y", "ev/s", Summary.of([6000.0]), Summary.of([10000.0]), "", better="higher",
        goal_ratio=0.5, goal_value=5000.0,
    )  # fmt: skip
    assert higher.met
    gone = skipped("z", "s", "<= 1 s", "no lab")
    assert not gone.met and gone.to_dict()["skipped"] == "no lab"


def test_report_table_and_json(tmp_path: Path) -> None:
    fig = Figure("1 r", "ms", Summary.of([1.0, 2.0]), Summary.of([1.0]), "g", goal_ratio=2.0)
    assert "met" in report.table([fig])
    path = report.write([fig], {"mode": "test"}, tmp_path)
    doc = json.loads(path.read_text())
    row = doc["figures"][0]
    assert row["ratio"] == 1.5 and row["met"] is True and row["extsock"]["n"] == 2
    assert set(row["baseline"]) == {"median", "p95", "min", "max", "n"}


def test_plans() -> None:
    assert Plan.make(False, True, None).alone_cap == 0 and Plan.make(False, False, None).big_n
    assert Plan.make(True, False, 4).reaction == 4


def test_connection_names_and_addresses_are_distinct() -> None:
    assert conn_name(7) == "c007" and conn_addr(0) == "10.100.1.1"
    assert len({conn_addr(i) for i in range(1000)}) == 1000


def test_watch_summarises_updown_and_keeps_only_useful_logs() -> None:
    seen = summarise("child-updown", {"up": b"yes", "home@10.99.2.2": {}}, 1.0)
    assert seen is not None and seen.up and seen.conn == "home@10.99.2.2"
    assert summarise("log", {"msg": b"sending packet"}, 1.0) is None


def test_watch_counts_every_event_and_decodes_only_the_log_lines_it_keeps() -> None:
    """Over the real framing (fake charon): log lines the watch would drop are counted from
    their raw bytes, never decoded; the kept ones and every other event are recorded."""
    with FakeCharon() as charon, EventWatch(charon.path) as watch:
        assert charon.wait_registered("log")
        charon.emit_log("sending packet: from a to b", ike_name="c001@10.99.2.2", ike_id=1)
        charon.emit_log("x initiating IKE_SA", ike_name="c001@10.99.2.2", ike_id=1)
        charon.emit_log("initiating IKE_SA c001@10.99.2.2[1]", ike_name="c001@10.99.2.2")
        charon.emit_log("retransmit 1 of request with message ID 0", ike_name="c002@10.99.2.2")
        charon.emit("child-updown", {"up": b"yes", "c001@10.99.2.2": {"uniqueid": b"1"}})
        up = watch.wait_for(lambda s: s.kind == "child-updown", 5.0)
        assert up is not None and up.conn == "c001@10.99.2.2"
        assert watch.counts == {"log": 4, "child-updown": 1}
        assert [(s.kind, s.text.split()[0]) for s in watch.all(lambda s: s.kind == "log")] == [
            ("log", "initiating"),
            ("log", "retransmit"),
        ]


def test_recorded_events_replay_through_extsock_and_vici() -> None:
    assert json.loads(DATA.read_text())["strongswan"].startswith("5.9")
    fig = fig_events.measure(1, 300, lambda _: None)
    assert fig.extsock.n == 1 and fig.baseline.n == 1


def test_figures_2_and_3_per_release_side_by_side() -> None:
    from extsock_py.bench import fig_releases
    from extsock_py.bench.fig_detection import Durations

    runs = [
        fig_releases.ReleaseRun(
            "bookworm", "bookworm (5.9.8)", Durations([5.0, 5.2], [4.1, 4.2]), Durations([5.5])
        ),
        fig_releases.ReleaseRun(
            "sid", "sid (6.1.0)", Durations([4.8, 5.0], [4.0, 4.1]), "lab failed: boom"
        ),
    ]
    rows = fig_releases.figures(runs)
    assert [r.name.split(":")[0] for r in rows] == [
        "2r ini on bookworm (5.9.8)",
        "2r ini on sid (6.1.0)",
        "3r ini on bookworm (5.9.8)",
        "3r ini on sid (6.1.0)",
    ]
    sid2 = rows[1]
    assert sid2.extsock.median == 4.9 and sid2.baseline.median == 5.1  # against bookworm
    assert sid2.extra["silence_to_first_retransmit_s"]["median"] == 4.05
    assert rows[3].skipped == "lab failed: boom"
    plan = Plan.make(False, True, None, ("sid",), only_releases=True)
    assert plan.releases == ("sid",) and plan.only_releases


def test_a_full_run_reuses_figures_2_and_3_as_the_bookworm_rows() -> None:
    from extsock_py.bench import runs
    from extsock_py.bench.fig_detection import Durations
    from extsock_py.bench.stats import skipped

    two = runs._raw("2 detection", Durations([4.5], [4.4]))
    three = runs._raw("3 initial", "lab broke")
    host = runs._host_run([skipped("1 reaction", "ms", "", "x"), two, three])
    assert host.release == "bookworm" and host.label.startswith("bookworm (")
    assert isinstance(host.detection, Durations) and host.detection.total == [4.5]
    assert host.initial == "lab broke"


def test_icmp_window_figures_goal_zero_probe_rates_and_cpu() -> None:
    from extsock_py.bench.fig_icmp import WindowResult, window_figures, window_for

    assert window_for("full", None) == 600.0 and window_for("smoke", None) == 5.0
    assert window_for("quick (only icmp)", None) == 60.0 and window_for("full", 30.0) == 30.0
    idle = WindowResult("idle", seconds=10.0, failovers=0, echoes=330, cpu_pct=0.8)
    loaded = WindowResult("loaded", seconds=10.0, failovers=1, echoes=5, load_sent=200)
    rekey = WindowResult("rekey", seconds=10.0, failovers=0, ike_rekeys=2, child_rekeys=3)
    busy = WindowResult("busy", error="RuntimeError: stress-ng missing")
    figs = window_figures({"idle": idle, "loaded": loaded, "rekey": rekey, "busy": busy}, 10.0)
    idle_fig, loaded_fig, rekey_fig, busy_fig, rate, cpu = figs
    assert [f.name.split()[0] for f in figs] == ["2f", "2f", "2f", "2f", "2p", "2c"]
    assert "30ms x 3" in idle_fig.name and "rekeyed every 30s" in rekey_fig.name
    assert idle_fig.met and not loaded_fig.met  # one false failover misses the goal
    assert rekey_fig.met and "rekeys on ini: 2 IKE_SA, 3 CHILD_SA" in rekey_fig.notes
    assert busy_fig.skipped == busy.error and "stress-ng" in busy_fig.name
    assert rate.extsock.median == 0.5 and rate.baseline.median == 33.0
    assert cpu.met and cpu.extsock.median == 0.8
    over = window_figures(
        {"idle": WindowResult("idle", seconds=10.0, failovers=0, cpu_pct=1.5)}, 10.0
    )
    assert not over[-1].met  # 1.5 % of a core misses the 1 % goal
    none = window_figures({}, 10.0)
    assert all(f.skipped == "window not run" for f in none) and not any(f.met for f in none)


def test_icmp_standby_figure_2s_beside_2i() -> None:
    from extsock_py.bench.fig_detection import Durations
    from extsock_py.bench.fig_icmp import standby_figure

    fig = standby_figure(
        Durations(total=[0.1, 0.11, 0.13], noticed=[0.095, 0.1, 0.12]), Durations(total=[0.3])
    )
    assert fig.name.startswith("2s ") and fig.met and fig.extsock.median == 0.11
    assert fig.baseline.median == 0.3 and fig.extra["child_up_s"]["median"] == 0.1
    assert not standby_figure(Durations(total=[0.15]), None).met  # over 0.12 s
    assert standby_figure("2s failed: boom", "2i failed").skipped == "2s failed: boom"


def test_the_rekey_row_sets_rekey_time_on_the_ike_sa_and_the_child() -> None:
    from extsock_py.bench.fig_icmp import with_rekeys

    text = (
        "connections {\n    home {\n        version = 2\n        children {\n"
        "            net {\n                local_ts = x\n            }\n        }\n    }\n}\n"
    )
    out = with_rekeys(text)
    assert "    home {\n        rekey_time = 30s\n" in out
    assert "            net {\n                rekey_time = 30s\n" in out


def test_icmp_detection_figure_beside_2m_and_2() -> None:
    from extsock_py.bench.fig_detection import Durations
    from extsock_py.bench.fig_icmp import detection_figure

    fig = detection_figure(
        Durations(total=[0.3, 0.32, 0.4], noticed=[0.29, 0.31, 0.39]),
        Durations(total=[1.49, 1.5]),
        Durations(total=[4.49]),
    )
    assert (
        fig.met
        and fig.name.startswith("2i ")
        and round(fig.ratio or 0, 3) == round(0.32 / 1.495, 3)
    )
    assert fig.extra["child_up_s"]["median"] == 0.31 and fig.extra["figure_2_s"]["median"] == 4.49
    assert not detection_figure(Durations(total=[0.6]), None, None).met
    assert detection_figure("2i failed: boom", None, None).skipped == "2i failed: boom"
