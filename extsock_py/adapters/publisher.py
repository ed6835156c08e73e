"""Fan-out of extsock's own events to subscribers (control socket, metrics, logs).

The usecases publish typed notices (domain/notices.py); here, and only here, each becomes
the kind and the JSON fields the control protocol's events carry (`notice_fields`);
subscribers get the notice itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, assert_never

from extsock_py.domain.notices import (
    CharonBackNotice,
    CharonLostNotice,
    ConnectionNotice,
    IkeStateNotice,
    MonitorDeadNotice,
    Notice,
    ReloadedNotice,
    ReloadFailedNotice,
)
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

    def publish(self, notice: Notice) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(notice)
            except Exception:
                log.exception("subscriber failed on %s", notice.kind)


def notice_fields(notice: Notice) -> dict[str, Any]:
    """The event's fields as subscribers read them (docs/control-protocol.md, Events)."""
    match notice:
        case ConnectionNotice():
            fields: dict[str, Any] = {"connection": notice.connection}
            for key in ("gateway", "from_gateway", "reason", "duration", "outage"):
                value = getattr(notice, key)
                if value is not None:
                    fields[key] = round(value, 6) if isinstance(value, float) else value
            if notice.virtual_ips is not None:
                fields["virtual_ips"] = list(notice.virtual_ips)
            return fields
        case IkeStateNotice():
            return {
                "connection": notice.connection,
                "connections": list(notice.connections),
                "ike": notice.ike,
                "gateway": notice.gateway,
                "old": notice.old,
                "new": notice.new,
                "ike_id": notice.ike_id,
                "virtual_ips": list(notice.virtual_ips),
            }
        case MonitorDeadNotice():
            return {
                "connection": notice.connection,
                "gateway": notice.gateway,
                "silence": round(notice.silence, 3),
                "unanswered": notice.unanswered,
            }
        case CharonLostNotice():
            return {"reason": notice.reason}
        case CharonBackNotice():
            return {}
        case ReloadedNotice():
            return {"managed": list(notice.managed)}
        case ReloadFailedNotice():
            return {"error": notice.error}
        case _:
            assert_never(notice)
