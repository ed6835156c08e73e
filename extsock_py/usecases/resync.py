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
from extsock_py.domain.observations import IkeSaInfo
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


def _tunnel_up(sa: IkeSaInfo) -> bool:
    return sa.state == "ESTABLISHED" and any(c.state == "INSTALLED" for c in sa.children)


def resync(charon: CharonPort, manager: FailoverManager, names: list[str]) -> ResyncReport:
    """For each managed connection in `names` (all of them in IDLE): adopt or start."""
    report = ResyncReport()
    sas = charon.list_sas()
    up: dict[str, IkeSaInfo] = {}
    for sa in sas:
        owner = parse_clone_name(sa.name)
        if owner is None or owner.probe or owner.connection not in names:
            continue
        managed = manager.get(owner.connection)
        listed = (*managed.profile.gateways, *managed.state.gateways) if managed else ()
        if managed is None or owner.gateway not in listed:
            continue  # a clone towards a gateway no longer listed: stale, not adoptable
        kept = up.get(owner.connection)
        # Several up (extsock stopped during a switch's drain): the newest carries the
        # traffic (charon sends through the newest SA of a policy), the older ones go.
        if _tunnel_up(sa) and (kept is None or sa.unique_id > kept.unique_id):
            up[owner.connection] = sa
    for sa in sas:  # a CHILD_SA riding in another connection's IKE_SA (reuse_ikesa)
        owner = parse_clone_name(sa.name)
        if owner is None or owner.probe or not _tunnel_up(sa):
            continue
        own = manager.get(owner.connection)
        own_children = set(own.profile.children) if own is not None else set()
        for child in sa.children:
            if child.state != "INSTALLED" or child.name in own_children:
                continue  # the IKE_SA's own connection's child
            for name in names:
                managed = manager.get(name)
                if name in up or managed is None:
                    continue
                listed = (*managed.profile.gateways, *managed.state.gateways)
                if child.name in managed.profile.children and owner.gateway in listed:
                    up[name] = sa
                    break
    keep: set[str] = {sa.name for sa in up.values()}
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
        if up.get(owner.connection) is not sa and all(sa is not u for u in up.values()):
            try:
                charon.terminate(ike_id=sa.unique_id)
            except CharonUnreachable:
                raise
            except CharonError as exc:  # gone meanwhile: not fatal, the rest must start
                log.warning("could not terminate stale IKE_SA #%d: %s", sa.unique_id, exc)
    for name in names:
        found = up.get(name)
        if found is not None:
            owner = parse_clone_name(found.name)
            assert owner is not None
            manager.note_adopted(name, owner.gateway)  # before Adopt persists the new gateway
            manager.handle(name, ev.Adopt(owner.gateway, found.unique_id))
            report.adopted[name] = owner.gateway
            report.adopted_sas[name] = found
            log.info(
                "%s: adopted the tunnel up on %s (IKE_SA #%d)", name, owner.gateway, found.unique_id
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
