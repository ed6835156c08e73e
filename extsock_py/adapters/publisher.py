"""Fan-out of extsock's own events to subscribers (control socket, metrics, logs)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from extsock_py.domain.notices import NoticeKind
from extsock_py.interfaces.ports import Subscriber

log = logging.getLogger("extsock.publisher")


class Broadcast:
    """Calls every subscriber; a subscriber that raises is logged and kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, kind: NoticeKind, fields: Mapping[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(kind, fields)
            except Exception:
                log.exception("subscriber failed on %s", kind)
