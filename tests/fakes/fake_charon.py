"""A fake charon speaking the real VICI wire protocol on a unix socket, for unit tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vici.protocol import FiniteStream, Message, Packet, Transport

from tests.fakes import charon_messages as cm

STREAM_EVENTS = {"list-sa", "list-conn", "list-policy", "list-cert", "list-authority"}
EVENTS_598 = {
    "log",
    "control-log",
    "ike-updown",
    "ike-rekey",
    "ike-update",
    "child-updown",
    "child-rekey",
} | STREAM_EVENTS
LIST_OPTIONS = {"local_addrs", "remote_addrs", "proposals", "vips", "pools"}
CHILD_LIST_OPTIONS = {"local_ts", "remote_ts", "esp_proposals", "ah_proposals"}

Handler = Callable[["FakeCharon", "Client", dict[str, Any]], "dict[str, Any] | None"]
OnInitiate = Callable[["FakeCharon", dict[str, Any]], None]


@dataclass(frozen=True)
class Received:
    """A command the fake received, decoded (values stay as sent: bytes, lists, sections)."""

    command: str
    message: dict[str, Any]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Client:
    """One connected VICI client: its socket, registrations and a send lock."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.transport = Transport(sock)
        self.events: set[str] = set()
        self.lock = threading.Lock()

    def send(self, kind: int, name: str | bytes | None = None, payload: bytes = b"") -> None:
        if name is None:
            head = struct.pack("!B", kind)
        else:
            raw = name.encode() if isinstance(name, str) else name
            head = struct.pack("!BB", kind, len(raw)) + raw
        with self.lock:
            self.transport.send(head + payload)

    def send_message(self, kind: int, name: str | None, message: dict[str, Any]) -> None:
        self.send(kind, name, Message.serialize(message))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class FakeCharon:
    """charon 5.9.8 as far as extsock needs it; use as a context manager and connect to `.uri`."""

    def __init__(self, *, version: str = "5.9.8", alert_supported: bool = False) -> None:
        self.version = version
        self.known_events = set(EVENTS_598) | ({"alert"} if alert_supported else set())
        self.conns: dict[str, dict[str, Any]] = {}
        self.certs: list[dict[str, Any]] = []
        self.keys: dict[str, dict[str, Any]] = {}
        self.shared: dict[str, dict[str, Any]] = {}
        self.authorities: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, dict[str, Any]] = {}
        self.sas: dict[int, tuple[str, OrderedDict[str, Any]]] = {}
        self.silent: set[str] = set()
        self.on_initiate: OnInitiate | None = None
        self.on_register: Callable[[FakeCharon, str], None] | None = None
        """Called before confirming a registration (to push events mid-registration)."""
        self.fail: dict[str, str] = {}
        self.received: list[Received] = []
        self.registrations: list[tuple[str, str]] = []
        self._next_id = 1
        self._dir = ""
        self._cond = threading.Condition()
        self._clients: list[Client] = []
        self._server: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._running = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return os.path.join(self._dir, "charon.vici")

    @property
    def uri(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> FakeCharon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def start(self) -> None:
        """Listen on the unix socket (again, after stop(), at the same path)."""
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="fake-charon-")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(8)
        server.settimeout(0.02)
        self._server = server
        self._running.set()
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    def stop(self) -> None:
        """charon exits: the socket disappears and every client is disconnected."""
        self._running.clear()
        if self._accept_thread is not None:
            self._accept_thread.join(1.0)
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.close_clients()

    def restart(self, keep_state: bool = False) -> None:
        """stop() then start(); a real restart forgets connections and SAs."""
        self.stop()
        if not keep_state:
            self.conns.clear()
            for store in (self.certs, self.keys, self.shared, self.authorities, self.pools):
                store.clear()
            self.sas.clear()
        self.start()

    def close_clients(self) -> None:
        """Disconnect every client (charon died or dropped them)."""
        with self._cond:
            clients, self._clients = self._clients, []
            self._cond.notify_all()
        for client in clients:
            client.close()

    def _accept(self) -> None:
        server = self._server
        assert server is not None
        while self._running.is_set():
            try:
                sock, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            client = Client(sock)
            with self._cond:
                self._clients.append(client)
                self._cond.notify_all()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    # -- protocol --------------------------------------------------------------------------

    def _serve(self, client: Client) -> None:
        try:
            while True:
                stream = FiniteStream(client.transport.receive())
                kind, length = struct.unpack("!BB", stream.read(2))
                name = stream.read(length).decode()
                rest = stream.read()
                message = dict(Message.deserialize(FiniteStream(rest))) if rest else {}
                if kind == Packet.CMD_REQUEST:
                    self._command(client, name, message)
                elif kind == Packet.EVENT_REGISTER:
                    self._register(client, name, True)
                elif kind == Packet.EVENT_UNREGISTER:
                    self._register(client, name, False)
        except (OSError, struct.error):
            pass
        finally:
            with self._cond:
                if client in self._clients:
                    self._clients.remove(client)
                self._cond.notify_all()
            client.close()

    def _register(self, client: Client, name: str, register: bool) -> None:
        ok = name in self.known_events and (register or name in client.events)
        if ok:
            if register:
                client.events.add(name)
            else:
                client.events.discard(name)
        with self._cond:
            self.registrations.append((("+" if register else "-"), name))
            self._cond.notify_all()
        if self.on_register is not None and register:
            self.on_register(self, name)
        client.send(Packet.EVENT_CONFIRM if ok else Packet.EVENT_UNKNOWN)

    def _command(self, client: Client, name: str, message: dict[str, Any]) -> None:
        with self._cond:
            self.received.append(Received(name, message))
            self._cond.notify_all()
        handler = _HANDLERS.get(name)
        if handler is None:
            client.send(Packet.CMD_UNKNOWN)
            return
        if name in self.fail:
            response: dict[str, Any] | None = {"success": "no", "errmsg": self.fail[name]}
        else:
            response = handler(self, client, message)
        client.send_message(Packet.CMD_RESPONSE, None, response or {})
        if name == "initiate" and response is not None and response.get("success") == "yes":
            self._after_initiate(message)

    # -- test controls ---------------------------------------------------------------------

    def emit(self, name: str, message: dict[str, Any]) -> int:
        """Send an event to every client registered for it; return how many got it."""
        return self.emit_raw(name.encode(), Message.serialize(message), name)

    def emit_raw(self, name: bytes, payload: bytes, registered_as: str | None = None) -> int:
        """Send raw event bytes (for malformed messages) to clients registered for the event."""
        event = registered_as or name.decode(errors="replace")
        with self._cond:
            clients = [c for c in self._clients if event in c.events]
        for client in clients:
            with contextlib.suppress(OSError):
                client.send(Packet.EVENT, name, payload)
        return len(clients)

    def emit_log(
        self,
        msg: str,
        *,
        ike_name: str | None = None,
        ike_id: int | None = None,
        level: int = 1,
        group: str = "IKE",
    ) -> int:
        return self.emit(
            "log", cm.log(msg, group=group, level=level, ike_name=ike_name, ike_id=ike_id)
        )

    def retransmit(self, ike_id: int, count: int) -> int:
        """Emit charon's `retransmit N of request with message ID 0` for a half-open IKE_SA."""
        name = self.sas[ike_id][0]
        return self.emit_log(
            f"retransmit {count} of request with message ID 0", ike_name=name, ike_id=ike_id
        )

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 1.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_registered(self, event: str, clients: int = 1, timeout: float = 1.0) -> bool:
        """Wait until `clients` connected clients are registered for `event`."""
        return self.wait_for(
            lambda: sum(event in c.events for c in self._clients) >= clients, timeout
        )

    def commands(self, name: str | None = None) -> list[Received]:
        with self._cond:
            return [r for r in self.received if name is None or r.command == name]

    @property
    def client_count(self) -> int:
        with self._cond:
            return len(self._clients)

    def add_sa(
        self,
        conn: str,
        state: str = "ESTABLISHED",
        *,
        remote_host: str | None = None,
        children: list[str] | None = None,
        bytes_in: int = 0,
        packets_in: int = 0,
        bytes_out: int = 0,
        packets_out: int = 0,
    ) -> int:
        """Put an IKE_SA (and CHILD_SAs named `children`) into list-sas; return its unique id."""
        uid = self._next_id
        self._next_id += 1
        body = self.conns.get(conn, {})
        remote = remote_host or _first(body.get("remote_addrs"), "10.99.1.2")
        local = _first(body.get("local_addrs"), "10.99.0.1")
        kids = [
            cm.child_sa(
                c,
                uid,
                "INSTALLED",
                bytes_in=bytes_in,
                packets_in=packets_in,
                bytes_out=bytes_out,
                packets_out=packets_out,
            )
            for c in children or []
        ]
        sa = cm.ike_sa(uid, state, local_host=local, remote_host=remote, children=kids)
        self.sas[uid] = (conn, sa)
        return uid

    def _after_initiate(self, message: dict[str, Any]) -> None:
        if self.on_initiate is not None:
            self.on_initiate(self, message)
            return
        ike = _text(message.get("ike", b""))
        child = _text(message["child"]) if "child" in message else None
        remote = _first(self.conns.get(ike, {}).get("remote_addrs"), "10.99.1.2")
        if remote in self.silent:
            uid = self.add_sa(ike, "CONNECTING")
            self.emit_log(
                f"initiating IKE_SA {ike}[{uid}] to {remote}", ike_name=ike, ike_id=uid, level=0
            )
            return
        self.establish(ike, child)

    def establish(self, ike: str, child: str | None) -> int:
        """What charon emits when a responsive gateway answers: ike-updown, child-updown up."""
        uid = self.add_sa(ike, "ESTABLISHED", children=[child] if child else [])
        _, sa = self.sas[uid]
        remote = _text(sa["remote-host"])
        self.emit_log(
            f"initiating IKE_SA {ike}[{uid}] to {remote}", ike_name=ike, ike_id=uid, level=0
        )
        no_children = OrderedDict((k, v) for k, v in sa.items() if k != "child-sas")
        self.emit("ike-updown", cm.ike_updown(ike, no_children, up=True))
        for kid in sa["child-sas"].values():
            self.emit("child-updown", cm.child_updown(ike, no_children, kid, up=True))
        return uid


def _first(value: Any, default: str) -> str:
    if isinstance(value, list) and value:
        return _text(value[0])
    return default


# -- command handlers --------------------------------------------------------------------------


def _ok(**extra: Any) -> dict[str, Any]:
    return {"success": "yes", **extra}


def _no(errmsg: str, **extra: Any) -> dict[str, Any]:
    return {"success": "no", "errmsg": errmsg, **extra}


def _version(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    return {
        "daemon": "charon",
        "version": fake.version,
        "sysname": "Linux",
        "release": "6.1.0",
        "machine": "x86_64",
    }


def _stats(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    half_open = sum(sa["state"] == b"CONNECTING" for _, sa in fake.sas.values())
    return {
        "uptime": {"running": "1 minute", "since": "Nov 23 19:33:00 2025"},
        "workers": {
            "total": 16,
            "idle": 11,
            "active": {"critical": 4, "high": 0, "medium": 1, "low": 0},
        },
        "queues": {"critical": 0, "high": 0, "medium": 0, "low": 0},
        "scheduled": 2,
        "ikesas": {"total": len(fake.sas), "half-open": half_open},
        "plugins": ["random", "nonce", "vici"],
    }


def _load_conn(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    for name, body in msg.items():
        if not isinstance(body, dict):
            return _no(f"invalid section: {name}, config discarded")
        for key in LIST_OPTIONS & body.keys():
            if not isinstance(body[key], list):
                return _no(f"unknown option: {key}, config discarded")
        for child in body.get("children", {}).values():
            for key in CHILD_LIST_OPTIONS & child.keys():
                if not isinstance(child[key], list):
                    return _no(f"unknown option: {key}, config discarded")
        fake.conns[name] = body
    return _ok()


def _unload_conn(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    if "name" not in msg:
        return _no("unload: missing connection name")
    name = _text(msg["name"])
    if fake.conns.pop(name, None) is None:
        return _no(f"unload: connection '{name}' not found")
    return _ok()


def _get_conns(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    return {"conns": list(fake.conns)}


def _stream(client: Client, event: str, message: dict[str, Any]) -> None:
    if event in client.events:
        client.send_message(Packet.EVENT, event, message)


def _list_conns(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    only = _text(msg["ike"]) if "ike" in msg else None
    for name, body in list(fake.conns.items()):
        if only is None or only == name:
            _stream(client, "list-conn", {name: body})
    return {}


def _list_sas(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    ike = _text(msg["ike"]) if "ike" in msg else None
    ike_id = int(msg["ike-id"]) if "ike-id" in msg else None
    for uid, (name, sa) in list(fake.sas.items()):
        if (ike is None or ike == name) and (ike_id is None or ike_id == uid):
            _stream(client, "list-sa", cm.list_sa(name, sa))
    return {}


def _initiate(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    ike = _text(msg["ike"]) if "ike" in msg else None
    child = _text(msg["child"]) if "child" in msg else None
    if ike is None and child is None:
        return _no("missing configuration name")
    body = fake.conns.get(ike or "")
    if child is not None and (body is None or child not in body.get("children", {})):
        return _no(f"CHILD_SA config '{child}' not found")
    if body is None:
        return _no(f"IKE_SA config '{ike}' not found")
    return _ok()


def _terminate(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    ike = _text(msg["ike"]) if "ike" in msg else None
    ike_id = int(msg["ike-id"]) if "ike-id" in msg else None
    if ike is None and ike_id is None:
        return _no("missing terminate selector")
    hits = [uid for uid, (name, _) in fake.sas.items() if name == ike or uid == ike_id]
    for uid in hits:
        name, sa = fake.sas.pop(uid)
        if sa["state"] == b"ESTABLISHED":
            no_children = OrderedDict((k, v) for k, v in sa.items() if k != "child-sas")
            for kid in sa.get("child-sas", {}).values():
                fake.emit("child-updown", cm.child_updown(name, no_children, kid, up=False))
            fake.emit("ike-updown", cm.ike_updown(name, no_children, up=False))
    if not hits:
        return _no("no matching SAs to terminate found", matches=0, terminated=0)
    return _ok(matches=len(hits), terminated=len(hits))


def _load_cert(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    if "type" not in msg or "data" not in msg:
        return _no("certificate type or data missing")
    fake.certs.append(msg)
    return _ok()


def _load_key(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    if "type" not in msg or "data" not in msg:
        return _no("key type or data missing")
    # charon answers the key's id (its public key's SHA-1); the data's hash stands in for it
    key_id = hashlib.sha1(bytes(msg["data"])).hexdigest()
    fake.keys[key_id] = msg
    return _ok(id=key_id)


def _load_shared(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    if "type" not in msg or "data" not in msg:
        return _no("shared key type or data missing")
    key = _text(msg["id"]) if "id" in msg else f"%unnamed-{len(fake.shared)}"
    fake.shared[key] = msg
    return _ok()


def _clear_creds(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    for store in (fake.certs, fake.keys, fake.shared):
        store.clear()
    return _ok()


def _named_load(store: str) -> Handler:
    def load(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        for name, body in msg.items():
            if not isinstance(body, dict):
                return _no(f"invalid section: {name}")
            getattr(fake, store)[name] = body
        return _ok()

    return load


def _unload(store: str, field: str) -> Handler:
    def unload(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        name = _text(msg.get(field, b""))
        if getattr(fake, store).pop(name, None) is None:
            return _no(f"'{name}' not found")
        return _ok()

    return unload


def _listing(store: str, key: str) -> Handler:
    def listing(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
        return {key: list(getattr(fake, store))}

    return listing


def _get_pools(fake: FakeCharon, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    return {name: {"base": "0.0.0.0", "size": 0, "online": 0, "offline": 0} for name in fake.pools}


_HANDLERS: dict[str, Handler] = {
    "version": _version,
    "stats": _stats,
    "load-conn": _load_conn,
    "unload-conn": _unload_conn,
    "get-conns": _get_conns,
    "list-conns": _list_conns,
    "list-sas": _list_sas,
    "initiate": _initiate,
    "terminate": _terminate,
    "load-cert": _load_cert,
    "clear-creds": _clear_creds,
    "load-key": _load_key,
    "unload-key": _unload("keys", "id"),
    "get-keys": _listing("keys", "keys"),
    "load-shared": _load_shared,
    "unload-shared": _unload("shared", "id"),
    "get-shared": _listing("shared", "keys"),
    "load-authority": _named_load("authorities"),
    "unload-authority": _unload("authorities", "name"),
    "get-authorities": _listing("authorities", "authorities"),
    "load-pool": _named_load("pools"),
    "unload-pool": _unload("pools", "name"),
    "get-pools": _get_pools,
}
