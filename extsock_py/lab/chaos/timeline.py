"""The timeline PNG of a chaos run (matplotlib, no display): one lane per connection, coloured
by the gateway its traffic was answered through and red where nothing was answered; the faults
as marks above; extsock's RSS and open fds beneath."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from extsock_py.lab.chaos.observations import RunRecord, Violation
from extsock_py.lab.chaos.schedule import KINDS

GAP = 0.5  # s without an answer drawn as down
GATEWAY_COLOURS = ("tab:blue", "tab:orange", "tab:green")
KIND_MARKERS = dict(zip(KINDS, "v^sDo*Px<", strict=True))


def _segments(record: RunRecord, conn: str, end: float) -> list[tuple[float, float, str]]:
    """(start, end, gateway or '' for down) runs of a connection's answers."""
    times = record.answers.times.get(conn, [])
    gws = record.answers.gateways.get(conn, [])
    out: list[tuple[float, float, str]] = []
    last_t = record.samples[0].t if record.samples else 0.0
    for t, gw in zip(times, gws, strict=True):
        kind = "" if t - last_t > GAP else gw
        if out and out[-1][2] == kind:
            out[-1] = (out[-1][0], t, kind)
        else:
            out.append((last_t, t, kind))
        if kind == "":
            out.append((t, t, gw))
        last_t = t
    if end - last_t > GAP:
        out.append((last_t, end, ""))
    return [s for s in out if s[1] > s[0]]


def draw(record: RunRecord, violations: list[Violation], path: Path) -> Path:
    end = record.samples[-1].t if record.samples else record.duration
    conns = list(record.conns)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 2.2 + 0.8 * len(conns)), sharex=True,
        gridspec_kw={"height_ratios": [1 + 0.5 * len(conns), 1]},
    )  # fmt: skip
    gw_names = sorted(set(record.gateway_names.values()))
    colour = {gw: GATEWAY_COLOURS[k % len(GATEWAY_COLOURS)] for k, gw in enumerate(gw_names)}
    for lane, conn in enumerate(conns):
        for a, b, gw in _segments(record, conn, end):
            top.broken_barh([(a, b - a)], (lane - 0.35, 0.7),
                            facecolors=colour.get(gw, "tab:red") if gw else "tab:red")  # fmt: skip
        doubled = [(x.t, 0.5) for x in record.samples
                   if (cs := x.conns.get(conn)) is not None and cs.installed > 1]  # fmt: skip
        top.broken_barh(doubled, (lane - 0.5, 0.12), facecolors="black")
    for fault in record.faults:
        y = len(conns) - 0.2
        top.plot([fault.at], [y], KIND_MARKERS[fault.kind], color="black" if not fault.error
                 else "grey", markersize=5)  # fmt: skip
        if fault.end > fault.at + 0.5:
            top.plot([fault.at, fault.end], [y, y], color="black", linewidth=0.8)
    for v in violations:
        top.axvline(v.t, color="tab:red", linewidth=0.6, alpha=0.6)
    top.set_yticks([*range(len(conns)), len(conns) - 0.2], [*conns, "faults"])
    top.set_ylim(-0.6, len(conns) + 0.3)
    handles: list[Artist] = [Rectangle((0, 0), 1, 1, color=colour[g]) for g in gw_names]
    handles.append(Rectangle((0, 0), 1, 1, color="tab:red"))
    handles.append(Rectangle((0, 0), 1, 1, color="black"))
    labels = [*gw_names, "no answer", "2+ CHILD_SAs"]
    for kind in KINDS:
        handles.append(Line2D([], [], marker=KIND_MARKERS[kind], color="black", linestyle=""))
        labels.append(kind)
    top.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    top.set_title(
        f"chaos seed {record.seed}: {len(record.faults)} faults, {len(violations)} violations "
        f"(red lines), {record.ike_rekeys} IKE and {record.child_rekeys} CHILD rekeys",
        fontsize=9,
    )
    ts = [s.t for s in record.samples if s.rss_kib is not None]
    bottom.plot(ts, [(s.rss_kib or 0) / 1024 for s in record.samples if s.rss_kib is not None],
                color="tab:purple", linewidth=0.8, label="RSS MiB")  # fmt: skip
    bottom.set_ylabel("RSS MiB", fontsize=8)
    fds = bottom.twinx()
    fds.plot(ts, [s.fds or 0 for s in record.samples if s.rss_kib is not None],
             color="tab:brown", linewidth=0.8, linestyle="--", label="fds")  # fmt: skip
    fds.set_ylabel("fds (dashed)", fontsize=8)
    bottom.set_xlabel("s since the start")
    bottom.set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
