"""The daemon as an application service: the config applied and reloaded, charon lost and
back, the takeover and reconcile schedules, and the connections pushed by applications.

The main loop (`extsock_py/mainloop.py`) drives it; every method runs on the loop's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from extsock_py.domain import events as ev
from extsock_py.domain import observations as ob
from extsock_py.domain.config import DesiredConfig
from extsock_py.domain.errors import CharonError, CharonUnreachable, ConfigError
from extsock_py.domain.notices import (
    CharonBackNotice,
    CharonLostNotice,
    ReloadedNotice,
    ReloadFailedNotice,
)
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.reports import ReloadReport
from extsock_py.interfaces.ports import Clock, EventPublisher, SyncedCharon
from extsock_py.usecases.config_usecase import ConfigUsecase
from extsock_py.usecases.event_usecase import EventUsecase
from extsock_py.usecases.failover_manager import FailoverManager
from extsock_py.usecases.resync import reconcile, resync
from extsock_py.usecases.takeover import Takeover

log = logging.getLogger("extsock.daemon")

_RECONNECT_FIRST = 0.05  # first pause before the command session is opened again
_RECONNECT_MAX = 1.0  # longest pause between attempts while charon is away
_RECONCILE_EVERY = 30.0  # seconds between checks that tunnels believed up are in charon
_RECONNECT_FLOOR = 0.01  # the loop sleeps at least this long while it waits for charon


class ManagedCharon(SyncedCharon, Protocol):
    def connect(self) -> None: ...

    def close(self) -> None: ...


class Listener(Protocol):
    def start(self) -> None: ...

    def wait_ready(self, timeout: float) -> bool: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class DaemonOptions:
    config_file: Path
    down_on_exit: bool = False


@dataclass
class PushedConnection:
    body: Mapping[str, Any]
    policy: FailoverPolicy


class PushedConnections:
    """The connections pushed over the control socket, merged into each config read.

    The config usecase forgets every managed connection a new config lacks; so that a
    reload (or charon coming back) keeps the pushed ones, every config the service reads
    goes through `on_read`, and the current config is amended on each change.
    """

    def __init__(self) -> None:
        self.pushed: dict[str, PushedConnection] = {}
        self._file: DesiredConfig | None = None  # the config file as last read

    def on_read(self, desired: DesiredConfig) -> DesiredConfig:
        self._file = desired
        return self.merge(desired)

    def file_connections(self) -> Mapping[str, Mapping[str, Any]]:
        return self._file.connections if self._file is not None else {}

    def names(self) -> set[str]:
        return set(self.pushed)

    def merge(self, desired: DesiredConfig) -> DesiredConfig:
        for name in [n for n in self.pushed if n in desired.connections]:
            log.warning(
                "%s: now defined in %s; the pushed connection is dropped", name, desired.source
            )
            del self.pushed[name]
        if not self.pushed:
            return desired
        connections = dict(desired.connections)
        policies = dict(desired.policies)
        for name, pushed in self.pushed.items():
            connections[name] = pushed.body
            policies[name] = pushed.policy
        return replace(desired, connections=connections, policies=policies)

    def current(self) -> DesiredConfig | None:
        """The file's config plus the pushed connections (None before the first read)."""
        return self.merge(self._file) if self._file is not None else None


class DaemonService:
    """Wires the usecases to charon; the main loop runs it until asked to stop."""

    def __init__(
        self,
        options: DaemonOptions,
        charon: ManagedCharon,
        make_listener: Callable[[Callable[[ob.Observation], None]], Listener],
        read_config: Callable[[Path], DesiredConfig],
        clock: Clock,
        publisher: EventPublisher,
        manager: FailoverManager,
    ) -> None:
        self.options = options
        self.charon = charon
        self.clock = clock
        self.publisher = publisher
        self.manager = manager
        self.config = ConfigUsecase(charon, manager)
        self.events = EventUsecase(
            manager.is_managed, manager.handle, publisher, connections=manager, sas=manager.sas
        )
        self.takeover = Takeover(charon, manager, clock)
        self.pushed = PushedConnections()
        self._read_config = read_config
        self._make_listener = make_listener
        self.charon_reachable = False
        self.charon_release: ob.CharonRelease | None = None  # as the event session last read it
        self._listener: Listener | None = None
        self._desired: DesiredConfig | None = None  # read by open(), applied by start()
        self._reconnect_at: float | None = None  # when to open the command session again
        self._reconnect_pause = _RECONNECT_FIRST
        self._restore_pending = False  # the persisted state waits for charon's first answer
        self._reconcile_at = clock.monotonic() + _RECONCILE_EVERY

    def read_config(self) -> DesiredConfig:
        """The config file, with the pushed connections; raises ConfigError."""
        return self.pushed.on_read(self._read_config(self.options.config_file))

    def refresh_current(self) -> None:
        """After a pushed connection changed: the current config is the file's plus them."""
        current = self.pushed.current()
        if current is not None:
            self.config.current = current

    # --- what the main loop calls -----------------------------------------------------------

    def open(self, post: Callable[[object], None]) -> None:
        desired = self.read_config()
        listener = self._make_listener(post)
        self._listener = listener
        try:
            self.charon.connect()
            self.charon_reachable = True
        except CharonUnreachable as exc:  # started before charon (boot): wait for it
            log.warning("charon not reachable yet: %s; waiting for it", exc)
            self.publisher.publish(CharonLostNotice(str(exc)))
            self.config.current = desired
            self._restore_pending = True
            self._reconnect_at = self.clock.monotonic()
        listener.start()
        if self.charon_reachable and not listener.wait_ready(5.0):
            log.warning("the event stream is not subscribed yet; going on")
        self._desired = desired

    def start(self) -> None:
        if self.charon_reachable and self._desired is not None:
            self._bring_up(self._desired, restore=True)
        self._desired = None

    def wants(self, item: Any) -> bool:
        return self.events.wants(item)

    def before_wait(self) -> None:
        if not self.charon_reachable:
            self._try_reconnect()

    def next_wake(self) -> float | None:
        if self.charon_reachable:
            due = [
                t for t in (self.manager.next_wake(), self.takeover.next_wake()) if t is not None
            ]
            return min(due) if due else None
        if self._reconnect_at is not None:
            return max(self._reconnect_at, self.clock.monotonic() + _RECONNECT_FLOOR)
        return None

    def due_work(self) -> list[Callable[[], object]]:
        """What is due after the inbox, each guarded on its own by the loop. Deadlines wait
        while charon is away: no command could run."""
        if not self.charon_reachable:
            return []
        work: list[Callable[[], object]] = [self.manager.tick, self.takeover.tick]
        now = self.clock.monotonic()
        if now >= self._reconcile_at:
            self._reconcile_at = now + _RECONCILE_EVERY
            listed: list[list[ob.IkeSaInfo]] = []

            def on_sas(sas: list[ob.IkeSaInfo]) -> None:
                listed.append(sas)
                self.events.sync(sas)

            work.append(lambda: reconcile(self.charon, self.manager, on_sas))
            # e.g. `swanctl --load-all` of a connection that starts nothing by itself. It
            # reads the reconcile's list-sas answer: with hundreds of SAs, decoding one
            # costs tens of ms, and this round trip ran every 30 s while idle.
            work.append(
                lambda: self.takeover.scan(self.manager.names(), listed[0] if listed else None)
            )
        return work

    def handle(self, item: object) -> None:
        match item:
            case ob.CharonLost(reason):
                self.charon_lost(reason)
            case ob.CharonBack():
                if not self.charon_reachable:  # else the loop reconnected first: done already
                    self._charon_back()
            case ob.CharonRelease():
                self.charon_release = item
            case ob.IkeUpdown(sa, True) | ob.ChildUpdown(sa, _, True) if self.manager.is_managed(
                sa.name
            ):
                self.takeover.noticed(sa.name)  # named as written: loaded outside extsock
            case _:
                self._observe(item)

    def _observe(self, item: Any) -> None:
        """One of charon's events; whatever is wrong with it is logged and skipped."""
        try:
            self.events.observe(item)
        except CharonUnreachable:
            raise
        except Exception:
            self.events.skipped += 1
            log.exception("skipped an event that could not be handled: %.200r", item)

    # --- bringing the config up -------------------------------------------------------------

    def _bring_up(self, desired: DesiredConfig, restore: bool = False) -> None:
        report = self.config.apply(desired, start=False)
        if restore:  # extsock (re)started: what the last run persisted comes back first
            restored = self.manager.restore_persisted(report.managed)
            if restored:
                log.info("restored the persisted state of %s", ", ".join(restored))
        outcome = resync(self.charon, self.manager, report.managed)
        for sa in outcome.adopted_sas.values():  # operators see charon's state at once
            self.events.track(sa)
        log.info(
            "loaded %d managed and %d plain connections from %s; adopted %d, started %d",
            len(report.managed),
            len(report.plain),
            desired.source,
            len(outcome.adopted),
            len(outcome.started),
        )
        self.takeover.scan(report.managed)

    # --- charon going and coming back -------------------------------------------------------

    def charon_lost(self, reason: str) -> None:
        if self.charon_reachable:
            log.warning("charon unreachable: %s; waiting for it to come back", reason)
            self.publisher.publish(CharonLostNotice(reason))
            self._reconnect_pause = _RECONNECT_FIRST
            self._reconnect_at = self.clock.monotonic() + self._reconnect_pause
        self.charon_reachable = False
        self.charon.close()  # a broken session is of no use; the next attempt opens a new one

    def _try_reconnect(self) -> None:
        """While charon is away: open the command session again once the events flow.

        The event listener reconnects on its own and posts CharonBack; this covers the
        command session breaking alone (the event stream never noticed) and a CharonBack
        whose reconnect failed. Nothing is initiated before the listener is subscribed
        again, or the outcome's events would be missed.
        """
        now = self.clock.monotonic()
        if self._reconnect_at is None or now < self._reconnect_at:
            return  # None: no loss was seen (nothing to redo), or not yet time
        self._reconnect_pause = min(_RECONNECT_MAX, self._reconnect_pause * 2)
        self._reconnect_at = now + self._reconnect_pause
        if self._listener is not None and not self._listener.wait_ready(0):
            return
        self._charon_back()

    def _charon_back(self) -> None:
        self.charon.close()
        self.charon.connect()  # CharonUnreachable: still away, the loop tries again
        log.info("charon is back: reloading connections and credentials")
        self._reconnect_at = None
        self.publisher.publish(CharonBackNotice())
        self.charon_reachable = True
        # The SA model first: the restarted charon numbers its IKE_SAs from 1 again, and
        # what resync adopts or starts must not be read against the old charon's ids.
        self.events.charon_restarted()
        self.manager.charon_restarted()
        if self.config.current is not None:
            restore, self._restore_pending = self._restore_pending, False
            self._bring_up(self.config.current, restore=restore)

    # --- reload and shutdown ----------------------------------------------------------------

    def reload(self) -> ReloadReport:
        """Re-read the config file; a bad file is reported and the running config kept."""
        try:
            desired = self.read_config()
        except ConfigError as exc:
            log.error("reload refused, running config kept: %s", exc)
            self.publisher.publish(ReloadFailedNotice(str(exc)))
            return ReloadReport(error=str(exc))
        if not self.charon_reachable:  # applied when charon is back
            log.warning("charon unreachable: %s is applied once it is back", desired.source)
            self.config.current = desired
            return ReloadReport(deferred=True)
        try:
            report = self.config.apply(desired, start=True)
        except CharonUnreachable:
            self.config.current = desired  # charon went away meanwhile: applied when back
            raise
        log.info(
            "reloaded %s: %d managed, %d plain, %d removed",
            desired.source,
            len(report.managed),
            len(report.plain),
            len(report.removed),
        )
        self.takeover.scan(report.managed)
        self.publisher.publish(ReloadedNotice(tuple(report.managed)))
        return ReloadReport(applied=report)

    def stop(self) -> None:
        if self.options.down_on_exit and self.charon_reachable:
            for name in self.manager.names():
                try:
                    self.manager.handle(name, ev.Stop())
                except CharonError as exc:
                    log.warning("%s: could not bring down: %s", name, exc)
        if self._listener is not None:
            self._listener.stop()
        self.charon.close()
        log.info(
            "stopped%s",
            "; tunnels brought down" if self.options.down_on_exit else "; tunnels left up",
        )
