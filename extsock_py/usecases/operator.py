"""The operator usecase: what an operator or an application may ask of the running daemon.

Every call that reads or changes the managed connections runs on the daemon's main loop
(through its `submit`), bounded by a timeout, so the control socket and the metrics
endpoint never race the loop. Errors are `OperatorError`s whose class names the kind of
failure and whose message says what to do.

Connections pushed by an application (`load`) live next to the config file's: a reload
or charon coming back keeps them, because the daemon service merges them into every
configuration it reads (see `PushedConnections`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from extsock_py.domain import events as ev
from extsock_py.domain.access import ControlAccess
from extsock_py.domain.errors import CharonError, CharonUnreachable, ExtsockError
from extsock_py.domain.failover import Phase
from extsock_py.domain.isolation import collision
from extsock_py.domain.notices import ConnectionNotice, NoticeKind
from extsock_py.domain.profile import ConnectionProfile, clone_body, clone_name
from extsock_py.domain.push import push_refusal
from extsock_py.domain.reports import (
    ChangeResult,
    ConnectionStatus,
    DaemonSnapshot,
    HealthReport,
    HistoryRecord,
    LoadResult,
    ReloadReport,
    StatusReport,
    UnloadResult,
)
from extsock_py.interfaces.operator import Background, WorkQueue
from extsock_py.interfaces.ports import HostAddresses, StateStore
from extsock_py.usecases.daemon_service import DaemonService, PushedConnection

if TYPE_CHECKING:
    from extsock_py.usecases.failover_manager import Managed

log = logging.getLogger("extsock.operator")

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0
# Phases in which a connection is where its policy wants it (for health): up, or waiting
# as the policy says (an attempt under way, a backoff). `held` is sanctioned in any phase.
SANCTIONED_PHASES = frozenset({Phase.UP, Phase.CONNECTING, Phase.BACKOFF})


# --- errors -------------------------------------------------------------------------------


class OperatorError(ExtsockError):
    """A request the daemon refused; the class name is the kind, the message what to do."""


class UnknownConnection(OperatorError):
    pass


class UnknownGateway(OperatorError):
    pass


class InvalidConnection(OperatorError):
    pass


class ConnectionConflict(OperatorError):
    pass


class NotAnswering(OperatorError):
    pass


class ReloadFailed(OperatorError):
    pass


class NoHistory(OperatorError):
    pass


class NotAllowed(OperatorError):
    """A push the `extsock.control.push` policy does not allow (or, without it: not root)."""


class Busy(OperatorError):
    """The daemon serves as many such requests as it allows at once: try again later."""


# --- the usecase --------------------------------------------------------------------------


class OperatorUsecase:
    """Operator requests against a running daemon; safe to call from any thread."""

    def __init__(
        self,
        loop: WorkQueue,
        daemon: DaemonService,
        store: StateStore | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        host: HostAddresses | None = None,
        background: Background | None = None,
    ) -> None:
        self._loop = loop
        self._daemon = daemon
        self._store = store
        self.timeout = timeout
        self._host = host
        # Where history is read: beside the loop, never on it (a read of 10,000 rows takes
        # a tenth of a second). None: on the caller's thread (tests, tools).
        self._background = background

    # --- running on the main loop -------------------------------------------------------

    def _on_loop(self, work: Callable[[], T], what: str, timeout: float | None = None) -> T:
        wait = self.timeout if timeout is None else timeout
        future = self._loop.submit(work)
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            cancelled = future.cancel()
            maybe = "" if cancelled else "; it may still take effect"
            raise NotAnswering(
                f"the daemon's main loop did not answer {what} within {wait:g}s{maybe}"
                ": check 'extsock run' (is it stopping or stuck?)"
            ) from None
        except CancelledError:
            raise NotAnswering(f"{what} was cancelled") from None

    def _managed(self, conn: str) -> Managed:
        managed = self._daemon.manager.get(conn)
        if managed is None:
            names = self._daemon.manager.names()
            known = ", ".join(names) if names else "none"
            raise UnknownConnection(f"no managed connection named '{conn}' (managed: {known})")
        return managed

    def _row(self, row: ConnectionStatus, pushed: set[str]) -> ConnectionStatus:
        conn = row.connection
        view = self._daemon.events.ike.get(conn)
        now_wall = self._daemon.clock.wall()
        # The IKE_SA carrying its tunnel, whatever connection it is named after.
        sa = self._daemon.events.sas.get(row.ike_id) if row.ike_id else None
        if sa is not None:
            row = replace(row, ike_state=sa.state, ike_gateway=sa.remote)
        elif view is not None:
            row = replace(row, ike_state=view.state, ike_gateway=view.gateway, ike_id=view.ike_id)
        else:
            row = replace(row, ike_state="NONE", ike_gateway=None)
        due = row.next_action_in
        left = row.draining_in
        row = replace(
            row,
            next_action_at=None if due is None else round(now_wall + due, 3),
            draining_until=None if left is None else round(now_wall + left, 3),
            source="control" if conn in pushed else "config",
        )
        if not self._daemon.charon_reachable:
            # Nothing is known while charon is away: say so, and what was last known.
            row = replace(
                row,
                last_phase=row.phase,
                phase="unknown",
                active_gateway=None,
                ike_state="UNKNOWN",
                next_action="waiting for charon to come back",
                next_action_in=None,
                next_action_at=None,
            )
        return row

    def _rows(self, conn: str | None) -> tuple[ConnectionStatus, ...]:
        if conn is not None:
            self._managed(conn)
        pushed = self._daemon.pushed.names()
        return tuple(self._row(r, pushed) for r in self._daemon.manager.status(conn))

    def _one(self, conn: str) -> ConnectionStatus:
        return self._rows(conn)[0]

    # --- views --------------------------------------------------------------------------

    def snapshot(self, timeout: float | None = None) -> DaemonSnapshot:
        """What metrics read at a scrape: the manager's rows as they are, and counters."""

        def work() -> DaemonSnapshot:
            d = self._daemon
            return DaemonSnapshot(
                charon_reachable=d.charon_reachable,
                processed=d.events.processed,
                skipped=d.events.skipped,
                connections=d.manager.status(),
            )

        return self._on_loop(work, "snapshot", timeout)

    def control_access(self) -> ControlAccess:
        """Who may do what over the control socket, as the current config says (read
        from any thread: the config is replaced whole, never changed in place)."""
        current = self._daemon.config.current
        return current.control if current is not None else ControlAccess()

    def status(self, conn: str | None = None, timeout: float | None = None) -> StatusReport:
        """Each managed connection (or the one named): gateways, state, failures, next step."""

        def work() -> StatusReport:
            return StatusReport(
                charon_reachable=self._daemon.charon_reachable,
                charon=self._daemon.charon_release,
                connections=self._rows(conn),
            )

        return self._on_loop(work, "status", timeout)

    def history(
        self, conn: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[HistoryRecord]:
        """Failover records (newest last), from the state store."""
        store = self._store
        if store is None:
            raise NoHistory("no state store is configured: the daemon keeps no history")

        def work() -> list[HistoryRecord]:
            records = store.history(connection=conn, since=since, limit=limit)
            return list(records)

        # The store is the only thing read, and it has its own locking: the main loop is
        # not involved, so no number of readers can stall it.
        if self._background is None:
            return work()
        future = self._background.try_submit(work)
        if future is None:
            raise Busy(
                "the daemon reads as much history as it allows at once: try again later"
                " (or ask for fewer records with 'limit')"
            )
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()
            raise NotAnswering(
                f"history was not read within {self.timeout:g}s: try again later"
            ) from None

    def health(self, timeout: float | None = None) -> HealthReport:
        """Healthy when charon is reachable and every connection is up or waits by policy."""
        try:
            status = self.status(timeout=timeout)
        except NotAnswering as exc:
            return HealthReport(healthy=False, reasons=(str(exc),))
        reasons: list[str] = []
        if not status.charon_reachable:
            reasons.append("charon is not reachable over VICI")
        phases: dict[str, str] = {}
        for row in status.connections:
            # while charon is away: the phase last known
            phase = row.last_phase if row.last_phase is not None else row.phase
            phases[row.connection] = row.phase
            if row.held or phase in SANCTIONED_PHASES:
                continue
            reasons.append(f"{row.connection}: {phase}")
        return HealthReport(
            healthy=not reasons,
            reasons=tuple(reasons),
            charon_reachable=status.charon_reachable,
            connections=phases,
        )

    # --- operator events ----------------------------------------------------------------

    def _event(
        self,
        conn: str,
        event: ev.Event,
        what: str,
        check: Callable[[Managed], None] | None = None,
    ) -> ChangeResult:
        def work() -> ChangeResult:
            managed = self._managed(conn)
            if check is not None:
                check(managed)
            before = managed.state
            self._daemon.manager.handle(conn, event)
            after = self._daemon.manager.get(conn)
            changed = after is None or after.state != before
            return ChangeResult(self._one(conn), changed)

        return self._on_loop(work, what)

    def switch(self, conn: str, to: str | None = None) -> ChangeResult:
        """Move to gateway `to` now (the next one when None); make-before-break when up."""

        def check(managed: Managed) -> None:
            if to is not None and to not in (*managed.profile.gateways, *managed.state.gateways):
                gws = ", ".join(managed.profile.gateways)
                raise UnknownGateway(f"{to} is not a gateway of {conn} (gateways: {gws})")

        return self._event(conn, ev.Switch(to), "switch", check)

    def hold(self, conn: str) -> ChangeResult:
        """Pause automatic action on `conn`; its current SA is kept."""
        return self._event(conn, ev.Hold(), "hold")

    def release(self, conn: str) -> ChangeResult:
        """Resume automatic action on `conn`."""
        return self._event(conn, ev.Release(), "release")

    def terminate(self, conn: str) -> ChangeResult:
        """Bring `conn` down and keep it down; not counted as a failure."""
        return self._event(conn, ev.Stop(), "terminate")

    def retry(self, conn: str) -> ChangeResult:
        """Start `conn` again from its primary (after a give-up, a stop or a hold)."""
        return self._event(conn, ev.Retry(), "retry")

    # --- configuration ------------------------------------------------------------------

    def reload(self) -> ReloadReport:
        """Re-read the config file; a bad file is refused (ReloadFailed) and the running
        config kept."""
        report = self._on_loop(self._daemon.reload, "reload")
        if not report.ok:
            raise ReloadFailed(f"{report.error}; the running config is kept")
        return report

    def _host_addresses(self) -> set[str]:
        """This host's addresses and the virtual IPs charon reported for its IKE_SAs."""
        found = set(self._host.addresses()) if self._host is not None else set()
        for conn in self._daemon.pushed.file_connections():
            for sa in self._daemon.manager.sas.carrying(conn):
                found.update(sa.vips)
        return found

    def load(self, profile: ConnectionProfile, privileged: bool = False) -> LoadResult:
        """Manage a connection pushed by an application and start it (update it if known).

        The control socket adapter validates the pushed JSON into the profile. A client
        that is not `privileged` (root, the daemon's uid) pushes only what the policy's
        `extsock.control.push` section allows.
        """
        conn = profile.name
        notes = [
            f"remote_addrs entry '{r.address}' ignored: {r.reason}" for r in profile.not_gateways
        ]

        def work() -> LoadResult:
            overlay = self._daemon.pushed
            configured = overlay.file_connections()
            if conn in configured:
                raise ConnectionConflict(
                    f"'{conn}' is defined in the config file: change it there and reload"
                )
            others = {n: p.body for n, p in overlay.pushed.items() if n != conn}
            if not privileged:
                why = push_refusal(profile.body, self.control_access().push, len(others))
                if why:
                    raise NotAllowed(f"{conn}: {why}")
            clash = collision(profile.body, configured, others, self._host_addresses())
            if clash:
                raise ConnectionConflict(f"{conn}: {clash}; pick another")
            self._accepted_by_charon(profile)
            new = self._daemon.manager.manage(profile)
            overlay.pushed[conn] = PushedConnection(dict(profile.body), profile.policy)
            self._daemon.refresh_current()
            if new:
                self._daemon.manager.handle(conn, ev.Start())
            else:
                notes.append("updated: the new body is used from the next attempt on")
            log.info("%s: loaded over the control socket, gateways %s", conn, profile.gateways)
            return LoadResult(self._one(conn), new, tuple(notes))

        return self._on_loop(work, "load")

    def _accepted_by_charon(self, profile: ConnectionProfile) -> None:
        """Load the first gateway's clone now, so that `load` answers with charon's own
        verdict: a body charon refuses is refused here, never retried forever."""
        gateway = profile.gateways[0]
        try:
            self._daemon.charon.load_conn(
                clone_name(profile.name, gateway), clone_body(profile, gateway)
            )
        except CharonUnreachable:
            raise
        except CharonError as exc:
            raise InvalidConnection(f"{profile.name}: charon refused it: {exc}") from None

    def unload(self, conn: str) -> UnloadResult:
        """Stop managing a pushed `conn`: its tunnel goes down and its clone is unloaded.
        A connection of the config file is not unloaded this way (`terminate` it)."""

        def work() -> UnloadResult:
            self._managed(conn)
            overlay = self._daemon.pushed
            notes: list[str] = []
            if conn in overlay.file_connections():
                raise ConnectionConflict(
                    f"'{conn}' is defined in the config file: 'terminate' brings it down and "
                    "keeps it down; to remove it, take it out of the file and reload"
                )
            self._daemon.manager.forget(conn)
            self._daemon.events.ike.pop(conn, None)
            if overlay.pushed.pop(conn, None) is not None:
                self._daemon.refresh_current()
            if self._store is not None:
                self._store.forget_connection(conn)  # after the Stop's last save
            # metrics drop the connection's labels, subscribers learn it is gone
            self._daemon.publisher.publish(ConnectionNotice(NoticeKind.UNLOADED, conn))
            log.info("%s: unloaded over the control socket", conn)
            return UnloadResult(conn, tuple(notes))

        return self._on_loop(work, "unload")
