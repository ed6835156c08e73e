"""Prometheus metrics and a health check on one small HTTP listener.

`attach_metrics(operator, events, "127.0.0.1:9814")` serves
- `/metrics`: the daemon's metrics, from a registry of its own (never the global one);
- `/health`: 200 when charon is reachable and every managed connection is up or waits as
  its policy says (connecting, backoff, or held by the operator), else 503; the JSON body
  says why.

What happens (failovers, give-ups, charon leaving and coming back) is counted from the
daemon's published events as they occur; what is (tunnel up, active gateway, phase) is
read from the main loop at scrape time, so a scrape never races the loop. Labels carry
connection names, gateway addresses, phases and reasons only: never a secret.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from extsock_py.adapters.publisher import notice_fields
from extsock_py.adapters.reports_json import health_json
from extsock_py.domain.failover import Phase
from extsock_py.domain.notices import Notice
from extsock_py.domain.reports import DaemonSnapshot
from extsock_py.interfaces.operator import OperatorPort
from extsock_py.interfaces.ports import Subscribable
from extsock_py.usecases.operator import NotAnswering

log = logging.getLogger("extsock.metrics")

__all__ = ["DEFAULT_ADDRESS", "MetricsServer", "attach_metrics", "parse_address"]

DEFAULT_ADDRESS = "127.0.0.1:9814"
DETECTION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
PLANNED_REASONS = frozenset({"failback", "operator"})  # switches, not outages
_SAFE = re.compile(r"[A-Za-z0-9_.:@%~/+-]{1,128}")
WORKERS = 2  # threads that answer requests; never more, whatever the clients do
MAX_CONNECTIONS = 64  # connections held at once; past it the oldest waiting one is dropped
HEADER_TIMEOUT = 5.0  # seconds a connection may wait before it sends its request
IO_TIMEOUT = 2.0  # seconds a worker waits on one read or write of a client


def _label(value: object) -> str:
    """A label value: names, addresses and reason words pass; anything else is 'other'."""
    text = str(value) if value is not None else ""
    return text if _SAFE.fullmatch(text) else "other"


def parse_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `:port` (every interface) or `port`."""
    text = address.strip()
    if text.isdigit():
        return "127.0.0.1", int(text)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid metrics address {address!r}: expected host:port")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid metrics address {address!r}: the port must be 0-65535")
    return host, int(port)


class _StateCollector:
    """Metrics read from the daemon's state on its main loop, at each scrape."""

    def __init__(self, operator: OperatorPort, timeout: float) -> None:
        self._operator = operator
        self._timeout = timeout

    def collect(self) -> Iterable[Metric]:
        snap: DaemonSnapshot | None
        try:
            snap = self._operator.snapshot(self._timeout)
        except NotAnswering:
            snap = None
        except Exception as exc:  # a scrape must not fail because the loop did
            log.warning("metrics snapshot failed: %s", exc)
            snap = None
        up = GaugeMetricFamily(
            "extsock_up", "1 when the daemon's main loop answered this scrape in time"
        )
        up.add_metric([], 1.0 if snap is not None else 0.0)
        yield up
        if snap is None:
            return
        reachable = GaugeMetricFamily("extsock_charon_reachable", "1 when charon answers over VICI")
        reachable.add_metric([], 1.0 if snap.charon_reachable else 0.0)
        yield reachable
        processed = CounterMetricFamily(
            "extsock_events_processed", "charon events (observations) processed by the daemon"
        )
        processed.add_metric([], float(snap.processed))
        yield processed
        skipped = CounterMetricFamily(
            "extsock_events_undecodable", "charon events that could not be decoded and were skipped"
        )
        skipped.add_metric([], float(snap.skipped))
        yield skipped
        rows = snap.connections
        managed = GaugeMetricFamily("extsock_managed_connections", "managed connections")
        managed.add_metric([], float(len(rows)))
        yield managed
        tunnel = GaugeMetricFamily(
            "extsock_tunnel_up", "1 when the connection's tunnel is up", labels=["connection"]
        )
        active = GaugeMetricFamily(
            "extsock_active_gateway",
            "1 for the gateway the connection's tunnel is up through",
            labels=["connection", "gateway"],
        )
        phase = GaugeMetricFamily(
            "extsock_connection_phase",
            "1 for the phase the connection's failover machine is in",
            labels=["connection", "phase"],
        )
        held = GaugeMetricFamily(
            "extsock_connection_held",
            "1 while the operator holds the connection",
            labels=["connection"],
        )
        failures = CounterMetricFamily(
            "extsock_connection_failures",
            "gateway failures of the connection since it was (re)started",
            labels=["connection"],
        )
        gateways = GaugeMetricFamily(
            "extsock_connection_gateways", "gateways configured", labels=["connection"]
        )
        standby = GaugeMetricFamily(
            "extsock_standby_up",
            "1 while the hot standby's IKE_SA towards the gateway is established, 0 while it "
            "is being set up or waits to be (standby = yes only)",
            labels=["connection", "gateway"],
        )
        draining = GaugeMetricFamily(
            "extsock_draining",
            "1 while the tunnel a make-before-break switch left drains (switch_drain) before "
            "it is terminated",
            labels=["connection"],
        )
        drain_left = GaugeMetricFamily(
            "extsock_drain_remaining_seconds",
            "seconds until the draining old tunnel towards the gateway is terminated",
            labels=["connection", "gateway"],
        )
        for row in rows:
            conn = _label(row.connection)
            is_up = row.phase == Phase.UP
            tunnel.add_metric([conn], 1.0 if is_up else 0.0)
            if row.active_gateway is not None:
                active.add_metric([conn, _label(row.active_gateway)], 1.0)
            for each in Phase:
                phase.add_metric([conn, str(each)], 1.0 if row.phase == each else 0.0)
            held.add_metric([conn], 1.0 if row.held else 0.0)
            failures.add_metric([conn], float(row.failures_total))
            gateways.add_metric([conn], float(len(row.gateways)))
            if row.hot_standby_gateway is not None:
                standby.add_metric(
                    [conn, _label(row.hot_standby_gateway)],
                    1.0 if row.hot_standby_phase == "up" else 0.0,
                )
            draining.add_metric([conn], 0.0 if row.draining_gateway is None else 1.0)
            if row.draining_gateway is not None and row.draining_in is not None:
                drain_left.add_metric([conn, _label(row.draining_gateway)], row.draining_in)
        yield from (tunnel, active, phase, held, failures, gateways, standby, draining, drain_left)


class _EventMetrics:
    """Metrics counted from the daemon's published events, as they happen."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.failovers = Counter(
            "extsock_failovers",
            "completed failovers and switches, by reason",
            ["connection", "reason"],
            registry=registry,
        )
        self.last_duration = Gauge(
            "extsock_last_failover_duration_seconds",
            "seconds from the failure's detection (or the switch's start) to the tunnel up",
            ["connection"],
            registry=registry,
        )
        self.last_outage = Gauge(
            "extsock_last_failover_outage_seconds",
            "seconds from the last sign of life on the old gateway to the tunnel up on the new "
            "one (failovers the tunnel monitor detected: it alone sees the traffic)",
            ["connection"],
            registry=registry,
        )
        self.detection_to_up = Histogram(
            "extsock_failover_detection_to_up_seconds",
            "seconds from detecting a gateway failure to the tunnel up on another gateway",
            ["connection"],
            buckets=DETECTION_BUCKETS,
            registry=registry,
        )
        self.outage = Histogram(
            "extsock_failover_outage_seconds",
            "seconds from the last sign of life on the old gateway to the tunnel up on the new "
            "one, for each failover that knows it (the tunnel monitor's)",
            ["connection"],
            buckets=DETECTION_BUCKETS,
            registry=registry,
        )
        self.gave_up = Counter(
            "extsock_gave_up", "times a connection gave up", ["connection"], registry=registry
        )
        self.switch_failed = Counter(
            "extsock_switch_failed",
            "make-before-break switches that failed",
            ["connection", "reason"],
            registry=registry,
        )
        self.reconnects = Counter(
            "extsock_vici_reconnects", "times charon came back over VICI", registry=registry
        )
        self.charon_lost = Counter(
            "extsock_charon_lost", "times charon became unreachable", registry=registry
        )
        self._known: set[str] = set()  # connections whose series are there (at 0 or more)
        self.published = Counter(
            "extsock_published_events",
            "events published by the daemon",
            ["event"],
            registry=registry,
        )

    def on_notice(self, notice: Notice) -> None:
        """The publisher's subscriber: counts the notice by its event fields."""
        self.on_event(notice.kind, notice_fields(notice))

    def on_event(self, kind: str, fields: Mapping[str, Any]) -> None:
        self.published.labels(_label(kind)).inc()
        conn = _label(fields.get("connection"))
        reason = _label(fields.get("reason") or "unknown")
        if fields.get("connection") is not None and conn not in self._known:
            self._known.add(conn)
            # A connection's series exist at 0 from its first event on: Prometheus's
            # increase() sees no rise in a series whose first sample is already 1, so the
            # first failover (or give-up) would vanish from rates, alerts and dashboards.
            self.detection_to_up.labels(conn)
            self.outage.labels(conn)
            self.gave_up.labels(conn)
        if kind == "failover":
            self.failovers.labels(conn, reason).inc()
            duration = fields.get("duration")
            if isinstance(duration, int | float):
                self.last_duration.labels(conn).set(float(duration))
                if reason not in PLANNED_REASONS:
                    self.detection_to_up.labels(conn).observe(float(duration))
            outage = fields.get("outage")
            if isinstance(outage, int | float):
                self.last_outage.labels(conn).set(float(outage))
                self.outage.labels(conn).observe(float(outage))
        elif kind == "gave-up":
            self.gave_up.labels(conn).inc()
        elif kind == "switch-failed":
            self.switch_failed.labels(conn, reason).inc()
        elif kind == "charon-back":
            self.reconnects.inc()
        elif kind == "charon-lost":
            self.charon_lost.inc()


class _Handler(BaseHTTPRequestHandler):
    """One request per connection (`Connection: close`): a worker is never held by a
    client's keep-alive."""

    server: _Listener  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, generate_latest(owner.registry))
        elif path == "/health":
            verdict = owner.health()
            code = 200 if verdict["healthy"] else 503
            body = json.dumps(verdict, sort_keys=True).encode() + b"\n"
            self._reply(code, "application/json", body)
        elif path == "/":
            text = b"extsock: /metrics (Prometheus), /health (200 healthy, 503 not)\n"
            self._reply(200, "text/plain; charset=utf-8", text)
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics or /health\n")

    def _reply(self, code: int, content_type: str, body: bytes) -> None:
        self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), (format % args)[:200])


class _Listener:
    """Accepts on one thread with a selector; a connection goes to one of WORKERS threads
    only once its request has begun to arrive. Idle connections cost a file descriptor,
    never a thread; past MAX_CONNECTIONS the oldest waiting one is closed, and one that
    sends nothing for HEADER_TIMEOUT is closed."""

    def __init__(self, owner: MetricsServer, sock: socket.socket) -> None:
        self.owner = owner
        self.sock = sock
        self.server_address = sock.getsockname()
        self._waiting: dict[socket.socket, float] = {}  # accepted, request not begun: since
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="metrics-worker")
        self._wake = socket.socketpair()
        self._closing = False
        self.dropped = 0

    def serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            self.sock.setblocking(False)
            selector.register(self.sock, selectors.EVENT_READ)
            selector.register(self._wake[0], selectors.EVENT_READ)
            while not self._closing:
                for key, _ in selector.select(timeout=0.5):
                    if key.fileobj is self._wake[0]:
                        return self._drop_all(selector)
                    if key.fileobj is self.sock:
                        self._accept(selector)
                    else:
                        conn = key.fileobj
                        assert isinstance(conn, socket.socket)
                        selector.unregister(conn)
                        del self._waiting[conn]
                        self._hand_over(conn)
                self._expire(selector, time.monotonic())
        return None

    def _accept(self, selector: selectors.BaseSelector) -> None:
        for _ in range(64):  # a burst is taken in one go, bounded
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("metrics: accept failed: %s", exc)
                return
            if len(self._waiting) + self._busy >= MAX_CONNECTIONS and self._waiting:
                oldest = min(self._waiting, key=self._waiting.__getitem__)
                self._close(selector, oldest)
                self.dropped += 1
            if len(self._waiting) + self._busy >= MAX_CONNECTIONS:
                conn.close()  # every slot is at work: this one must come back
                self.dropped += 1
                continue
            conn.setblocking(False)
            self._waiting[conn] = time.monotonic()
            selector.register(conn, selectors.EVENT_READ)

    def _expire(self, selector: selectors.BaseSelector, now: float) -> None:
        for conn, since in list(self._waiting.items()):
            if now - since >= HEADER_TIMEOUT:
                self._close(selector, conn)
                self.dropped += 1

    def _close(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn)
        self._waiting.pop(conn, None)
        conn.close()

    def _drop_all(self, selector: selectors.BaseSelector) -> None:
        for conn in list(self._waiting):
            self._close(selector, conn)

    def _hand_over(self, conn: socket.socket) -> None:
        with self._busy_lock:
            self._busy += 1
        try:
            self._pool.submit(self._answer, conn)
        except RuntimeError:  # the pool is shut down: closing
            self._done(conn)

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(True)
            _Handler(conn, conn.getpeername(), self)  # type: ignore[arg-type]
        except OSError as exc:  # the client left mid-request or mid-answer: nothing to do
            log.debug("metrics: client gone: %s", exc)
        except Exception as exc:  # one line, never a traceback on stderr
            log.warning("metrics: request failed: %s", str(exc)[:200])
        finally:
            self._done(conn)

    def _done(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()
        with self._busy_lock:
            self._busy -= 1

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._wake[1].send(b"x")

    def release(self) -> None:
        """After the serving thread ended: the pool, the listening socket, the wake pair."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.sock.close()
        for end in self._wake:
            end.close()

    @property
    def connections(self) -> int:
        return len(self._waiting) + self._busy


class MetricsServer:
    """`/metrics` and `/health` over HTTP: one selector thread and WORKERS worker threads."""

    def __init__(
        self,
        operator: OperatorPort,
        publisher: object,
        address: str = DEFAULT_ADDRESS,
        timeout: float = 2.0,
    ):
        self.host, self._port = parse_address(address)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(operator, timeout))
        self.events = _EventMetrics(self.registry)
        self.operator = operator
        self._timeout = timeout
        if not isinstance(publisher, Subscribable):
            raise TypeError("the daemon's publisher must offer subscribe() (a Broadcast)")
        self._publisher: Subscribable = publisher
        self._unsubscribe: Callable[[], None] | None = None
        self._http: _Listener | None = None
        self._thread: threading.Thread | None = None

    def health(self) -> dict[str, Any]:
        try:
            return health_json(self.operator.health(self._timeout))
        except Exception as exc:  # the health check answers, whatever broke
            return {"healthy": False, "reasons": [f"health check failed: {exc}"]}

    @property
    def port(self) -> int:
        """The bound port (useful when the address asked for port 0)."""
        return int(self._http.server_address[1]) if self._http is not None else self._port

    @property
    def url(self) -> str:
        host = self.host or "0.0.0.0"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def connections(self) -> int:
        """Client connections held now (waiting for their request, or being answered)."""
        return self._http.connections if self._http is not None else 0

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            hint = ""
            if exc.errno == errno.EACCES and 0 < self._port < 1024:
                hint = (
                    " (a port below 1024 needs CAP_NET_BIND_SERVICE; under systemd add it to"
                    " CapabilityBoundingSet= and AmbientCapabilities=, or use a port >= 1024)"
                )
            elif exc.errno in (errno.EAFNOSUPPORT, errno.EPERM):
                hint = " (under systemd: check RestrictAddressFamilies= and SystemCallFilter=)"
            raise OSError(
                exc.errno,
                f"cannot listen for metrics on {self.host}:{self._port}: {exc.strerror}{hint}",
            ) from None
        return sock

    def start(self) -> None:
        http = _Listener(self, self._bind())
        self._http = http
        self._unsubscribe = self._publisher.subscribe(self.events.on_notice)
        self._thread = threading.Thread(target=http.serve, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics and health on %s", self.url)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._http is not None:
            self._http.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._http is not None:
            self._http.release()
            self._http = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach_metrics(
    operator: OperatorPort, publisher: object, address: str = DEFAULT_ADDRESS
) -> MetricsServer:
    """A metrics server for the daemon behind `operator` on `address`, counting what
    `publisher` publishes; call start() (and close() at the end)."""
    return MetricsServer(operator, publisher, address)
