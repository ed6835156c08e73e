"""DNS names in remote_addrs: the system resolver (getaddrinfo: /etc/hosts, DNS, as
charon's own resolution), asked at each attempt."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("extsock.resolver")


class SystemResolver:
    """`resolve(name)`: every A and AAAA address, in getaddrinfo's order, without repeats."""

    def resolve(self, name: str) -> tuple[str, ...]:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            log.warning("cannot resolve gateway %s: %s", name, exc)
            return ()
        addresses: list[str] = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                address = str(sockaddr[0]).split("%", 1)[0]
                if address not in addresses:
                    addresses.append(address)
        return tuple(addresses)
