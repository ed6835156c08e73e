"""DNS names in remote_addrs: the system resolver (getaddrinfo: /etc/hosts, DNS, as
charon's own resolution), asked at each attempt, beside the main loop."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial

from extsock_py.domain.errors import CharonUnreachable
from extsock_py.interfaces.operator import Background as Offload
from extsock_py.interfaces.ports import Resolver

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


class BackgroundResolver:
    """The Resolver port, never blocking the main loop: `resolve(name)` answers with what the
    last resolution of `name` found (nothing before the first) and asks the system again
    beside the loop, in a bounded worker, at most once at a time per name. The answer comes
    back through the loop's inbox (`post`); when it differs from the last, each `on_change`
    callback gets the name, on the loop. So each attempt uses the newest answer known and
    asks for the next one; a resolver that takes seconds (5 s per name is the system's
    timeout) costs the loop nothing.

    `prime(names, timeout)` waits for a first answer (before the loop runs: the first
    config's split into managed and plain connections reads them)."""

    def __init__(
        self,
        blocking: Resolver,
        worker: Offload,
        post: Callable[[Callable[[], object]], object],
    ) -> None:
        self._blocking = blocking
        self._worker = worker
        self._post = post
        self._answers: dict[str, tuple[str, ...]] = {}  # touched on the loop only
        self._asking: set[str] = set()
        self.on_change: list[Callable[[str], None]] = []
        self.refused = 0

    def resolve(self, name: str) -> tuple[str, ...]:
        self._ask(name)
        return self._answers.get(name, ())

    def prime(self, names: Iterable[str], timeout: float) -> None:
        pending = {n: self._worker.try_submit(partial(self._blocking.resolve, n)) for n in names}
        deadline = time.monotonic() + timeout
        for name, future in pending.items():
            if future is None:
                continue
            try:
                self._answers[name] = future.result(max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                log.warning(
                    "gateway %s: no answer from the resolver in %gs; asked again", name, timeout
                )
                self._asking.add(name)
                future.add_done_callback(partial(self._come_back, name))
            except Exception as exc:
                log.warning("cannot resolve gateway %s: %s", name, exc)

    def _ask(self, name: str) -> None:
        if name in self._asking:
            return
        future = self._worker.try_submit(partial(self._blocking.resolve, name))
        if future is None:  # the worker is full: the last answer stands, asked next time
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("resolver busy: %s not asked again (%d so far)", name, self.refused)
            return
        self._asking.add(name)
        future.add_done_callback(partial(self._come_back, name))

    def _come_back(self, name: str, future: Future[tuple[str, ...]]) -> None:
        """On the worker's thread: the answer goes to the loop."""
        self._post(partial(self._answered, name, future))

    def _answered(self, name: str, future: Future[tuple[str, ...]]) -> None:
        """On the loop."""
        self._asking.discard(name)
        if future.cancelled():
            return
        try:
            addresses = future.result()
        except Exception as exc:
            log.warning("cannot resolve gateway %s: %s", name, exc)
            return
        if self._answers.get(name) == addresses:
            return
        self._answers[name] = addresses
        for callback in self.on_change:
            try:
                callback(name)
            except CharonUnreachable:
                raise  # the loop's to handle: it marks charon lost
            except Exception:  # nobody waits on this work's future: say it here
                log.exception("gateway %s: acting on its new addresses failed", name)
