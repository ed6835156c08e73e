"""The daemon side of the control socket: a unix socket served by threads.

One thread accepts; each client has a thread that reads its requests one line at a time
and answers each before reading the next. A subscriber gets one more thread that writes
its events from a bounded queue, so the daemon, which publishes on its main loop, only
ever appends to a queue: a subscriber that does not read loses events (counted, and
reported as a `missed` event once it reads again) and never slows the daemon down.

Nothing a client sends reaches the daemon unchecked: a line longer than MAX_REQUEST is
refused and skipped up to the next newline, bad JSON or an unknown command gets an error
response, and the connection stays usable.

Who may do what is the kernel's word (SO_PEERCRED: uid, and the groups of the peer's
process), checked against the policy's `control` section on every request. What one
client can hold is bounded: connections per uid, a slot kept for root, an idle timeout for
connections that ask nothing, a send timeout and a byte budget for subscribers, and a log
budget, so that no client fills the daemon's log either.
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
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from extsock_py.adapters import reports_json as j
from extsock_py.adapters.control import protocol as p
from extsock_py.adapters.control.pushed import profile_from_request
from extsock_py.adapters.publisher import notice_fields
from extsock_py.domain.access import ControlAccess, Peer, Role, role_needed
from extsock_py.domain.errors import ExtsockError
from extsock_py.domain.notices import Notice
from extsock_py.domain.reports import ChangeResult
from extsock_py.interfaces.operator import OperatorPort
from extsock_py.interfaces.ports import Subscribable, Unsubscribe

log = logging.getLogger("extsock.control")

_REAP_EVERY = 1.0  # seconds between looks for idle clients


class ControlSocketError(ExtsockError):
    """The control socket cannot be set up (path in use, permissions, unknown owner)."""


# --- subscriptions ------------------------------------------------------------------------


def _encode(kind: str, fields: Mapping[str, Any]) -> bytes | None:
    event = p.encode_event(kind, fields, time.time())
    return None if event is None else p.encode_line(event)


class EventLines:
    """Each published notice as its event line, encoded once for all subscribers: the
    first subscriber that wants it encodes it, the others take the same bytes. The
    publisher runs on the main loop, one notice at a time: the last one is the one kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notice: Notice | None = None  # held, so that `is` cannot match a new one
        self._line: bytes | None = None
        self.encoded = 0

    def line(self, notice: Notice) -> bytes | None:
        with self._lock:
            if self._notice is not notice:
                self._line = _encode(notice.kind, notice_fields(notice))
                self._notice = notice
                self.encoded += 1
            return self._line


class _Subscription:
    """A bounded queue of events for one subscriber; drops are counted, not blocked on.

    Bounded twice: in events (`capacity`) and in bytes (`budget`, the encoded lines
    waiting), so a few large events cannot hold more memory than many small ones."""

    def __init__(
        self,
        kinds: frozenset[str] | None,
        capacity: int,
        budget: int = p.SUBSCRIBER_BYTES,
        lines: EventLines | None = None,
    ) -> None:
        self._lines = lines if lines is not None else EventLines()
        self._kinds = kinds
        self._capacity = capacity
        self._budget = budget
        self._cond = threading.Condition()
        self._queue: deque[bytes | int] = deque()
        self._missed = 0
        self._closed = False
        self.queued_bytes = 0
        self.dropped_total = 0

    def on_notice(self, notice: Notice) -> None:
        """The publisher's subscriber: the notice's event line, shared with the others."""
        self._offer(notice.kind, lambda: self._lines.line(notice))

    def offer(self, kind: str, fields: Mapping[str, Any]) -> None:
        """An event of `kind` with `fields`, encoded for this subscriber alone."""
        self._offer(kind, lambda: _encode(kind, fields))

    def _offer(self, kind: str, line_of: Callable[[], bytes | None]) -> None:
        """Called by the publisher (on the daemon's main loop): never blocks."""
        if kind not in p.EVENT_KINDS or (self._kinds is not None and kind not in self._kinds):
            return
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self._capacity or self.queued_bytes >= self._budget:
                self._missed += 1
                self.dropped_total += 1
                return
        line = line_of()
        if line is None:
            return
        with self._cond:
            if self._closed:
                return
            if self.queued_bytes + len(line) > self._budget:
                self._missed += 1
                self.dropped_total += 1
                return
            if self._missed:
                self._queue.append(self._missed)  # the gap, where it happened
                self._missed = 0
            self._queue.append(line)
            self.queued_bytes += len(line)
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
                if isinstance(item, bytes):
                    self.queued_bytes -= len(item)
            else:
                item, self._missed = self._missed, 0
        if isinstance(item, int):
            return p.encode_line(p.missed_event(item, time.time()))
        return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self.queued_bytes = 0
            self._cond.notify_all()


class _LogBudget:
    """At most `burst` log lines per `window` seconds for one source; the rest are counted
    and told in one line when the window ends (or the source goes)."""

    def __init__(self, burst: int, window: float, clock: Callable[[], float]) -> None:
        self._burst = burst
        self._window = window
        self._clock = clock
        self._start = clock()
        self._used = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._start >= self._window:
            self._start, self._used = now, 0
            if self.suppressed:
                log.warning("... %d more such lines were suppressed", self.suppressed)
                self.suppressed = 0
        if self._used < self._burst:
            self._used += 1
            return True
        self.suppressed += 1
        return False


def peer_credentials(sock: socket.socket) -> Peer:
    """The peer of a unix socket as the kernel saw it at connect(): pid, uid, and groups
    (its process's supplementary groups, else the user's from the group database)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    groups: set[int] = {gid}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
                    break
    except (OSError, ValueError):
        with contextlib.suppress(KeyError, OSError):
            groups.update(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    return Peer(pid, uid, frozenset(groups))


# --- one client ---------------------------------------------------------------------------


class _Client:
    def __init__(self, server: ControlServer, sock: socket.socket, number: int, peer: Peer) -> None:
        self._server = server
        self._sock = sock
        self.peer = peer
        self.name = f"control-client-{number} (uid {peer.uid}, pid {peer.pid})"
        self.last_request = server.clock()
        self.logs = _LogBudget(server.log_burst, server.log_window, server.clock)
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

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None

    def _run(self) -> None:
        try:
            self._sock.settimeout(self._server.send_timeout)
            self._read_loop()
        except OSError as exc:
            if not self._closed.is_set():
                log.debug("%s: %s", self.name, exc)
        except Exception as exc:
            if self.logs.allow():
                log.warning("%s: unexpected error, the client is dropped: %s", self.name, exc)
        finally:
            self.close()

    def _read_loop(self) -> None:
        limit = self._server.max_request
        buffer = bytearray()
        skipping = False  # inside an oversized line: drop bytes up to the next newline
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue  # quiet is fine here; the server's reaper judges idleness
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
        self.last_request = self._server.clock()
        try:
            envelope, args = p.parse_request(line)
        except p.InvalidRequest as exc:
            self.send(p.error_response(p.request_id_of(line), p.command_of(line), exc))
            return
        try:
            self._server.check_role(self.peer, envelope.cmd)
            if isinstance(args, p.SubscribeArgs):
                self._subscribe(envelope.id, args)
                return
            result = self._server.execute(envelope.cmd, args, self.peer)
        except OSError:
            raise  # the client went away while being answered: nothing to tell anyone
        except Exception as exc:
            quiet = isinstance(exc, ExtsockError | p.InvalidRequest | p.NotPermitted)
            if not quiet and self.logs.allow():
                log.warning("%s: %s failed: %s", self.name, envelope.cmd, p.clip(repr(exc), 200))
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
                raise p.InvalidRequest(
                    f"unknown event kind {p.clip(unknown[0])!r} (kinds: {known})"
                )
            kinds = frozenset(args.events)
        server = self._server
        subscription = _Subscription(
            kinds, server.event_queue, server.subscriber_bytes, server.event_lines
        )
        self._subscription = subscription
        self._unsubscribe = self._server.publisher.subscribe(subscription.on_notice)
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
        except TimeoutError:
            if not self._closed.is_set() and self.logs.allow():
                log.info(
                    "%s: a subscriber that read nothing for %gs is dropped",
                    self.name,
                    self._server.send_timeout,
                )
        except OSError as exc:
            if not self._closed.is_set():
                log.debug("%s: subscriber gone: %s", self.name, exc)
        finally:
            self.close()

    def drop(self, error: Exception) -> None:
        """Tell the client why it is closed (if its socket takes the line now), then close."""
        with contextlib.suppress(OSError):
            data = p.encode_line(p.error_response(None, "connect", error))
            self._sock.send(data, socket.MSG_DONTWAIT)
        self.close()

    @property
    def queued_bytes(self) -> int:
        return self._subscription.queued_bytes if self._subscription is not None else 0

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
        if self.logs.suppressed:
            log.warning("%s: %d more log lines were suppressed", self.name, self.logs.suppressed)
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
        operator: OperatorPort,
        publisher: object,
        path: str | Path,
        mode: int = 0o660,
        owner: str | int | None = None,
        group: str | int | None = None,
        *,
        max_clients: int = p.MAX_CLIENTS,
        max_request: int = p.MAX_REQUEST,
        event_queue: int = p.EVENT_QUEUE,
        max_per_uid: int = p.MAX_CLIENTS_PER_UID,
        reserved_for_root: int = p.RESERVED_FOR_ROOT,
        idle_timeout: float = p.IDLE_TIMEOUT,
        send_timeout: float = p.SEND_TIMEOUT,
        subscriber_bytes: int = p.SUBSCRIBER_BYTES,
        access: Callable[[], ControlAccess] | None = None,
        peer_of: Callable[[socket.socket], Peer] = peer_credentials,
        clock: Callable[[], float] = time.monotonic,
        log_burst: int = 5,
        log_window: float = 60.0,
    ) -> None:
        if not isinstance(publisher, Subscribable):
            raise TypeError("the daemon's publisher must offer subscribe() (a Broadcast)")
        self.publisher: Subscribable = publisher
        self.operator = operator
        self.path = Path(path)
        self.mode = mode
        self._uid = _uid_of(owner)
        self._gid = _gid_of(group)
        self.max_clients = max_clients
        self.max_request = max_request
        self.event_queue = event_queue
        self.max_per_uid = max_per_uid
        self.reserved_for_root = reserved_for_root
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.subscriber_bytes = subscriber_bytes
        self.clock = clock
        self.log_burst = log_burst
        self.log_window = log_window
        self._access = access if access is not None else operator.control_access
        self._peer_of = peer_of
        self._own_uid = os.geteuid()
        self._refusals = _LogBudget(1, log_window, clock)
        self.event_lines = EventLines()  # shared by the subscribers: one encoding per event
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
                for key, _ in selector.select(timeout=_REAP_EVERY):
                    if key.fileobj is wake:
                        return
                    try:
                        sock, _ = self._listener.accept()
                    except OSError as exc:
                        if self._refusals.allow():
                            log.warning("control socket: accept failed: %s", exc)
                        continue
                    self._admit(sock)
                self.reap_idle()

    def _privileged(self, peer: Peer) -> bool:
        return peer.uid in (0, self._own_uid)

    def _admit(self, sock: socket.socket) -> None:
        try:
            peer = self._peer_of(sock)
        except OSError:
            sock.close()
            return
        with self._lock:
            refusal = self._refusal(peer)
            if refusal is None:
                self._count += 1
                client = _Client(self, sock, self._count, peer)
                self._clients.add(client)
        if refusal is not None:
            self.refused += 1
            if self._refusals.allow():
                log.warning("control socket: refused uid %d: %s", peer.uid, refusal)
            with contextlib.suppress(OSError):
                line = p.encode_line(p.error_response(None, "connect", p.TooManyClients(refusal)))
                sock.send(line, socket.MSG_DONTWAIT)  # a short line: the socket takes it whole
            sock.close()
            return
        client.start()

    def _refusal(self, peer: Peer) -> str | None:
        """Why `peer` gets no slot now (None: it does); called with the lock held."""
        total = len(self._clients)
        if total >= self.max_clients:
            return f"the daemon serves {self.max_clients} clients already: try again later"
        if self._privileged(peer):
            return None
        if total >= self.max_clients - self.reserved_for_root:
            return (
                f"the daemon serves {total} clients; the last {self.reserved_for_root} "
                "slots are kept for root: try again later"
            )
        mine = sum(1 for c in self._clients if c.peer.uid == peer.uid)
        if mine >= self.max_per_uid:
            return (
                f"uid {peer.uid} has {mine} connections open already, the most one uid may "
                "have: close some, or try again later"
            )
        return None

    def reap_idle(self) -> int:
        """Close the clients that asked nothing for `idle_timeout` (subscribers excepted:
        they are bounded by the send timeout); returns how many were closed."""
        now = self.clock()
        idle = [
            c
            for c in self.clients_snapshot()
            if not c.subscribed and now - c.last_request >= self.idle_timeout
        ]
        for client in idle:
            client.drop(
                p.IdleTimeout(
                    f"no request for {self.idle_timeout:g}s: closed (connect again when needed)"
                )
            )
        if idle and self._refusals.allow():
            log.info("control socket: closed %d idle clients", len(idle))
        return len(idle)

    def check_role(self, peer: Peer, command: str) -> None:
        """Raise NotPermitted unless `peer` carries the role `command` needs."""
        needed = role_needed(command)
        if needed is Role.NONE:
            return
        role = self._access().role_of(peer, self._own_uid)
        if role >= needed:
            return
        group_key = "extsock.control.operate" if needed is Role.OPERATE else "extsock.control.read"
        raise p.NotPermitted(
            f"'{command}' needs the {needed.name.lower()} role; uid {peer.uid} has "
            f"{'only the read role' if role is Role.READ else 'no role'}: add it to a group "
            f"named in {group_key} (root always operates)"
        )

    def forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)

    @property
    def admitted(self) -> int:
        """Clients admitted since start (refused ones are counted in `refused`)."""
        with self._lock:
            return self._count

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def clients_snapshot(self) -> Iterable[_Client]:
        with self._lock:
            return list(self._clients)

    # --- commands -----------------------------------------------------------------------

    def execute(self, cmd: str, args: Any, peer: Peer) -> Any:
        """Run one command (other than subscribe) for `peer` and return its result, as JSON."""
        op = self.operator
        match args:
            case p.StatusArgs(conn=conn):
                return j.status_json(op.status(conn))
            case p.HistoryArgs(conn=conn, since=since, limit=limit):
                return j.history_json(op.history(conn, since, limit))
            case p.SwitchArgs(conn=conn, to=to):
                return j.change_json(op.switch(conn, to))
            case p.LoadArgs(conn=conn, body=body, policy=policy):
                profile = profile_from_request(conn, body, policy)
                return j.load_json(op.load(profile, privileged=self._privileged(peer)))
            case p.ConnArgs(conn=conn) if cmd == "unload":
                return j.unload_json(op.unload(conn))
            case p.ConnArgs(conn=conn):
                action: Callable[[str], ChangeResult] = {
                    "hold": op.hold,
                    "release": op.release,
                    "retry": op.retry,
                    "terminate": op.terminate,
                }[cmd]
                return j.change_json(action(conn))
        if cmd == "reload":
            return j.reload_json(op.reload())
        if cmd == "health":
            return j.health_json(op.health())
        if cmd == "ping":
            return {"pong": True, "v": p.VERSION}
        raise p.UnknownCommand(f"unknown command '{p.clip(cmd)}'")


def attach_control(
    operator: OperatorPort,
    publisher: object,
    path: str | Path = p.DEFAULT_SOCKET,
    mode: int = 0o660,
    owner: str | int | None = None,
    group: str | int | None = None,
) -> ControlServer:
    """A control server for the daemon behind `operator` on `path`, streaming what
    `publisher` publishes to subscribers; call start() (and close() at the end)."""
    return ControlServer(operator, publisher, path, mode, owner, group)
