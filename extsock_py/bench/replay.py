"""A fake charon that replays recorded events over the real VICI framing on a unix socket.

It answers event registrations (``alert`` is unknown, as in 5.9.8) and, on ``stream()``,
writes a pre-built buffer of ``count`` EVENT packets (the recording, cycled) in one go, so
its own cost is one ``sendall``.  One client at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vici.protocol import FiniteStream, Message, Packet

KNOWN = {
    "log",
    "control-log",
    "ike-updown",
    "child-updown",
    "ike-rekey",
    "ike-update",
    "child-rekey",
}


def load_recording(path: Path) -> list[tuple[str, dict[str, Any]]]:
    doc = json.loads(path.read_text())
    return [(str(e["event"]), dict(e["message"])) for e in doc["events"]]


def build_stream(events: list[tuple[str, dict[str, Any]]], count: int) -> bytes:
    packets = []
    for name, message in events:
        raw = name.encode()
        body = struct.pack("!BB", Packet.EVENT, len(raw)) + raw + Message.serialize(message)
        packets.append(struct.pack("!I", len(body)) + body)
    return b"".join(packets[i % len(packets)] for i in range(count))


class ReplayCharon:
    def __init__(self, stream: bytes) -> None:
        self.stream_bytes = stream
        self.registered: set[str] = set()
        self._dir = tempfile.mkdtemp(prefix="bench-replay-")
        self.path = os.path.join(self._dir, "charon.vici")
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> ReplayCharon:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(1)
        server.settimeout(10.0)
        self._server = server
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_client()
        if self._server is not None:
            self._server.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def accept(self) -> None:
        """Serve the next client's registrations in a thread (call before it connects)."""
        self.registered = set()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._server is not None
        try:
            client, _ = self._server.accept()
        except OSError:
            return
        self._client = client
        with contextlib.suppress(OSError, struct.error):
            for _ in range(1000):
                head = _recv_exact(client, 4)
                stream = FiniteStream(_recv_exact(client, struct.unpack("!I", head)[0]))
                kind, length = struct.unpack("!BB", stream.read(2))
                name = stream.read(length).decode()
                if kind not in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
                    continue
                answer = Packet.EVENT_CONFIRM if name in KNOWN else Packet.EVENT_UNKNOWN
                with self._lock:
                    client.sendall(struct.pack("!IB", 1, answer))
                    if name in KNOWN and kind == Packet.EVENT_REGISTER:
                        self.registered.add(name)

    def wait_registered(self, names: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.005) + 1):
            if names <= self.registered or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        return names <= self.registered

    def stream(self) -> float:
        """Write every event; returns the monotonic time just before writing."""
        assert self._client is not None
        with self._lock:
            began = time.monotonic()
            self._client.sendall(self.stream_bytes)
        return began

    def drop_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.shutdown(socket.SHUT_RDWR)
            self._client.close()
            self._client = None
        if self._thread is not None:
            self._thread.join(2.0)


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data
