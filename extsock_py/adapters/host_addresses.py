"""This host's own addresses, read from the kernel's tables in /proc (no subprocess, no DNS).

IPv4: the `/32 host LOCAL` entries of /proc/net/fib_trie; IPv6: /proc/net/if_inet6. Virtual
IPs charon installed are among them. Read when a connection is pushed, in the daemon's
network namespace; an unreadable table gives no addresses of that family (and a log line).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

log = logging.getLogger("extsock.host")


def ipv4_local(text: str) -> set[str]:
    """The local IPv4 addresses in the text of /proc/net/fib_trie."""
    found: set[str] = set()
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped.startswith("/32 host LOCAL") and last:
            try:
                found.add(str(ipaddress.IPv4Address(last)))
            except ValueError:
                continue
    return found


def ipv6_local(text: str) -> set[str]:
    """The IPv6 addresses in the text of /proc/net/if_inet6."""
    found: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
            except ValueError:
                continue
    return found


class ProcHostAddresses:
    """The HostAddresses port over /proc (the root may be moved for tests)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc

    def _read(self, name: str) -> str:
        try:
            return (self._proc / "net" / name).read_text(errors="replace")
        except OSError as exc:
            log.warning("cannot read this host's addresses from %s: %s", name, exc)
            return ""

    def addresses(self) -> frozenset[str]:
        return frozenset(ipv4_local(self._read("fib_trie")) | ipv6_local(self._read("if_inet6")))
