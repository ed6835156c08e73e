"""What each of the machine's actions asks of charon, as a command that runs on any session.

A command is built on the main loop from what the loop knows then (names, bodies, the SA
ids to end) and then only talks to the CharonPort it is handed: it may run on the main
loop's session or, later, on one of the command lanes' sessions. It returns the events its
failure means to the machine (an `initiate` charon refuses is an `InitiateFailed`); a lost
charon (CharonUnreachable) is raised, for the daemon to handle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from extsock_py.domain import events as ev
from extsock_py.domain.errors import CharonError, CharonUnreachable
from extsock_py.domain.profile import (
    ConnectionProfile,
    clone_body,
    clone_name,
    probe_body,
    probe_name,
)
from extsock_py.interfaces.ports import CharonPort

log = logging.getLogger("extsock.failover")

Command = Callable[[CharonPort], list[ev.Event]]


def quietly(command: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """A cleanup command whose refusal changes nothing (the SA or clone is gone already)."""
    try:
        command(*args, **kwargs)
    except CharonUnreachable:
        raise
    except CharonError as exc:
        log.debug("ignored: %s", exc)


def _failing_as(
    conn: str, run: Callable[[CharonPort], None], failed: Callable[[str], list[ev.Event]]
) -> Command:
    def command(charon: CharonPort) -> list[ev.Event]:
        try:
            run(charon)
        except CharonUnreachable:
            raise
        except CharonError as exc:
            log.warning("%s: %s", conn, exc)
            return failed(str(exc))
        return []

    return command


def _cleanup(run: Callable[[CharonPort], None]) -> Command:
    def command(charon: CharonPort) -> list[ev.Event]:
        run(charon)
        return []

    return command


def _child(profile: ConnectionProfile) -> str | None:
    return profile.children[0] if profile.children else None


def load_clone(profile: ConnectionProfile, gateway: str) -> Command:
    name, body = clone_name(profile.name, gateway), clone_body(profile, gateway)
    return _failing_as(
        profile.name,
        lambda charon: charon.load_conn(name, body),
        lambda why: [ev.InitiateFailed(gateway, why)],
    )


def initiate(profile: ConnectionProfile, gateway: str) -> Command:
    name, child = clone_name(profile.name, gateway), _child(profile)
    return _failing_as(
        profile.name,
        lambda charon: charon.initiate(name, child),
        lambda why: [ev.InitiateFailed(gateway, why)],
    )


def load_and_initiate(profile: ConnectionProfile, gateway: str) -> Command:
    """LoadClone + Initiate of one gateway as one exchange (one round trip instead of two)."""
    name, body = clone_name(profile.name, gateway), clone_body(profile, gateway)
    child = _child(profile)
    return _failing_as(
        profile.name,
        lambda charon: charon.load_and_initiate(name, body, child),
        lambda why: [ev.InitiateFailed(gateway, why)],
    )


def unload_clone(profile: ConnectionProfile, gateway: str) -> Command:
    name = clone_name(profile.name, gateway)
    return _cleanup(lambda charon: quietly(charon.unload_conn, name))


@dataclass(frozen=True)
class Selector:
    """What one terminate ends: the IKE_SAs of a config name, one IKE_SA by its unique id,
    or one CHILD_SA by its unique id (exactly one is set)."""

    ike: str | None = None
    ike_id: int | None = None
    child_id: int | None = None


def terminate(selectors: list[Selector]) -> Command:
    """Force-terminate by each selector, in order."""

    def run(charon: CharonPort) -> None:
        for s in selectors:
            quietly(charon.terminate, ike=s.ike, ike_id=s.ike_id, child_id=s.child_id)

    return _cleanup(run)


def start_probe(profile: ConnectionProfile, gateway: str) -> Command:
    name, body = probe_name(profile.name, gateway), probe_body(profile, gateway)

    def run(charon: CharonPort) -> None:
        charon.load_conn(name, body)
        charon.initiate(name, None)

    return _failing_as(profile.name, run, lambda why: [ev.ProbeFailed(gateway)])


def stop_probe(profile: ConnectionProfile, gateway: str) -> Command:
    name = probe_name(profile.name, gateway)

    def run(charon: CharonPort) -> None:
        quietly(charon.terminate, ike=name)
        quietly(charon.unload_conn, name)

    return _cleanup(run)


def start_standby(profile: ConnectionProfile, gateway: str) -> Command:
    """The hot standby: the clone itself, its IKE_SA alone (initiate without a child);
    charon reuses that IKE_SA for a later initiate of the clone's child."""
    name, body = clone_name(profile.name, gateway), clone_body(profile, gateway)
    return _failing_as(
        profile.name,
        lambda charon: charon.load_and_initiate(name, body, None),
        lambda why: [ev.InitiateFailed(gateway, why)],
    )


def stop_standby(
    profile: ConnectionProfile, gateway: str, selectors: list[Selector], unload: bool
) -> Command:
    """End the hot standby's IKE_SA (by each selector), then unload its clone if asked."""
    name = clone_name(profile.name, gateway)

    def run(charon: CharonPort) -> None:
        for s in selectors:
            quietly(charon.terminate, ike=s.ike, ike_id=s.ike_id, child_id=s.child_id)
        if unload:
            quietly(charon.unload_conn, name)

    return _cleanup(run)
