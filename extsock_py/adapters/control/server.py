"""The daemon side of the control socket: a unix socket served by threads.

One thread accepts; each client has a thread that reads its requests one line at a time
and answers each before reading the next. A subscriber gets one more thread that writes
its events from a bounded queue, so the daemon, which publishes on its main loop, only
ever appends to a queue: a subscriber that does not read loses events (counted, and
reported as a `missed` event once it reads again) and never slows the daemon down.

Nothing a client sends reaches the daemon unchecked: a line longer than MAX_REQUEST is
refused and skipped up to the next newline, bad JSON or an unknown command gets an error
response, and the connection stays usable.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import selectors
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from extsock_py.adapters.control import protocol as p
from extsock_py.adapters.control.pushed import profile_from_request
from extsock_py.domain.errors import ExtsockError
from extsock_py.interfaces.ports import StateStore
from extsock_py.usecases.operator import DEFAULT_TIMEOUT, OperatorUsecase

if TYPE_CHECKING:
    from extsock_py.daemon import Daemon

log = logging.getLogger("extsock.control")

Unsubscribe = Callable[[], None]


@runtime_checkable
class Subscribable(Protocol):
    def subscribe(self, subscriber: Callable[[str, Mapping[str, Any]], None]) -> Unsubscribe: ...


class ControlSocketError(ExtsockError):
    """The control socket cannot be set up (path in use, permissions, unknown owner)."""


# --- subscriptions ------------------------------------------------------------------------


class _Subscription:
    """A bounded queue of events for one subscriber; drops are counted, not blocked on."""

    def __init__(self, kinds: frozenset[str] | None, capacity: int) -> None:
        self._kinds = kinds
        self._capacity = capacity
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, Mapping[str, Any], float] | int] = deque()
        self._missed = 0
        self._closed = False
        self.dropped_total = 0

    def offer(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Called by the publisher (on the daemon's main loop): never blocks."""
        if kind not in p.EVENT_KINDS or (self._kinds is not None and kind not in self._kinds):
            return
        stamp = time.time()
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self._capacity:
                self._missed += 1
                self.dropped_total += 1
                return
            if self._missed:
                self._queue.append(self._missed)  # the gap, where it happened
                self._missed = 0
            self._queue.append((kind, dict(fields), stamp))
            self._cond.notify()

    def next_line(self) -> bytes | None:
        """The next event line to send (waits for one); None once closed."""
        with self._cond:
            while not self._queue and not self._missed and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if self._queue:
                item = self._queue.popleft()
            else:
                item, self._missed = self._missed, 0
        if isinstance(item, int):
            return p.encode_line(p.missed_event(item, time.time()))
        kind, fields, stamp = item
        event = p.encode_event(kind, fields, stamp)
        return p.encode_line(event) if event is not None else b""

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()


# --- one client ---------------------------------------------------------------------------


class _Client:
    def __init__(self, server: ControlServer, sock: socket.socket, number: int) -> None:
        self._server = server
        self._sock = sock
        self.name = f"control-client-{number}"
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._subscription: _Subscription | None = None
        self._unsubscribe: Unsubscribe | None = None
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.writer: threading.Thread | None = None

    def start(self) -> None:
        self.thread.start()

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_raw(p.encode_line(message))

    def send_raw(self, data: bytes) -> None:
        if data:
            with self._send_lock:
                self._sock.sendall(data)

    def _run(self) -> None:
        try:
            self._read_loop()
        except OSError as exc:
            if not self._closed.is_set():
                log.debug("%s: %s", self.name, exc)
        except Exception:
            log.exception("%s: unexpected error; the client is dropped", self.name)
        finally:
            self.close()

    def _read_loop(self) -> None:
        limit = self._server.max_request
        buffer = bytearray()
        skipping = False  # inside an oversized line: drop bytes up to the next newline
        while not self._closed.is_set():
            data = self._sock.recv(65536)
            if not data:
                return
            buffer += data
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    if len(buffer) > limit:
                        if not skipping:
                            self._too_large(limit)
                            skipping = True
                        buffer.clear()
                    break
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if skipping:
                    skipping = False
                    continue
                if len(line) > limit:
                    self._too_large(limit)
                    continue
                if line.strip():
                    self._handle(line)

    def _too_large(self, limit: int) -> None:
        error = p.InvalidRequest(
            f"request longer than {limit} bytes: skipped up to the next newline"
        )
        self.send(p.error_response(None, "request", error))

    def _handle(self, line: bytes) -> None:
        try:
            envelope, args = p.parse_request(line)
        except p.InvalidRequest as exc:
            self.send(p.error_response(p.request_id_of(line), p.command_of(line), exc))
            return
        try:
            if isinstance(args, p.SubscribeArgs):
                self._subscribe(envelope.id, args)
                return
            result = self._server.execute(envelope.cmd, args)
        except Exception as exc:
            if not isinstance(exc, ExtsockError):
                log.warning("%s: %s failed: %r", self.name, envelope.cmd, exc)
            self.send(p.error_response(envelope.id, envelope.cmd, exc))
            return
        self.send(p.ok_response(envelope.id, result))

    def _subscribe(self, request_id: str | int | None, args: p.SubscribeArgs) -> None:
        if self._subscription is not None:
            raise p.InvalidRequest("this connection is subscribed already")
        kinds = None
        if args.events is not None:
            unknown = sorted(set(args.events) - p.EVENT_KINDS)
            if unknown:
                known = ", ".join(sorted(p.EVENT_KINDS))
                raise p.InvalidRequest(f"unknown event kind {unknown[0]!r} (kinds: {known})")
            kinds = frozenset(args.events)
        subscription = _Subscription(kinds, self._server.event_queue)
        self._subscription = subscription
        self._unsubscribe = self._server.publisher.subscribe(subscription.offer)
        self.send(p.ok_response(request_id, {"events": sorted(kinds or p.EVENT_KINDS)}))
        self.writer = threading.Thread(
            target=self._write_events, name=f"{self.name}-events", daemon=True
        )
        self.writer.start()

    def _write_events(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        try:
            while True:
                line = subscription.next_line()
                if line is None:
                    return
                self.send_raw(line)
        except OSError as exc:
            if not self._closed.is_set():
                log.debug("%s: subscriber gone: %s", self.name, exc)
        finally:
            self.close()

    @property
    def dropped(self) -> int:
        return self._subscription.dropped_total if self._subscription is not None else 0

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._subscription is not None:
            self._subscription.close()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()
        self._server.forget(self)


# --- the server ---------------------------------------------------------------------------


def _uid_of(owner: str | int | None) -> int:
    if owner is None:
        return -1
    if isinstance(owner, int) or owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ControlSocketError(f"control socket owner: no user named {owner!r}") from None


def _gid_of(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlSocketError(f"control socket group: no group named {group!r}") from None


class ControlServer:
    """Serves the control protocol on a unix socket; `start()` then, at the end, `close()`."""

    def __init__(
        self,
        daemon: Daemon,
        path: str | Path,
        store: StateStore | None = None,
        mode: int = 0o660,
        owner: str | int | None = None,
        group: str | int | None = None,
        *,
        max_clients: int = p.MAX_CLIENTS,
        max_request: int = p.MAX_REQUEST,
        event_queue: int = p.EVENT_QUEUE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        publisher = daemon.publisher
        if not isinstance(publisher, Subscribable):
            raise TypeError("the daemon's publisher must offer subscribe() (a Broadcast)")
        self.publisher: Subscribable = publisher
        self.operator = OperatorUsecase(daemon, store, timeout)
        self.path = Path(path)
        self.mode = mode
        self._uid = _uid_of(owner)
        self._gid = _gid_of(group)
        self.max_clients = max_clients
        self.max_request = max_request
        self.event_queue = event_queue
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._count = 0
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self.refused = 0

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._listener = self._bind()
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="control-accept", daemon=True)
        self._thread.start()
        log.info("control socket listening on %s (mode %o)", self.path, self.mode)

    def _bind(self) -> socket.socket:
        path = self.path
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o755)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ControlSocketError(f"{path} exists and is not a socket: remove it first")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # stale: left by a daemon that did not close it
            else:
                raise ControlSocketError(
                    f"another process is listening on {path}: is extsock running already?"
                )
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            # Permissions are set before listen(): nobody can connect in between.
            os.chmod(path, self.mode)
            if self._uid != -1 or self._gid != -1:
                os.chown(path, self._uid, self._gid)
            sock.listen(socket.SOMAXCONN)  # a burst of clients waits, not refused
        except PermissionError as exc:
            sock.close()
            raise ControlSocketError(f"cannot set up {path}: {exc.strerror}") from None
        except BaseException:
            sock.close()
            raise
        self._inode = path.stat().st_ino
        return sock

    def close(self) -> None:
        """Stop accepting, drop every client and remove the socket file."""
        if self._closing:
            return
        self._closing = True
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()
        for client in clients:
            for thread in (client.thread, client.writer):
                if thread is not None and thread is not threading.current_thread():
                    thread.join(timeout=2)
        if self._wake is not None:
            for end in self._wake:
                end.close()
        log.info("control socket %s closed", self.path)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- clients ------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._listener is not None and self._wake is not None
        wake = self._wake[0]
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._closing:
                for key, _ in selector.select():
                    if key.fileobj is wake:
                        return
                    try:
                        sock, _ = self._listener.accept()
                    except OSError as exc:
                        log.warning("control socket: accept failed: %s", exc)
                        continue
                    self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        with self._lock:
            full = len(self._clients) >= self.max_clients
            if not full:
                self._count += 1
                client = _Client(self, sock, self._count)
                self._clients.add(client)
        if full:
            self.refused += 1
            log.warning("control socket: refused a client, %d are connected", self.max_clients)
            error = p.TooManyClients(
                f"the daemon serves {self.max_clients} clients already: try again later"
            )
            with contextlib.suppress(OSError):
                sock.settimeout(1.0)
                sock.sendall(p.encode_line(p.error_response(None, "connect", error)))
            sock.close()
            return
        client.start()

    def forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def clients_snapshot(self) -> Iterable[_Client]:
        with self._lock:
            return list(self._clients)

    # --- commands -----------------------------------------------------------------------

    def execute(self, cmd: str, args: Any) -> Any:
        """Run one command (other than subscribe) and return its result."""
        op = self.operator
        match args:
            case p.StatusArgs(conn=conn):
                return op.status(conn)
            case p.HistoryArgs(conn=conn, since=since, limit=limit):
                return op.history(conn, since, limit)
            case p.SwitchArgs(conn=conn, to=to):
                return op.switch(conn, to)
            case p.LoadArgs(conn=conn, body=body, policy=policy):
                return op.load(profile_from_request(conn, body, policy))
            case p.ConnArgs(conn=conn):
                action: Callable[[str], Any] = {
                    "hold": op.hold,
                    "release": op.release,
                    "retry": op.retry,
                    "terminate": op.terminate,
                    "unload": op.unload,
                }[cmd]
                return action(conn)
        if cmd == "reload":
            return op.reload()
        if cmd == "health":
            return op.health()
        if cmd == "ping":
            return {"pong": True, "v": p.VERSION}
        raise p.UnknownCommand(f"unknown command '{cmd}'")


def attach_control(
    daemon: Daemon,
    path: str | Path = p.DEFAULT_SOCKET,
    store: StateStore | None = None,
    mode: int = 0o660,
    owner: str | int | None = None,
    group: str | int | None = None,
) -> ControlServer:
    """A control server for `daemon` on `path`; call start() (and close() at the end)."""
    return ControlServer(daemon, path, store, mode, owner, group)
