"""A minimal sd_notify(3) client: tells systemd when extsock is ready, reloading, alive.

Each call sends one datagram to ``$NOTIFY_SOCKET`` (a path, or an abstract name written
with a leading '@'). Without ``$NOTIFY_SOCKET`` (not started by systemd, or a Type= other
than notify) every call is a no-op that returns False; a send that fails is logged at
debug level and returns False. Nothing here raises.

With Type=notify the daemon should send `ready()` once its config is applied, and around a
SIGHUP reload `reloading()` then `ready()` again; `stopping()` when it begins to shut down;
and, when `watchdog_interval()` is not None, `watchdog()` at about half that interval from
the main loop (so a hung loop, not just a live process, is what systemd sees).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("extsock.sdnotify")


def _address(env: Mapping[str, str] | None) -> str | None:
    source = os.environ if env is None else env
    address = source.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]  # Linux abstract namespace
    if address.startswith("/"):
        return address
    log.debug("NOTIFY_SOCKET %r is not supported (only paths and @abstract names)", address)
    return None


def notify(message: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send `message` (newline-separated VAR=value lines); True when it was sent."""
    address = _address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", message, exc)
        return False
    return True


def ready(status_text: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """READY=1: startup (or a reload) is complete."""
    message = "READY=1"
    if status_text is not None:
        message += "\n" + _status_line(status_text)
    return notify(message, env=env)


def stopping(*, env: Mapping[str, str] | None = None) -> bool:
    """STOPPING=1: the daemon has begun to shut down."""
    return notify("STOPPING=1", env=env)


def reloading(*, env: Mapping[str, str] | None = None) -> bool:
    """RELOADING=1 with the CLOCK_MONOTONIC time systemd >= 253 wants; `ready()` ends it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", env=env)


def watchdog(*, env: Mapping[str, str] | None = None) -> bool:
    """WATCHDOG=1: the keep-alive ping."""
    return notify("WATCHDOG=1", env=env)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """STATUS=<text>: the one line `systemctl status` shows."""
    return notify(_status_line(text), env=env)


def watchdog_interval(*, env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds, or None when the watchdog is off or not ours.

    From ``$WATCHDOG_USEC``; when ``$WATCHDOG_PID`` is set it must be this process's pid.
    Ping at about half of it.
    """
    source = os.environ if env is None else env
    try:
        usec = int(source.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = source.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def _status_line(text: str) -> str:
    return "STATUS=" + " ".join(text.splitlines())
