"""CPU time and resident memory of a process, from /proc."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_percent(pids: list[int], window: float) -> list[float]:
    """Percent of one core each process used over the same `window` seconds."""
    before = [cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    return [100.0 * (cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before, strict=True)]


def machine() -> dict[str, object]:
    """Cores, memory and load of this machine, for the report."""
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "loadavg": [round(x, 2) for x in load],
        "kernel": os.uname().release,
    }


class LoadSampler:
    """The 1-minute load average every `period` seconds while the bench runs (a thread)."""

    def __init__(self, period: float = 10.0, limit: int = 2000) -> None:
        self.period = period
        self.limit = limit
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float | int | None]:
        self._stop.set()
        self._thread.join(2.0)
        data = sorted(self.samples)
        if not data:
            return {"n": 0}
        return {"min": data[0], "median": data[len(data) // 2], "max": data[-1], "n": len(data)}

    def _run(self) -> None:
        for _ in range(self.limit):
            self.samples.append(round(os.getloadavg()[0], 2))
            if self._stop.wait(self.period):
                return
