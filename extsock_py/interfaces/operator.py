"""The operator port: what the control socket and the metrics endpoint may ask of the
running daemon, and the main loop's work queue the operator usecase posts to.

The composition root builds one operator usecase and hands it to both adapters as an
`OperatorPort`; neither adapter knows the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol, TypeVar

from extsock_py.domain.access import ControlAccess
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.domain.reports import (
    ChangeResult,
    DaemonSnapshot,
    HealthReport,
    HistoryRecord,
    LoadResult,
    ReloadReport,
    StatusReport,
    UnloadResult,
)

T = TypeVar("T")


class WorkQueue(Protocol):
    """The main loop, as other threads see it: work posted here runs on the loop."""

    def submit(self, work: Callable[[], T]) -> Future[T]: ...


class Background(Protocol):
    """A bounded worker beside the main loop, for blocking work that touches no state of
    the loop (a read of the state store). None: it is full, nothing was queued."""

    def try_submit(self, work: Callable[[], T]) -> Future[T] | None: ...


class OperatorPort(Protocol):
    """Operator requests; safe to call from any thread. Refusals raise OperatorError."""

    def status(self, conn: str | None = None, timeout: float | None = None) -> StatusReport: ...

    def history(
        self, conn: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[HistoryRecord]: ...

    def health(self, timeout: float | None = None) -> HealthReport: ...

    def snapshot(self, timeout: float | None = None) -> DaemonSnapshot: ...

    def control_access(self) -> ControlAccess: ...

    def switch(self, conn: str, to: str | None = None) -> ChangeResult: ...

    def hold(self, conn: str) -> ChangeResult: ...

    def release(self, conn: str) -> ChangeResult: ...

    def terminate(self, conn: str) -> ChangeResult: ...

    def retry(self, conn: str) -> ChangeResult: ...

    def reload(self) -> ReloadReport: ...

    def load(self, profile: ConnectionProfile, privileged: bool = False) -> LoadResult: ...

    def unload(self, conn: str) -> UnloadResult: ...
