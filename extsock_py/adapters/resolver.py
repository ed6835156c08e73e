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


# How long one resolution may hold the main loop for answers that come fast (a hosts file,
# a local cache: the attempt then uses the fresh answer, as charon's own resolution would),
# and how much such waiting the loop gives DNS in all: `WAIT_SHARE` of its time, at most
# `WAIT_BURST` at once. Slower answers come back through the loop's inbox.
FAST_WAIT = 0.05
WAIT_SHARE = 0.1
WAIT_BURST = 0.1


class BackgroundResolver:
    """The Resolver port, with the resolution beside the main loop: each question goes to
    a bounded worker (at most one at a time per name), and the loop waits for its answer
    only briefly (FAST_WAIT, within a budget of WAIT_SHARE of its time): a fast answer is
    used at once, a slow one comes back through the loop's inbox (`post`), and each
    `on_change` callback then gets the name, on the loop, when the answer changed. Until
    then the last answer stands (nothing before the first). A resolver that takes seconds
    (5 s per name is the system's timeout) costs the loop at most its budget.

    Every method runs on the loop's thread. `resolve_all(names, wait)` with a `wait` of
    its own (not budgeted) is for the start, before the loop runs; `known(name)` is the
    last answer, not asked again."""

    def __init__(
        self,
        blocking: Resolver,
        worker: Offload,
        post: Callable[[Callable[[], object]], object],
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blocking = blocking
        self._worker = worker
        self._post = post
        self._timer = timer
        self._answers: dict[str, tuple[str, ...]] = {}
        self._asking: dict[str, Future[tuple[str, ...]]] = {}  # the question under way
        self._allowance = WAIT_BURST
        self._refilled = timer()
        self.on_change: list[Callable[[str], None]] = []
        self.refused = 0
        self.waited = 0.0  # seconds the loop spent waiting for answers, in all

    def resolve(self, name: str) -> tuple[str, ...]:
        return self.resolve_all((name,))[name]

    def resolve_all(
        self, names: Iterable[str], wait: float | None = None
    ) -> dict[str, tuple[str, ...]]:
        """The addresses of each name: asked again now, the answers that come within the
        wait (FAST_WAIT, budgeted, by default), else the last known."""
        names = list(dict.fromkeys(names))
        asked = [(n, f) for n in names if (f := self._ask(n)) is not None]
        if asked:
            self._await(asked, wait)
        return {n: self._answers.get(n, ()) for n in names}

    def known(self, name: str) -> tuple[str, ...]:
        """The last answer for `name`, without asking again."""
        return self._answers.get(name, ())

    def _await(self, asked: list[tuple[str, Future[tuple[str, ...]]]], wait: float | None) -> None:
        began = self._timer()
        if wait is None:
            self._allowance = min(
                WAIT_BURST, self._allowance + (began - self._refilled) * WAIT_SHARE
            )
            self._refilled = began
            wait = min(FAST_WAIT, self._allowance)
        deadline = began + wait
        for name, future in asked:
            try:
                addresses = future.result(max(0.0, deadline - self._timer()))
            except FutureTimeout:
                continue  # comes back through the inbox
            except Exception:
                continue  # said when it comes back through the inbox
            self._settle(name, future)
            self._learn(name, addresses, later=True)
        spent = self._timer() - began
        self.waited += spent
        self._allowance = max(0.0, self._allowance - spent)

    def _ask(self, name: str) -> Future[tuple[str, ...]] | None:
        """A new question for `name` (None: one is under way, or the worker is full)."""
        if name in self._asking:
            return None
        future = self._worker.try_submit(partial(self._blocking.resolve, name))
        if future is None:  # the worker is full: the last answer stands, asked next time
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("resolver busy: %s not asked again (%d so far)", name, self.refused)
            return None
        self._asking[name] = future
        future.add_done_callback(partial(self._come_back, name))
        return future

    def _come_back(self, name: str, future: Future[tuple[str, ...]]) -> None:
        """On the worker's thread: the answer goes to the loop."""
        self._post(partial(self._answered, name, future))

    def _answered(self, name: str, future: Future[tuple[str, ...]]) -> None:
        """On the loop (through its inbox)."""
        self._settle(name, future)
        if future.cancelled():
            return
        try:
            addresses = future.result()
        except Exception as exc:
            log.warning("cannot resolve gateway %s: %s", name, exc)
            return
        self._learn(name, addresses, later=False)

    def _settle(self, name: str, future: Future[tuple[str, ...]]) -> None:
        if self._asking.get(name) is future:
            del self._asking[name]

    def _learn(self, name: str, addresses: tuple[str, ...], later: bool) -> None:
        if self._answers.get(name) == addresses:
            return
        self._answers[name] = addresses
        if later:  # the caller uses it now; the others hear of it after this turn
            self._post(partial(self._changed, name))
        else:
            self._changed(name)

    def _changed(self, name: str) -> None:
        for callback in self.on_change:
            try:
                callback(name)
            except CharonUnreachable:
                raise  # the loop's to handle: it marks charon lost
            except Exception:  # nobody waits on this work's future: say it here
                log.exception("gateway %s: acting on its new addresses failed", name)
