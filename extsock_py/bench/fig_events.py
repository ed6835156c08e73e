"""Figure 6: events per second through extsock's decode and dispatch, beside the vici package.

extsock: its ``ViciEventListener`` (real framing, registration, ``decode_event``) delivering
to ``EventUsecase.observe`` and a ``FailoverManager`` managing the recorded connection over
a charon port that does nothing.  Baseline: ``vici.Session.listen`` on the same stream,
doing nothing with the events.  Both read from ``ReplayCharon``; trials alternate.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import vici

from extsock_py.adapters.clock import SystemClock
from extsock_py.adapters.publisher import Broadcast
from extsock_py.adapters.vici.listener import EVENTS, ViciEventListener
from extsock_py.bench.record import DATA
from extsock_py.bench.replay import ReplayCharon, build_stream, load_recording
from extsock_py.bench.stats import Figure, Summary
from extsock_py.domain.observations import IkeSaInfo, Observation
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.usecases.event_usecase import EventUsecase
from extsock_py.usecases.failover_manager import FailoverManager

GOAL_RATE = 5000.0
GOAL_RATIO = 0.5
TIMEOUT = 60.0


class IdleCharon:
    """A CharonPort that accepts every command and does nothing."""

    def load_conn(self, name: str, body: Mapping[str, Any]) -> None: ...
    def unload_conn(self, name: str) -> None: ...
    def list_conn_names(self) -> list[str]:
        return []

    def initiate(self, ike: str, child: str | None) -> None: ...

    def load_and_initiate(self, name: str, body: Mapping[str, Any], child: str | None) -> None: ...
    def terminate(
        self, ike: str | None = None, ike_id: int | None = None, child_id: int | None = None
    ) -> None: ...
    def list_sas(self) -> list[IkeSaInfo]:
        return []

    def version(self) -> dict[str, str]:
        return {"version": "5.9.8"}


def _usecase(gateways: tuple[str, ...]) -> Callable[[Observation], None]:
    publisher = Broadcast()
    manager = FailoverManager(IdleCharon(), SystemClock(), publisher)
    profile = ConnectionProfile("home", gateways, {"children": {"net": {}}}, FailoverPolicy())
    manager.manage(profile)
    manager.start_all()
    return EventUsecase(manager.is_managed, manager.handle, publisher).observe


def extsock_rate(server: ReplayCharon, count: int, gateways: tuple[str, ...]) -> float | None:
    observe = _usecase(gateways)
    done = threading.Event()
    seen = [0, 0.0]

    def deliver(obs: Observation) -> None:
        observe(obs)
        seen[0] += 1
        if seen[0] == count:
            seen[1] = time.monotonic()
            done.set()

    server.accept()
    listener = ViciEventListener(deliver, server.uri)
    listener.start()
    try:
        if not listener.wait_ready(10.0):
            return None
        began = server.stream()
        if not done.wait(TIMEOUT):
            return None
        return count / (seen[1] - began)
    finally:
        listener.stop()
        server.drop_client()


def vici_rate(server: ReplayCharon, count: int) -> float | None:
    result: list[float] = []
    server.accept()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(server.path)

    def consume() -> None:
        stream = vici.Session(sock).listen(list(EVENTS))
        try:
            for n, _event in enumerate(stream, start=1):
                if n == count:
                    result.append(time.monotonic())
                    break
        finally:
            with contextlib.suppress(OSError):
                stream.close()  # unregisters while the socket is open

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        if not server.wait_registered(set(EVENTS), 10.0):
            return None
        began = server.stream()
        thread.join(TIMEOUT)
        return count / (result[0] - began) if result else None
    finally:
        server.drop_client()
        sock.close()


def measure(trials: int, count: int, log: Callable[[str], None]) -> Figure:
    events = load_recording(DATA)
    names = {k for k, _ in events}
    gateways = tuple(sorted({n.partition("@")[2] for _, m in events for n in _names(m)} - {""}))
    ext: list[float] = []
    base: list[float] = []
    notes: list[str] = []
    with ReplayCharon(build_stream(events, count)) as server:
        for i in range(trials):
            for side in ("extsock", "vici") if i % 2 == 0 else ("vici", "extsock"):
                rate = (
                    extsock_rate(server, count, gateways)
                    if side == "extsock"
                    else (vici_rate(server, count))
                )
                if rate is None:
                    notes.append(f"{side}: trial {i} did not finish")
                else:
                    (ext if side == "extsock" else base).append(rate)
    notes.append(f"{count} events per trial, cycled from {len(events)} recorded ({sorted(names)})")
    return Figure(
        name="6 event throughput: decode + dispatch (replayed 5.9.8 events)",
        unit="events/s",
        extsock=Summary.of(ext),
        baseline=Summary.of(base),
        goal=f">= {GOAL_RATE:.0f} events/s and ratio >= {GOAL_RATIO}",
        better="higher",
        goal_ratio=GOAL_RATIO,
        goal_value=GOAL_RATE,
        baseline_label="vici package: decode only",
        notes=notes,
    )


def _names(message: Mapping[str, Any]) -> list[str]:
    names = [k for k, v in message.items() if isinstance(v, Mapping)]
    if "ikesa-name" in message:
        names.append(str(message["ikesa-name"]))
    return names
