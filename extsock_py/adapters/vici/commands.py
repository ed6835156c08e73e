"""ViciCharon: the CharonPort over one VICI command session, safe to share between threads."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import vici
from vici.exception import DeserializationException, EventUnknownException, SessionException
from vici.protocol import Message, Packet

from extsock_py.adapters.vici.decode import DecodeError, parse_list_sa
from extsock_py.adapters.vici.message import deserialize
from extsock_py.adapters.vici.transport import DEFAULT_URI, open_socket
from extsock_py.domain.credentials import (
    AuthorityLoad,
    CertificateLoad,
    KeyLoad,
    PoolLoad,
    SharedLoad,
)
from extsock_py.domain.errors import CharonCommandFailed, CharonError, CharonUnreachable
from extsock_py.domain.observations import IkeSaInfo

T = TypeVar("T")
log = logging.getLogger("extsock.vici")
SessionFactory = Callable[[socket.socket], Any]
"""Makes the command session of a socket: anything with vici's `transport` (send, receive)."""
EventHook = Callable[[str, dict[str, Any]], None]
"""Called with each streamed event as it arrives, before the command's answer."""


class _UnknownCommand(Exception):
    """charon answered CMD_UNKNOWN: it does not have the command (an older release)."""


def to_vici(value: Any) -> Any:
    """Normalise a message value for vici: Mappings → dict, sequences → list, bools → yes/no."""
    if isinstance(value, Mapping):
        return {str(k): to_vici(v) for k, v in value.items()}
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, bytes | str | int):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [to_vici(v) for v in value]
    raise TypeError(f"cannot send a {type(value).__name__} to charon: {value!r}")


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _initiate_message(ike: str, child: str | None) -> dict[str, Any]:
    """`initiate` without waiting (timeout -1): charon answers once the job is queued."""
    message: dict[str, Any] = {"ike": ike}
    if child is not None:
        message["child"] = child
    message["timeout"] = -1
    return message


def terminate_message(
    ike: str | None = None, ike_id: int | None = None, child_id: int | None = None
) -> dict[str, Any]:
    """A forced `terminate` that does not wait (timeout -1), by name or unique id."""
    if ike is None and ike_id is None and child_id is None:
        raise ValueError("terminate needs ike, ike_id or child_id")
    message: dict[str, Any] = {}
    if ike is not None:
        message["ike"] = ike
    if ike_id is not None:
        message["ike-id"] = ike_id
    if child_id is not None:
        message["child-id"] = child_id
    message["force"] = True
    message["timeout"] = -1
    return message


def _answer(raw: bytes) -> dict[str, Any]:
    """One command's answer, read off a pipelined exchange (as `vici.Session.request`)."""
    return _command_answer(Packet.parse(raw))


def _command_answer(packet: Packet) -> dict[str, Any]:
    """A command's answer packet, decoded; SessionException if it is another kind."""
    if packet.response_type == Packet.CMD_UNKNOWN:
        raise _UnknownCommand(
            f"Unexpected response type {packet.response_type}, expected '1' (CMD_RESPONSE)"
        )
    if packet.response_type != Packet.CMD_RESPONSE:
        raise SessionException(
            f"Unexpected response type {packet.response_type}, expected '1' (CMD_RESPONSE)"
        )
    return deserialize(packet.payload.read())


def _confirmed(session: Any, packet: Packet, event: str) -> None:
    """Send an event (un)registration; read up to its confirmation (events before it are
    dropped, as `vici.Session` does)."""
    session.transport.send(packet)
    response = Packet.parse(session.transport.receive())
    if response.response_type == Packet.EVENT_UNKNOWN:
        raise EventUnknownException(f"Unknown event type '{event}'")
    while response.response_type == Packet.EVENT:
        response = Packet.parse(session.transport.receive())
    if response.response_type != Packet.EVENT_CONFIRM:
        raise SessionException(
            f"Unexpected response type {response.response_type}, "
            f"expected '{Packet.EVENT_CONFIRM}' (EVENT_CONFIRM)"
        )


def _request(session: Any, command: str, body: Any) -> dict[str, Any]:
    """`vici.Session.request` on the session's transport: the same packets, the answer
    decoded in place; a refusal is CharonCommandFailed with charon's errmsg."""
    payload = None if body is None else Message.serialize(body)
    session.transport.send(Packet.request(command, payload))
    return _accepted(command, _answer(session.transport.receive()))


def _streamed(
    session: Any, command: str, event: str, body: Any, on_event: EventHook | None
) -> list[dict[str, Any]]:
    """`vici.Session.streamed_request`, fully read, with the events decoded in place
    (message.deserialize): the same packets on the wire; `on_event` sees each event as it
    arrives (charon's log lines while an initiate runs). A refusal is CharonCommandFailed."""
    _confirmed(session, Packet.register_event(event), event)
    try:
        payload = None if body is None else Message.serialize(body)
        session.transport.send(Packet.request(command, payload))
        events: list[dict[str, Any]] = []
        while True:
            response = Packet.parse(session.transport.receive())
            if response.response_type != Packet.EVENT:
                break
            events.append(deserialize(response.payload.read()))
            if on_event is not None:
                on_event(event, events[-1])
        answer = _command_answer(response)
    finally:
        _confirmed(session, Packet.unregister_event(event), event)
    _accepted(command, answer)
    return events


def _succeeded(answer: Mapping[str, Any]) -> bool:
    return bool(answer.get("success", b"yes") == b"yes")


def _failure(answer: Mapping[str, Any]) -> str:
    return _text(answer.get("errmsg", b"charon gave no reason"))


def _accepted(command: str, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer, if charon did what `command` asked; else CharonCommandFailed."""
    if not _succeeded(answer):
        raise CharonCommandFailed(command, _failure(answer))
    return answer


class ViciCharon:
    """charon's commands over one `vici.Session`, serialised by a lock; connect() before use."""

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        *,
        connect_timeout: float = 2.0,
        command_timeout: float | None = 30.0,
        session_factory: SessionFactory = vici.Session,
    ) -> None:
        self.uri = uri
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._session_factory = session_factory
        self._lock = threading.Lock()
        self._session: Any = None
        self._sock: socket.socket | None = None
        self._owed = 0  # answers to requests sent by `send_quietly`, not read yet

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None

    def connect(self) -> None:
        """Open the command session (no-op if open); CharonUnreachable if charon is not there."""
        with self._lock:
            if self._session is None:
                self._open()

    def close(self) -> None:
        """Close the command session; further commands raise CharonUnreachable until connect()."""
        with self._lock:
            self._drop()

    def abort(self) -> None:
        """Break off a command under way in another thread (it then fails at once); close()
        waits for the session's lock, which that command holds until charon answers."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def reconnect(self) -> None:
        """Close and open the session again (after charon restarted)."""
        with self._lock:
            self._drop()
            self._open()

    def __enter__(self) -> ViciCharon:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        sock = open_socket(self.uri, self._connect_timeout)
        sock.settimeout(self._command_timeout)
        self._sock = sock
        self._session = self._session_factory(sock)

    def _drop(self) -> None:
        self._owed = 0
        sock, self._sock, self._session = self._sock, None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _call(self, command: str, fn: Callable[[Any], T], *, owed_first: bool = True) -> T:
        """`fn` on the session (lock held). The answers owed to quiet requests are read
        first, unless `fn` reads them itself (`owed_first=False`): after sending its own
        requests, so that they queue in charon behind the quiet ones without a round trip."""
        with self._lock:
            if self._session is None:
                raise CharonUnreachable(
                    f"{command} failed: not connected to charon at {self.uri}; call connect()"
                )
            try:
                if owed_first:
                    self._read_owed()
                return fn(self._session)
            except _UnknownCommand as exc:
                raise CharonError(
                    f"{command} failed: UnknownCommand: charon at {self.uri} does not know "
                    f"'{command}'; is the strongSwan version too old?"
                ) from exc
            except SessionException as exc:
                self._drop()
                raise CharonUnreachable(
                    f"{command} failed: SessionException: {exc}; session to {self.uri} "
                    "closed, call reconnect()"
                ) from exc
            except (OSError, DeserializationException, struct.error, ValueError) as exc:
                self._drop()
                kind = type(exc).__name__
                raise CharonUnreachable(
                    f"{command} failed: {kind}: lost charon at {self.uri} ({exc}); "
                    "check that charon runs, then call reconnect()"
                ) from exc

    def _read_owed(self) -> None:
        """The answers to quiet requests, in order, before anything else is read (lock held):
        a refusal is only logged, as the caller asked."""
        while self._owed:
            answer = _answer(self._session.transport.receive())
            self._owed -= 1
            if not _succeeded(answer):
                log.debug("ignored: a quiet request failed: %s", _failure(answer))

    def send_quietly(self, command: str, message: Mapping[str, Any]) -> None:
        """Send a request whose refusal changes nothing (a cleanup: terminate, unload) and
        go on without waiting: its answer is read before the next command's. A storm's
        cleanups then cost no round trip of their own."""

        def send(session: Any) -> None:
            session.transport.send(Packet.request(command, Message.serialize(to_vici(message))))
            self._owed += 1

        self._call(command, send)

    def settle(self) -> None:
        """Read the answers still owed (e.g. before the session idles)."""
        self._call("settle", lambda session: None)

    # -- raw commands ----------------------------------------------------------------------

    def request(self, command: str, message: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Any plain VICI command; returns charon's response as vici decoded it."""
        body = None if message is None else to_vici(message)
        return self._call(command, lambda s: _request(s, command, body))

    def streamed(
        self,
        command: str,
        event: str,
        message: Mapping[str, Any] | None = None,
        on_event: EventHook | None = None,
    ) -> list[dict[str, Any]]:
        """Any streamed VICI command; returns every streamed event, fully read, and hands
        each to `on_event` as soon as it arrives."""
        body = None if message is None else to_vici(message)
        return self._call(command, lambda s: _streamed(s, command, event, body, on_event))

    def list_conns_raw(self, ike: str | None = None) -> list[dict[str, Any]]:
        """The `list-conn` events of `list-conns`: `[{<name>: {...}}, ...]`."""
        return self.streamed("list-conns", "list-conn", None if ike is None else {"ike": ike})

    def list_sas_raw(
        self, ike: str | None = None, ike_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The `list-sa` events of `list-sas`: `[{<name>: {...}}, ...]`."""
        selector: dict[str, Any] = {}
        if ike is not None:
            selector["ike"] = ike
        if ike_id is not None:
            selector["ike-id"] = ike_id
        return self.streamed("list-sas", "list-sa", selector or None)

    def stats(self) -> dict[str, Any]:
        return self.request("stats")

    # -- CharonPort ------------------------------------------------------------------------

    def load_conn(self, name: str, body: Mapping[str, Any]) -> None:
        self.request("load-conn", {name: body})

    def unload_conn(self, name: str) -> None:
        self.request("unload-conn", {"name": name})

    def list_conn_names(self) -> list[str]:
        conns = self.request("get-conns").get("conns", [])
        return [_text(c) for c in conns] if isinstance(conns, list) else []

    def initiate(self, ike: str, child: str | None) -> None:
        # timeout -1: charon queues the initiation and answers at once, with no control-log
        # events (vici_control.c), so a plain request does: one round trip, where the vici
        # package's streamed initiate costs three (register, request, unregister).
        self.request("initiate", _initiate_message(ike, child))

    def load_and_initiate(self, name: str, body: Mapping[str, Any], child: str | None) -> None:
        """`load-conn` and `initiate` sent back to back, their answers read after.

        charon handles one session's requests in strict order (vici_socket.c queues them
        and one job works through the queue), so this is the two calls in a row for one
        round trip and one of charon's jobs instead of two: what a failover waits for
        before the next one in a storm. The answers still owed to quiet requests (the
        previous failover's unload-conn, on a lane) are read after sending, not before:
        waiting for them first cost a storm one more round trip per connection, and
        charon one more job to schedule (10-20 ms each on a loaded 2-core machine, seen
        in ini's log: unload-conn, then load-conn of the next connection 10 ms later).
        If the load fails while an older config of the same name started, that SA is
        terminated: it is not what was asked for.
        """
        initiate = _initiate_message(name, child)

        def exchange(session: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            transport = session.transport
            for command, message in (("load-conn", {name: body}), ("initiate", initiate)):
                transport.send(Packet.request(command, Message.serialize(to_vici(message))))
            self._read_owed()  # charon answers in order: the quiet requests' answers first
            raw = transport.receive(), transport.receive()  # both, or the session is off
            return _answer(raw[0]), _answer(raw[1])

        loaded, initiated = self._call("load-conn", exchange, owed_first=False)
        if not _succeeded(loaded):
            if _succeeded(initiated):
                with contextlib.suppress(CharonError):
                    self.terminate(ike=name)
            raise CharonCommandFailed("load-conn", _failure(loaded))
        if not _succeeded(initiated):
            raise CharonCommandFailed("initiate", _failure(initiated))

    def terminate(
        self, ike: str | None = None, ike_id: int | None = None, child_id: int | None = None
    ) -> None:
        # as initiate: -1 answers at once, no control-log
        self.request("terminate", terminate_message(ike, ike_id, child_id))

    def list_sas(self) -> list[IkeSaInfo]:
        try:
            return [parse_list_sa(m) for m in self.list_sas_raw()]
        except DecodeError as exc:
            raise CharonError(f"list-sas failed: DecodeError: {exc}") from exc

    # -- LoadPort (what swanctl --load-all sends; load_creds.c and friends) ------------------

    def load_cert(self, cert: CertificateLoad) -> None:
        message: dict[str, Any] = {"type": cert.type}
        if cert.flag is not None:
            message["flag"] = cert.flag
        message["data"] = cert.data
        self.request("load-cert", message)

    def clear_creds(self) -> None:
        self.request("clear-creds")

    def load_key(self, key: KeyLoad) -> str | None:
        answer = self.request("load-key", {"type": key.type, "data": key.data.reveal()})
        return _text(answer["id"]) if "id" in answer else None

    def unload_key(self, key_id: str) -> None:
        self.request("unload-key", {"id": key_id})

    def key_ids(self) -> list[str] | None:
        return self._optional_list("get-keys", "keys")

    def load_shared(self, secret: SharedLoad) -> None:
        message = {
            "id": secret.id,
            "type": secret.type,
            "data": secret.data.reveal(),
            "owners": list(secret.owners),
        }
        self.request("load-shared", message)

    def unload_shared(self, secret_id: str) -> None:
        self.request("unload-shared", {"id": secret_id})

    def shared_ids(self) -> list[str] | None:
        return self._optional_list("get-shared", "keys")

    def load_authority(self, authority: AuthorityLoad) -> None:
        self.request("load-authority", {authority.name: authority.body})

    def unload_authority(self, name: str) -> None:
        self.request("unload-authority", {"name": name})

    def authority_names(self) -> list[str] | None:
        return self._optional_list("get-authorities", "authorities")

    def load_pool(self, pool: PoolLoad) -> None:
        self.request("load-pool", {pool.name: pool.body})

    def unload_pool(self, name: str) -> None:
        self.request("unload-pool", {"name": name})

    def pool_names(self) -> list[str] | None:
        try:
            answer = self.request("get-pools")
        except CharonUnreachable:
            raise
        except CharonError:
            return None
        return [str(name) for name, value in answer.items() if isinstance(value, Mapping)]

    def _optional_list(self, command: str, key: str) -> list[str] | None:
        """A `get-*` listing; None when this charon refuses or lacks the command."""
        try:
            values = self.request(command).get(key, [])
        except CharonUnreachable:
            raise
        except CharonError:
            return None
        return [_text(v) for v in values] if isinstance(values, list) else []

    def version(self) -> dict[str, str]:
        return {k: _text(v) for k, v in self.request("version").items()}
