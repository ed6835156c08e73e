"""Take over the as-written copy of a managed connection that someone else loaded.

On Debian, strongswan.service runs `swanctl --load-all` whenever charon starts, and an
older extsock may have left its own load behind: charon then holds the connection as
written (`remote_addrs = gw1, gw2`, `dpd_action = restart`), maybe with a tunnel up, next
to extsock's clone. charon would keep restarting that copy towards its first gateway,
against extsock. So: while the as-written copy has a tunnel up, the clone is brought up
beside it (make-before-break, by the failover manager as usual); once the clone is up (or
the connection is settled otherwise, or `grace` runs out) the as-written config is
unloaded and its IKE_SAs are terminated, and one line says what was taken over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from extsock_py.domain.errors import CharonError, CharonUnreachable
from extsock_py.domain.failover import Phase
from extsock_py.domain.observations import IkeSaInfo
from extsock_py.interfaces.ports import CharonPort, Clock
from extsock_py.usecases.failover_manager import FailoverManager

log = logging.getLogger("extsock.takeover")

GRACE = 30.0  # longest wait for the clone before the as-written copy goes anyway
# The manager has decided where the connection stands: nothing to wait for any more.
_SETTLED = (Phase.UP, Phase.DOWN, Phase.GAVE_UP, Phase.STOPPED)


@dataclass(frozen=True)
class TakenOver:
    """What one takeover removed, for the log line and the tests."""

    connection: str
    unloaded: bool  # the as-written config was loaded and is gone
    terminated: tuple[int, ...]  # its IKE_SAs
    tunnel_on: str | None  # where its tunnel was up, if it was
    replaced_by: str | None  # the gateway of extsock's tunnel at that moment


def _tunnel_up(sa: IkeSaInfo) -> bool:
    return sa.state == "ESTABLISHED" and any(c.state == "INSTALLED" for c in sa.children)


class Takeover:
    """Finds as-written copies of managed connections and removes them once it is safe."""

    def __init__(
        self, charon: CharonPort, manager: FailoverManager, clock: Clock, grace: float = GRACE
    ) -> None:
        self._charon = charon
        self._manager = manager
        self._clock = clock
        self._grace = grace
        self._pending: dict[str, float] = {}  # connection -> when it goes at the latest
        self.done: list[TakenOver] = []

    def scan(self, names: Iterable[str], sas: list[IkeSaInfo] | None = None) -> None:
        """Look for as-written copies of `names` (managed connections) in charon; `sas`:
        charon's `list-sas` answer if the caller has just read it (else it is asked)."""
        wanted = [n for n in names if self._manager.is_managed(n)]
        if not wanted:
            return
        loaded = set(self._charon.list_conn_names())
        mine: dict[str, list[IkeSaInfo]] = {name: [] for name in wanted}
        for sa in self._charon.list_sas() if sas is None else sas:
            if sa.name in mine:
                mine[sa.name].append(sa)
        for name in wanted:
            if name in loaded or mine[name]:
                self._found(name, any(_tunnel_up(sa) for sa in mine[name]))

    def noticed(self, name: str) -> None:
        """An event about an IKE_SA named like a managed connection: an as-written copy."""
        if self._manager.is_managed(name) and name not in self._pending:
            self._found(name, tunnel_up=True)

    def next_wake(self) -> float | None:
        return min(self._pending.values(), default=None)

    def tick(self) -> None:
        """Finish the takeovers whose connection is settled or whose grace ran out."""
        if not self._pending:
            return
        now = self._clock.monotonic()
        for name, deadline in list(self._pending.items()):
            managed = self._manager.get(name)
            if managed is None:  # no longer managed: charon may keep the as-written copy
                del self._pending[name]
                continue
            if managed.state.phase in _SETTLED and managed.state.switch is None:
                self._finish(name)
            elif now >= deadline:
                log.warning(
                    "%s: extsock's tunnel is not up %.0f s after an as-written copy was found;"
                    " removing the copy anyway",
                    name,
                    self._grace,
                )
                self._finish(name)

    def _found(self, name: str, tunnel_up: bool) -> None:
        managed = self._manager.get(name)
        settled = managed is not None and managed.state.phase in _SETTLED
        if tunnel_up and not settled:  # make before break: wait for the clone
            self._pending.setdefault(name, self._clock.monotonic() + self._grace)
        else:
            self._finish(name)

    def _finish(self, name: str) -> None:
        self._pending.pop(name, None)
        unloaded = False
        if name in self._charon.list_conn_names():
            try:
                self._charon.unload_conn(name)
                unloaded = True
            except CharonUnreachable:
                raise
            except CharonError as exc:
                log.warning("%s: could not unload the as-written copy: %s", name, exc)
        terminated: list[int] = []
        tunnel_on: str | None = None
        for sa in self._charon.list_sas():
            if sa.name != name or sa.state in ("DELETING", "DESTROYING"):
                continue
            if _tunnel_up(sa) and tunnel_on is None:
                tunnel_on = sa.remote_host or "?"
            try:
                self._charon.terminate(ike_id=sa.unique_id)
                terminated.append(sa.unique_id)
            except CharonUnreachable:
                raise
            except CharonError as exc:  # gone meanwhile (unloading may have closed it)
                log.debug("%s: IKE_SA #%d: %s", name, sa.unique_id, exc)
        managed = self._manager.get(name)
        state = managed.state if managed is not None else None
        mine = state.gateway if state is not None and state.phase is Phase.UP else None
        taken = TakenOver(name, unloaded, tuple(terminated), tunnel_on, mine)
        self.done.append(taken)
        del self.done[:-20]  # a short memory for tests and diagnostics
        if unloaded or terminated:
            log.info("%s", describe(taken))


def describe(taken: TakenOver) -> str:
    """The one line that says what was taken over."""
    parts = [f"{taken.connection}: took over the as-written connection loaded outside extsock"]
    parts.append("(config unloaded" if taken.unloaded else "(config was not loaded")
    if taken.terminated:
        ids = ", ".join(f"#{i}" for i in taken.terminated)
        where = f" up on {taken.tunnel_on}" if taken.tunnel_on else ""
        parts.append(f"; its IKE_SA {ids}{where} terminated")
    if taken.replaced_by:
        parts.append(f"; extsock's tunnel is up on {taken.replaced_by})")
    else:
        parts.append("; extsock's tunnel is not up yet)")
    return parts[0] + " " + "".join(parts[1:])
