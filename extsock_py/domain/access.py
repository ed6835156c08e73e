"""Who may do what over the control socket: two roles, given by unix group.

`read` may look (status, history, health, watch); `operate` may also act (switch, hold,
release, retry, terminate, reload, load, unload). Root, and the uid the daemon runs as,
always operate. Without a `control` section in the policy, anyone who can open the socket
(its mode and group decide that) may read and only root operates. What a non-root operator
may `load` is bounded by the `push` policy (`domain/push.py`): without one, only root pushes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from extsock_py.domain.push import PushPolicy


class Role(enum.IntEnum):
    NONE = 0
    READ = 1
    OPERATE = 2


# The role each command needs; a command not listed needs OPERATE.
COMMAND_ROLES: dict[str, Role] = {
    "ping": Role.NONE,
    "status": Role.READ,
    "history": Role.READ,
    "health": Role.READ,
    "subscribe": Role.READ,
    "switch": Role.OPERATE,
    "hold": Role.OPERATE,
    "release": Role.OPERATE,
    "retry": Role.OPERATE,
    "terminate": Role.OPERATE,
    "reload": Role.OPERATE,
    "load": Role.OPERATE,
    "unload": Role.OPERATE,
}


def role_needed(command: str) -> Role:
    return COMMAND_ROLES.get(command, Role.OPERATE)


@dataclass(frozen=True)
class Peer:
    """A client of the control socket as the kernel vouches for it (SO_PEERCRED)."""

    pid: int
    uid: int
    gids: frozenset[int]


@dataclass(frozen=True)
class ControlAccess:
    """Groups (by gid) whose members read or operate; None: the default for that role."""

    read_gids: frozenset[int] | None = None
    operate_gids: frozenset[int] = frozenset()
    # what a non-root operator may push (None: only root and the daemon's uid push)
    push: PushPolicy | None = None

    def role_of(self, peer: Peer, daemon_uid: int) -> Role:
        if peer.uid in (0, daemon_uid):
            return Role.OPERATE
        if peer.gids & self.operate_gids:
            return Role.OPERATE
        if self.read_gids is None or peer.gids & self.read_gids:
            return Role.READ
        return Role.NONE


def groups_of(primary: int, supplementary: Iterable[int]) -> frozenset[int]:
    return frozenset([primary, *supplementary])
