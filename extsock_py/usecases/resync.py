"""Resynchronisation with charon: adopt tunnels that are up, clear stale clones, start the rest.

Used when extsock starts next to a charon that already runs its tunnels (an extsock
restart must not cost a tunnel) and when charon comes back after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from extsock_py.domain import events as ev
from extsock_py.domain.errors import CharonError, CharonUnreachable
from extsock_py.domain.failover import Phase
from extsock_py.domain.observations import ChildSaInfo, IkeSaInfo
from extsock_py.domain.profile import clone_name, parse_clone_name
from extsock_py.interfaces.ports import CharonPort
from extsock_py.usecases.failover_manager import FailoverManager

log = logging.getLogger("extsock.resync")


@dataclass
class ResyncReport:
    adopted: dict[str, str] = field(default_factory=dict)  # connection -> gateway
    adopted_sas: dict[str, IkeSaInfo] = field(default_factory=dict)  # connection -> its SA
    started: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    # CHILD_SAs of managed connections that were not adopted, ended one by one because
    # their IKE_SA carries an adopted tunnel (charon's reuse_ikesa)
    terminated_children: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Installed:
    """One installed CHILD_SA of a managed connection, and the IKE_SA carrying it."""

    connection: str
    gateway: str  # the gateway of the clone the IKE_SA is named after
    sa: IkeSaInfo
    child: ChildSaInfo


def _installed(
    manager: FailoverManager, names: list[str], sas: list[IkeSaInfo]
) -> list[_Installed]:
    """Every installed CHILD_SA of the connections in `names`, wherever it rides. A CHILD_SA
    in an IKE_SA named after a clone is the clone's connection's when that one has a child
    of its name, else another connection's with such a child and that gateway listed
    (charon's reuse_ikesa: equal configs but for the children share one IKE_SA); each
    connection counts once per IKE_SA, the IKE_SA's own first."""
    found: list[_Installed] = []
    for sa in sas:
        owner = parse_clone_name(sa.name)
        if owner is None or owner.probe or sa.state != "ESTABLISHED":
            continue
        candidates = [owner.connection, *(n for n in names if n != owner.connection)]
        taken: set[str] = set()
        for child in sa.children:
            if child.state != "INSTALLED":
                continue
            for name in candidates:
                managed = manager.get(name)
                if name in taken or managed is None:
                    continue
                listed = (*managed.profile.gateways, *managed.state.gateways)
                if child.name in managed.profile.children and owner.gateway in listed:
                    taken.add(name)  # (a connection outside `names` keeps what is its own)
                    if name in names:
                        found.append(_Installed(name, owner.gateway, sa, child))
                    break
    return found


def resync(charon: CharonPort, manager: FailoverManager, names: list[str]) -> ResyncReport:
    """For each managed connection in `names` (all of them in IDLE): adopt or start.

    Each connection ends with at most one installed CHILD_SA: the newest one it has (extsock
    stopped during a switch or its drain leaves two; charon sends through the newest SA of a
    policy). The others go as a drain ends: the CHILD_SA alone when its IKE_SA carries an
    adopted tunnel, else the whole IKE_SA, and clones that carry nothing adopted are unloaded.
    """
    report = ResyncReport()
    sas = charon.list_sas()
    up: dict[str, _Installed] = {}
    installed = _installed(manager, names, sas)
    for one in installed:
        kept = up.get(one.connection)
        if kept is None or one.child.unique_id > kept.child.unique_id:
            up[one.connection] = one
    adopted_ike_ids = {one.sa.unique_id for one in up.values()}
    for one in installed:  # a stray beside an adopted tunnel, in an IKE_SA that stays
        if up[one.connection] is not one and one.sa.unique_id in adopted_ike_ids:
            try:
                charon.terminate(child_id=one.child.unique_id)
                report.terminated_children.append(one.child.unique_id)
                log.info(
                    "%s: ended CHILD_SA %s{%d} on %s: another one is adopted",
                    one.connection,
                    one.child.name,
                    one.child.unique_id,
                    one.gateway,
                )
            except CharonUnreachable:
                raise
            except CharonError as exc:  # gone meanwhile: not fatal
                log.warning("could not terminate CHILD_SA {%d}: %s", one.child.unique_id, exc)
    keep: set[str] = {clone_name(one.connection, one.gateway) for one in up.values()}
    for conn_name in charon.list_conn_names():
        owner = parse_clone_name(conn_name)
        if owner is None or owner.connection not in names or conn_name in keep:
            continue
        managed = manager.get(owner.connection)
        if managed is None:
            continue
        try:
            charon.unload_conn(conn_name)
            report.unloaded.append(conn_name)
        except CharonUnreachable:
            raise
        except CharonError as exc:  # a stale clone that will not go is not fatal
            log.warning("could not unload stale clone %s: %s", conn_name, exc)
    for sa in sas:  # SAs of stale clones (half-open, or duplicates) go too
        owner = parse_clone_name(sa.name)
        if owner is None or owner.connection not in names:
            continue
        if sa.unique_id not in adopted_ike_ids:
            try:
                charon.terminate(ike_id=sa.unique_id)
            except CharonUnreachable:
                raise
            except CharonError as exc:  # gone meanwhile: not fatal, the rest must start
                log.warning("could not terminate stale IKE_SA #%d: %s", sa.unique_id, exc)
    for name in names:
        found = up.get(name)
        if found is not None:
            manager.note_adopted(name, found.gateway)  # before Adopt persists the new gateway
            adopt = ev.Adopt(found.gateway, found.sa.unique_id, found.sa.remote_host)
            manager.handle(name, adopt)
            report.adopted[name] = found.gateway
            report.adopted_sas[name] = found.sa
            log.info(
                "%s: adopted the tunnel up on %s (IKE_SA #%d)",
                name,
                found.gateway,
                found.sa.unique_id,
            )
        else:
            manager.handle(name, ev.Start())
            report.started.append(name)
    return report


def reconcile(
    charon: CharonPort,
    manager: FailoverManager,
    on_sas: Callable[[list[IkeSaInfo]], None] | None = None,
) -> list[str]:
    """A safety net for lost events: a connection believed up whose tunnel charon no longer
    has is treated as down (reason `lost`), so it fails over instead of staying dark.
    `on_sas` gets the list (the SA model learns from it what events did not tell).

    Returns the connections found down. Cheap enough to run every few tens of seconds.
    """
    sas = charon.list_sas()
    if on_sas is not None:
        on_sas(sas)
    # Lenient on purpose: an SA being rekeyed counts as there; only none at all is lost.
    alive = [sa for sa in sas if sa.state not in ("DELETING", "DESTROYING")]
    present = {sa.name for sa in alive}
    present_ids = {sa.unique_id for sa in alive}
    lost = []
    for name in manager.names():
        managed = manager.get(name)
        if managed is None:
            continue
        state = managed.state
        if state.phase is not Phase.UP or state.gateway is None or state.switch is not None:
            continue
        # Its CHILD_SA may ride in another connection's IKE_SA (charon's reuse_ikesa).
        if clone_name(name, state.gateway) not in present and state.ike_id not in present_ids:
            log.warning(
                "%s: charon has no tunnel on %s any more: treated as down", name, state.gateway
            )
            manager.handle(name, ev.TunnelDown(state.gateway, state.ike_id or 0, "lost"))
            lost.append(name)
    return lost
