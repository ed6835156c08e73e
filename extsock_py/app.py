"""The composition root: the one place where adapters are chosen and wired to the usecases."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from extsock_py.adapters import sdnotify
from extsock_py.adapters.clock import SystemClock
from extsock_py.adapters.config_reader import read_desired_config
from extsock_py.adapters.control.protocol import DEFAULT_SOCKET
from extsock_py.adapters.host_addresses import ProcHostAddresses
from extsock_py.adapters.publisher import Broadcast
from extsock_py.adapters.resolver import BackgroundResolver, SystemResolver
from extsock_py.adapters.state_store import DEFAULT_DIRECTORY, SqliteStateStore
from extsock_py.adapters.vici import dialects
from extsock_py.adapters.vici.commands import ViciCharon
from extsock_py.adapters.vici.listener import Coalescing, ViciEventListener
from extsock_py.adapters.vici.pool import DEFAULT_LANES, MAX_LANES, ViciCharonPool
from extsock_py.adapters.vici.transport import DEFAULT_URI
from extsock_py.adapters.worker import BoundedWorker
from extsock_py.domain.observations import Observation
from extsock_py.interfaces.operator import OperatorPort
from extsock_py.interfaces.ports import Resolver
from extsock_py.mainloop import MainLoop
from extsock_py.usecases.daemon_service import DaemonOptions, DaemonService, Listener
from extsock_py.usecases.failover_manager import FailoverManager
from extsock_py.usecases.operator import OperatorUsecase

log = logging.getLogger("extsock.app")

# One default each, owned by the adapter that uses it.
DEFAULT_VICI_URI = DEFAULT_URI
DEFAULT_CONTROL_SOCKET = DEFAULT_SOCKET
DEFAULT_STATE_DIR = str(DEFAULT_DIRECTORY)
DEFAULT_COMMAND_SESSIONS = DEFAULT_LANES
MAX_COMMAND_SESSIONS = MAX_LANES
# Beside the main loop: history reads (a read of 10,000 rows takes ~0.15 s; more readers
# than this wait in the queue, and past it they are refused: "try again later") and DNS
# (one name can take the resolver's 5 s timeout).
HISTORY_THREADS, HISTORY_QUEUE = 2, 4
DNS_THREADS, DNS_QUEUE = 4, 64


@dataclass(frozen=True)
class AppSettings:
    uri: str
    config_file: Path
    state_dir: Path | None = Path(DEFAULT_STATE_DIR)
    control_socket: Path | None = Path(DEFAULT_CONTROL_SOCKET)
    metrics: str | None = None
    down_on_exit: bool = False
    control_mode: int = 0o660
    control_owner: str | None = None
    control_group: str | None = None
    # VICI sessions that run connections' commands side by side (0: all on the main one).
    command_sessions: int = DEFAULT_LANES


@dataclass
class App:
    loop: MainLoop[DaemonService]
    operator: OperatorPort
    publisher: Broadcast
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def service(self) -> DaemonService:
        return self.loop.service

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            for close in reversed(self.closers):
                try:
                    close()
                except Exception:
                    log.exception("while closing")


def build_app(settings: AppSettings, resolver: Resolver | None = None) -> App:
    """Wire the real adapters; nothing is opened until App.run(). `resolver`: the blocking
    DNS resolver asked beside the loop (the system's by default)."""
    clock = SystemClock()
    publisher = Broadcast()
    pool = (
        ViciCharonPool(settings.uri, lanes=settings.command_sessions)
        if settings.command_sessions
        else None
    )
    charon = pool if pool is not None else ViciCharon(settings.uri)
    store: SqliteStateStore | None = None
    if settings.state_dir is not None:
        store = SqliteStateStore(settings.state_dir)
    dns = BoundedWorker("dns", DNS_THREADS, DNS_QUEUE)
    # Answers come back through the loop's inbox (`loop` is bound below, before any runs).
    names = BackgroundResolver(resolver or SystemResolver(), dns, lambda work: loop.submit(work))
    manager = FailoverManager(charon, clock, publisher, store, resolver=names, lanes=pool)

    def make_listener(deliver: Callable[[Observation], None]) -> Listener:
        return ViciEventListener(
            deliver,
            settings.uri,
            coalescing=Coalescing(),
            dialects=dialects.choose,
        )

    service = DaemonService(
        DaemonOptions(settings.config_file, settings.down_on_exit),
        charon,
        make_listener,
        read_desired_config,
        clock,
        publisher,
        manager,
    )
    loop = MainLoop(service, clock.monotonic)
    names.on_change.append(service.names_resolved)
    history = BoundedWorker("history", HISTORY_THREADS, HISTORY_QUEUE)
    # The one operator usecase: the control socket and the metrics endpoint share it.
    operator = OperatorUsecase(loop, service, store, host=ProcHostAddresses(), background=history)
    app = App(loop, operator, publisher)
    if pool is not None:  # the lanes' outcomes come back through the loop's inbox
        pool.post = loop.submit
        loop.on_stopping.append(pool.stopping)
        app.closers.append(pool.stop)
    _attach_monitor(app, settings.uri, charon, clock, publisher, manager)
    if store is not None:
        store.open()
        app.closers.append(store.close)
    app.closers.extend([dns.close, history.close])  # closed before the store they read
    loop.on_ready.append(lambda: _attach_surfaces(app, settings))
    _attach_systemd(loop, clock)
    return app


def _attach_monitor(
    app: App,
    uri: str,
    charon: ViciCharon,
    clock: SystemClock,
    publisher: Broadcast,
    manager: FailoverManager,
) -> None:
    """The tunnel monitor: its probe side on a timer thread of its own (adapters/
    probe_timer.py), its verdicts posted to the loop with priority; its loop side (following
    the tunnels, looking at the counters) a callback per iteration, its deadlines among the
    loop's wake-ups. It does nothing unless a policy enables it."""
    from extsock_py.adapters.charon_sched import CharonRunDelay
    from extsock_py.adapters.icmp_prober import IcmpProber
    from extsock_py.adapters.monitor_prober import Prober
    from extsock_py.adapters.probe_timer import ProbeTimer
    from extsock_py.domain.policy import MonitorPolicy
    from extsock_py.interfaces.ports import ProbePort
    from extsock_py.usecases.tunnel_monitor import TunnelMonitor

    def make_probe(policy: MonitorPolicy) -> ProbePort:
        assert policy.local is not None and policy.remote is not None
        if policy.probe == "icmp":
            return IcmpProber(policy.local, policy.remote, policy.netns, window=policy.misses)
        return Prober(policy.local, policy.remote, policy.port, policy.netns)

    monitor = TunnelMonitor(
        manager,
        charon,
        clock,
        publisher,
        make_probe,
        post_verdict=app.loop.submit_urgent,
        run_delay=CharonRunDelay(uri),
    )
    service = app.service

    def probe_wake() -> float | None:  # while charon is away, no verdict is reached
        return monitor.timer_wake() if service.charon_reachable else None

    timer = ProbeTimer(monitor.probe_pass, probe_wake, clock.monotonic)
    monitor.schedule_changed = timer.poke

    def next_wake() -> float | None:  # while charon is away, no deadline is acted on
        return monitor.next_wake() if service.charon_reachable else None

    def run_once() -> None:  # while charon is away, states are stale and no command runs
        if service.charon_reachable:
            monitor.run_once()

    app.loop.wakers.append(next_wake)
    app.loop.on_iteration.append(run_once)
    app.loop.on_ready.append(timer.start)
    app.closers.append(monitor.close)
    app.closers.append(timer.close)  # closed first (closers run in reverse)


def _attach_systemd(daemon: MainLoop[DaemonService], clock: SystemClock) -> None:
    """READY, RELOADING, STOPPING and WATCHDOG for a Type=notify unit (no-ops elsewhere)."""

    def on_ready() -> None:
        sdnotify.ready()

    def on_reload(done: bool) -> None:
        if done:
            sdnotify.ready()
        else:
            sdnotify.reloading()

    def on_stopping() -> None:
        sdnotify.stopping()

    daemon.on_ready.append(on_ready)
    daemon.on_reload.append(on_reload)
    daemon.on_stopping.append(on_stopping)
    interval = sdnotify.watchdog_interval()
    if interval is None:
        return
    last = [0.0]

    def pet() -> None:  # from the loop itself, once an iteration: the loop is alive
        now = clock.monotonic()
        if now - last[0] >= interval / 2:
            last[0] = now
            sdnotify.watchdog()

    daemon.on_iteration.append(pet)
    daemon.wakers.append(lambda: last[0] + interval / 2)  # an idle loop wakes to ping


def _attach_surfaces(app: App, settings: AppSettings) -> None:
    """Operator surfaces start once charon is reached and the config is applied."""
    if settings.control_socket is not None:
        from extsock_py.adapters.control.server import attach_control

        server = attach_control(
            app.operator,
            app.publisher,
            settings.control_socket,
            mode=settings.control_mode,
            owner=settings.control_owner,
            group=settings.control_group,
        )
        server.start()
        app.closers.append(server.close)
    if settings.metrics:
        from extsock_py.adapters.metrics import attach_metrics

        metrics = attach_metrics(app.operator, app.publisher, settings.metrics)
        metrics.start()
        app.closers.append(metrics.close)
