"""A model of charon's SAs: IKE_SAs and their CHILD_SAs by charon's unique ids.

Rules of this module:
- It holds what charon reported (events, list-sas) and nothing it guessed: an IKE_SA's
  state is the last one charon named for it. Pure: no I/O, no clock.
- A CHILD_SA belongs to the managed connection that asked for it, whatever IKE_SA carries
  it: charon (reuse_ikesa = yes, its default) puts a second connection's CHILD_SA into an
  IKE_SA of the first when both configs are equal but for their children.
- Every change of an IKE_SA's state is returned as an `IkeTransition`, old -> new. An
  IKE_SA first seen starts from CREATED (charon creates each one in that state). One that
  goes away ends with DESTROYING, and nothing about it follows: its id is remembered as
  gone (a bounded memory) and later news about it is ignored.
- Unique ids are charon's, for one run of charon: a restarted charon numbers its IKE_SAs
  from 1 again. When charon comes back (`restarted`), everything known ends and the
  memory of gone ids is cleared with it, else the new IKE_SA #1 would be read as the old.
- A CHILD_SA rekey replaces the CHILD_SA's unique id (`rekey_child`); the new one belongs
  to the connection the old one did (charon raises no child-updown for either).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

CREATED = "CREATED"
DESTROYING = "DESTROYING"
IKE_STATES = (
    "CREATED",
    "CONNECTING",
    "ESTABLISHED",
    "PASSIVE",
    "REKEYING",
    "REKEYED",
    "DELETING",
    "DESTROYING",
)
_GONE_MEMORY = 4096  # ids of IKE_SAs gone: enough for any burst of news about them


@dataclass(frozen=True)
class IkeTransition:
    """IKE_SA `ike_id` (config `name`, towards `remote`) went from `old` to `new`."""

    ike_id: int
    name: str
    old: str
    new: str
    remote: str | None
    connections: tuple[str, ...]  # managed connections with a CHILD_SA in it
    vips: tuple[str, ...] = ()  # the virtual IPs the gateway assigned to it


@dataclass
class ChildSa:
    unique_id: int
    name: str
    connection: str | None  # the managed connection it belongs to (None: not ours)


@dataclass
class IkeSa:
    unique_id: int
    name: str
    state: str
    remote: str | None = None
    children: dict[int, ChildSa] = field(default_factory=dict)
    vips: tuple[str, ...] = ()


class SaTable:
    """The IKE_SAs charon has, as far as its events and list-sas told."""

    def __init__(self) -> None:
        self._ikes: dict[int, IkeSa] = {}
        # Gone IKE_SAs and the connections they carried (news of their end may still come).
        self._gone: OrderedDict[int, tuple[str, ...]] = OrderedDict()

    # --- reading ------------------------------------------------------------------------

    def get(self, ike_id: int) -> IkeSa | None:
        return self._ikes.get(ike_id)

    def ids(self) -> list[int]:
        return list(self._ikes)

    def named(self, name: str) -> list[IkeSa]:
        """The IKE_SAs of config `name` (a clone's)."""
        return [sa for sa in self._ikes.values() if sa.name == name]

    def is_gone(self, ike_id: int) -> bool:
        return ike_id in self._gone

    def connections_on(self, ike_id: int) -> tuple[str, ...]:
        """The managed connections with a CHILD_SA in IKE_SA `ike_id`, sorted."""
        sa = self._ikes.get(ike_id)
        if sa is None:
            return self._gone.get(ike_id, ())
        return tuple(sorted({c.connection for c in sa.children.values() if c.connection}))

    def children_of(self, ike_id: int, connection: str) -> tuple[int, ...]:
        """The unique ids of `connection`'s CHILD_SAs in IKE_SA `ike_id`."""
        sa = self._ikes.get(ike_id)
        if sa is None:
            return ()
        return tuple(c.unique_id for c in sa.children.values() if c.connection == connection)

    def shared_with_others(self, ike_id: int, connection: str) -> bool:
        """True when IKE_SA `ike_id` carries a CHILD_SA of another managed connection."""
        return any(c != connection for c in self.connections_on(ike_id))

    def carrying(self, connection: str) -> list[IkeSa]:
        """The IKE_SAs with a CHILD_SA of `connection`."""
        return [
            sa
            for sa in self._ikes.values()
            if any(c.connection == connection for c in sa.children.values())
        ]

    # --- charon's news ------------------------------------------------------------------

    def ike_state(
        self,
        ike_id: int,
        name: str,
        state: str,
        remote: str | None = None,
        vips: tuple[str, ...] = (),
    ) -> list[IkeTransition]:
        """charon reported IKE_SA `ike_id` in `state` (DESTROYING: it goes away)."""
        if ike_id in self._gone:
            return []
        if state == DESTROYING:
            return self.ike_gone(ike_id, name, remote)
        sa = self._ikes.get(ike_id)
        if sa is None:
            sa = self._ikes[ike_id] = IkeSa(ike_id, name, CREATED, remote)
        if remote is not None:
            sa.remote = remote
        if vips:
            sa.vips = vips
        sa.name = name
        if sa.state == state:
            return []
        old, sa.state = sa.state, state
        return [self._transition(sa, old, state)]

    def ike_gone(
        self, ike_id: int, name: str | None = None, remote: str | None = None
    ) -> list[IkeTransition]:
        """IKE_SA `ike_id` goes away: DESTROYING, the last word about it."""
        if ike_id in self._gone:
            return []
        self._gone[ike_id] = self.connections_on(ike_id)
        while len(self._gone) > _GONE_MEMORY:
            self._gone.popitem(last=False)
        sa = self._ikes.pop(ike_id, None)
        if sa is None:
            if name is None:
                return []  # never heard of: nothing to tell
            sa = IkeSa(ike_id, name, CREATED, remote)
        if remote is not None:
            sa.remote = remote
        return [self._transition(sa, sa.state, DESTROYING)]

    def child_up(
        self,
        ike_id: int,
        child_id: int,
        child_name: str,
        connection: str | None,
    ) -> None:
        sa = self._ikes.get(ike_id)
        if sa is not None:
            sa.children[child_id] = ChildSa(child_id, child_name, connection)

    def child_down(self, ike_id: int, child_id: int) -> None:
        sa = self._ikes.get(ike_id)
        if sa is not None:
            sa.children.pop(child_id, None)

    def rekey_child(self, ike_id: int, old_id: int, new_id: int, name: str) -> bool:
        """CHILD_SA `old_id` of IKE_SA `ike_id` was rekeyed into `new_id`: the new one is
        the same connection's. False when the old one is not known here."""
        sa = self._ikes.get(ike_id)
        old = sa.children.pop(old_id, None) if sa is not None else None
        if sa is None or old is None:
            return False
        sa.children[new_id] = ChildSa(new_id, name, old.connection)
        return True

    def keep_children(self, ike_id: int, present: set[int]) -> None:
        """list-sas answered: IKE_SA `ike_id` has the CHILD_SAs `present`, no others."""
        sa = self._ikes.get(ike_id)
        if sa is not None:
            for child_id in [c for c in sa.children if c not in present]:
                del sa.children[child_id]

    def move_children(self, old_id: int, new_id: int) -> None:
        """An IKE_SA rekey: the CHILD_SAs now live in the new IKE_SA."""
        old, new = self._ikes.get(old_id), self._ikes.get(new_id)
        if old is not None and new is not None:
            new.children.update(old.children)
            old.children.clear()

    def owner_of_child(self, ike_id: int, child_id: int) -> str | None:
        sa = self._ikes.get(ike_id)
        child = sa.children.get(child_id) if sa is not None else None
        return child.connection if child is not None else None

    def sync(self, present: set[int]) -> list[IkeTransition]:
        """list-sas answered: the IKE_SAs not in `present` are gone."""
        out: list[IkeTransition] = []
        for ike_id in [i for i in self._ikes if i not in present]:
            out.extend(self.ike_gone(ike_id))
        return out

    def restarted(self) -> list[IkeTransition]:
        """charon came back from a restart: every IKE_SA known is gone with the old charon,
        and the ids it numbered will be numbered again (the memory of gone ids is cleared)."""
        out = [self._transition(sa, sa.state, DESTROYING) for sa in self._ikes.values()]
        self._ikes.clear()
        self._gone.clear()
        return out

    def _transition(self, sa: IkeSa, old: str, new: str) -> IkeTransition:
        connections = tuple(sorted({c.connection for c in sa.children.values() if c.connection}))
        return IkeTransition(sa.unique_id, sa.name, old, new, sa.remote, connections, sa.vips)
