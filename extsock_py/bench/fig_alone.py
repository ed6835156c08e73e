"""The long baseline: charon alone (no extsock) with the lab's `remote_addrs = gw1, gw2`.

One lab, two connections, observed together for at most ``cap`` seconds:
- ``home`` as rendered (dpd_action = restart), up on segw1, then segw1 silenced: when does
  charon notice (ike-updown down at ini), and does it ever reach segw2?
- ``first``, a copy with its own id and traffic selector, initiated after the silencing
  (an initial connect to a dead primary): when does charon give up, and where does it go next?
It runs in a thread beside the other figures (its charons are idle but for retransmits).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from extsock_py.bench.floorproc import base_body, load_psk
from extsock_py.bench.labs import add_local_addrs, bench_lab, ini_command, ini_initiate
from extsock_py.bench.watch import EventWatch, Seen, child_up, went_down
from extsock_py.lab.topology import INI, LabConfig

FIRST = "first"
FIRST_ADDR = "10.100.0.78"
_TARGET = re.compile(r"^initiating IKE_SA \S+ to (\S+)")


@dataclass
class AloneResult:
    """What charon alone did within the observation cap (seconds from the silencing)."""

    prefix: str
    retransmit_timeout: float | None
    cap: float
    notice_s: float | None = None
    home_reached_gw2: bool = False
    first_gave_up_s: float | None = None
    first_reached_gw2: bool = False
    targets_after: list[str] = field(default_factory=list)
    error: str | None = None
    wall_s: float = 0.0


def _targets(watch: EventWatch, conn: str, since: int) -> list[str]:
    found = []
    for seen in watch.all(lambda s: s.kind == "log" and s.conn.startswith(conn), since):
        match = _TARGET.match(seen.text)
        if match:
            found.append(f"{conn} -> {match.group(1)}")
    return found


def observe(
    prefix: str, retransmit_timeout: float | None, cap: float, stop: threading.Event
) -> AloneResult:
    result = AloneResult(prefix, retransmit_timeout, cap)
    began = time.monotonic()
    try:
        config = LabConfig(prefix=prefix, retransmit_timeout=retransmit_timeout)
        _observe(result, config, stop)
    except Exception as exc:  # reported in the figure's notes; the bench goes on
        result.error = f"{type(exc).__name__}: {exc}"
    result.wall_s = time.monotonic() - began
    return result


def _observe(result: AloneResult, config: LabConfig, stop: threading.Event) -> None:
    with bench_lab(config) as lab:
        gw1, gw2 = config.remote_addrs()[:2]
        add_local_addrs(lab, INI, [FIRST_ADDR])
        with EventWatch(str(lab.vici_path(INI))) as watch:
            lab.load_ini_conf_with_swanctl()
            body = {**base_body(lab, f"{FIRST_ADDR}/32", FIRST), "remote_addrs": [gw1, gw2]}
            body["keyingtries"] = "0"  # charon retries for ever: where to?
            body["children"]["net"]["dpd_action"] = "restart"
            load_psk(lab)
            ini_command(lab, "load-conn", {FIRST: body})
            if lab.initiate_with_swanctl().returncode != 0:
                raise RuntimeError("charon alone: home did not come up on segw1")
            mark = watch.mark()
            t0 = time.monotonic()
            lab.fail("segw1", "link")
            ini_initiate(lab, FIRST)
            _wait(result, watch, mark, t0, stop)
            result.home_reached_gw2 = bool(watch.find(child_up("home"), mark)) and (
                lab.child_installed("segw2")
            )
            result.first_reached_gw2 = bool(watch.find(child_up(FIRST), mark))
            result.targets_after = (
                _targets(watch, "home", mark)[-2:] + _targets(watch, FIRST, mark)[-2:]
            )


def _wait(
    result: AloneResult, watch: EventWatch, mark: int, t0: float, stop: threading.Event
) -> None:
    def gave_up(s: Seen) -> bool:
        return s.kind == "log" and s.conn.startswith(FIRST) and s.text.startswith("giving up")

    deadline = t0 + result.cap
    settle_until: float | None = None
    for _ in range(int(result.cap) + 10):
        now = time.monotonic()
        if now >= deadline or (settle_until is not None and now >= settle_until):
            break
        if stop.is_set():
            result.error = "interrupted"
            break
        if result.notice_s is None and (seen := watch.find(went_down("home"), mark)):
            result.notice_s = seen.at - t0
        if result.first_gave_up_s is None and (seen := watch.find(gave_up, mark)):
            result.first_gave_up_s = seen.at - t0
        if settle_until is None and result.notice_s is not None and result.first_gave_up_s:
            settle_until = now + 5.0  # see where charon goes next
        stop.wait(min(1.0, max(0.0, deadline - now)))


class Background:
    """Runs ``observe`` for several labs in threads; ``results`` after ``join``."""

    def __init__(self, runs: list[tuple[str, float | None, float]], log: Callable[[str], None]):
        self.runs = runs
        self.log = log
        self.results: dict[str, AloneResult] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> None:
        for prefix, rt, cap in self.runs:
            thread = threading.Thread(target=self._one, args=(prefix, rt, cap), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _one(self, prefix: str, rt: float | None, cap: float) -> None:
        self.log(f"  charon-alone baseline ({prefix}, retransmit_timeout={rt}) started")
        self.results[prefix] = observe(prefix, rt, cap, self._stop)
        self.log(f"  charon-alone baseline ({prefix}) done: {self.results[prefix]}")

    def stop(self, timeout: float = 30.0) -> None:
        """Cut the observation short; each lab is downed by its own thread."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float) -> dict[str, AloneResult]:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return dict(self.results)
