"""In-memory fakes of the ports (cosmicpython style): they keep state and record calls.

Tests assert on what the fakes hold and recorded, never on mock calls.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from extsock_py.adapters.publisher import notice_fields
from extsock_py.domain.credentials import (
    AuthorityLoad,
    CertificateLoad,
    KeyLoad,
    PoolLoad,
    SharedLoad,
)
from extsock_py.domain.errors import CharonError
from extsock_py.domain.notices import Notice
from extsock_py.domain.observations import ChildSaInfo, IkeSaInfo
from extsock_py.domain.persisted import SavedConnection
from extsock_py.domain.reports import HistoryRecord

Call = tuple[Any, ...]


@dataclass
class _Failure:
    command: str
    error: Exception
    name: str | None
    times: int | None  # None: every time


class FakeCharonPort:
    """A charon that keeps loaded connections and IKE_SAs and records every command.

    Like charon, it refuses to unload or initiate a connection that is not loaded and
    to terminate when nothing matches. `fail(command, ...)` makes a command raise.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.conns: dict[str, dict[str, Any]] = {}
        self.sas: dict[int, IkeSaInfo] = {}
        self.shared: dict[str, SharedLoad] = {}
        self.keys: dict[str, KeyLoad] = {}
        self.certs: list[CertificateLoad] = []
        self.authorities: dict[str, AuthorityLoad] = {}
        self.pools: dict[str, PoolLoad] = {}
        self.next_ike_id = 1
        self._failures: list[_Failure] = []

    # --- test controls ----------------------------------------------------------------

    def fail(
        self,
        command: str,
        error: Exception | None = None,
        *,
        name: str | None = None,
        times: int | None = None,
    ) -> None:
        """Make `command` raise `error` (CharonError by default), for `name` only if given."""
        failure = error if error is not None else CharonError(f"{command} failed")
        self._failures.append(_Failure(command, failure, name, times))

    def heal(self) -> None:
        self._failures.clear()

    def add_sa(
        self,
        name: str,
        state: str = "ESTABLISHED",
        children: Sequence[tuple[str, str]] = (("net", "INSTALLED"),),
        unique_id: int | None = None,
    ) -> IkeSaInfo:
        """Put an IKE_SA into charon as if it had been negotiated."""
        ike_id = unique_id if unique_id is not None else self._new_id()
        kids = tuple(ChildSaInfo(c, ike_id * 10 + i, s) for i, (c, s) in enumerate(children))
        sa = IkeSaInfo(name=name, unique_id=ike_id, state=state, children=kids)
        self.sas[ike_id] = sa
        self.next_ike_id = max(self.next_ike_id, ike_id + 1)
        return sa

    def establish(self, ike_id: int, child: str = "net") -> IkeSaInfo:
        sa = replace(
            self.sas[ike_id],
            state="ESTABLISHED",
            children=(ChildSaInfo(child, ike_id * 10, "INSTALLED"),),
        )
        self.sas[ike_id] = sa
        return sa

    def commands(self, *names: str) -> list[Call]:
        """The recorded calls of the given commands (all commands when none given)."""
        return [c for c in self.calls if not names or c[0] in names]

    def sa_names(self) -> list[str]:
        return sorted(sa.name for sa in self.sas.values())

    def _new_id(self) -> int:
        ike_id = self.next_ike_id
        self.next_ike_id += 1
        return ike_id

    def _check(self, command: str, name: str | None) -> None:
        for failure in list(self._failures):
            if failure.command != command or failure.name not in (None, name):
                continue
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
            raise failure.error

    # --- CharonPort -------------------------------------------------------------------

    def load_conn(self, name: str, body: Mapping[str, Any]) -> None:
        self.calls.append(("load_conn", name, copy.deepcopy(dict(body))))
        self._check("load_conn", name)
        self.conns[name] = copy.deepcopy(dict(body))

    def unload_conn(self, name: str) -> None:
        self.calls.append(("unload_conn", name))
        self._check("unload_conn", name)
        if name not in self.conns:
            raise CharonError(f"unloading connection '{name}' failed")
        del self.conns[name]

    def list_conn_names(self) -> list[str]:
        self.calls.append(("list_conn_names",))
        self._check("list_conn_names", None)
        return list(self.conns)

    def initiate(self, ike: str, child: str | None) -> None:
        self.calls.append(("initiate", ike, child))
        self._check("initiate", ike)
        if ike not in self.conns:
            raise CharonError(f"no config named '{ike}'")
        ike_id = self._new_id()
        self.sas[ike_id] = IkeSaInfo(name=ike, unique_id=ike_id, state="CONNECTING")

    def load_and_initiate(self, name: str, body: Mapping[str, Any], child: str | None) -> None:
        self.load_conn(name, body)
        self.initiate(name, child)

    def terminate(
        self, ike: str | None = None, ike_id: int | None = None, child_id: int | None = None
    ) -> None:
        if child_id is not None:
            self.calls.append(("terminate-child", child_id))
            self._check("terminate", ike)
            for i, sa in list(self.sas.items()):  # as charon: the IKE_SA stays
                kids = tuple(c for c in sa.children if c.unique_id != child_id)
                if kids != sa.children:
                    self.sas[i] = replace(sa, children=kids)
                    return
            raise CharonError("no matching SAs to terminate found")
        self.calls.append(("terminate", ike, ike_id))
        self._check("terminate", ike)
        doomed = [
            i
            for i, sa in self.sas.items()
            if (ike_id is None or i == ike_id) and (ike is None or sa.name == ike)
        ]
        if not doomed:
            raise CharonError("no matching SAs to terminate found")
        for i in doomed:
            del self.sas[i]

    def list_sas(self) -> list[IkeSaInfo]:
        self.calls.append(("list_sas",))
        self._check("list_sas", None)
        return list(self.sas.values())

    # --- LoadPort ----------------------------------------------------------------------

    def load_cert(self, cert: CertificateLoad) -> None:
        self.calls.append(("load_cert", cert.source))
        self._check("load_cert", cert.source)
        self.certs.append(cert)

    def clear_creds(self) -> None:
        self.calls.append(("clear_creds",))
        self._check("clear_creds", None)
        self.certs.clear()
        self.keys.clear()
        self.shared.clear()

    def load_key(self, key: KeyLoad) -> str | None:
        self.calls.append(("load_key", key.source, key.type))
        self._check("load_key", key.source)
        key_id = hashlib.sha1(key.data.reveal()).hexdigest()
        self.keys[key_id] = key
        return key_id

    def unload_key(self, key_id: str) -> None:
        self.calls.append(("unload_key", key_id))
        self._check("unload_key", key_id)
        if self.keys.pop(key_id, None) is None:
            raise CharonError(f"unload-key failed: key '{key_id}' not found")

    def key_ids(self) -> list[str] | None:
        return list(self.keys)

    def load_shared(self, secret: SharedLoad) -> None:
        self.calls.append(("load_shared", secret.id, secret.type))
        self._check("load_shared", secret.id)
        self.shared[secret.id] = secret

    def unload_shared(self, secret_id: str) -> None:
        self.calls.append(("unload_shared", secret_id))
        self._check("unload_shared", secret_id)
        if self.shared.pop(secret_id, None) is None:
            raise CharonError(f"unload-shared failed: '{secret_id}' not found")

    def shared_ids(self) -> list[str] | None:
        return list(self.shared)

    def load_authority(self, authority: AuthorityLoad) -> None:
        self.calls.append(("load_authority", authority.name))
        self._check("load_authority", authority.name)
        self.authorities[authority.name] = authority

    def unload_authority(self, name: str) -> None:
        self.calls.append(("unload_authority", name))
        self._check("unload_authority", name)
        if self.authorities.pop(name, None) is None:
            raise CharonError(f"unload-authority failed: '{name}' not found")

    def authority_names(self) -> list[str] | None:
        return list(self.authorities)

    def load_pool(self, pool: PoolLoad) -> None:
        self.calls.append(("load_pool", pool.name))
        self._check("load_pool", pool.name)
        self.pools[pool.name] = pool

    def unload_pool(self, name: str) -> None:
        self.calls.append(("unload_pool", name))
        self._check("unload_pool", name)
        if self.pools.pop(name, None) is None:
            raise CharonError(f"unload-pool failed: '{name}' not found")

    def pool_names(self) -> list[str] | None:
        return list(self.pools)

    def version(self) -> dict[str, str]:
        self.calls.append(("version",))
        return {"daemon": "charon", "version": "5.9.8"}


class FakeClock:
    """Time moves only when a test says so."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self.now = start
        self._wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self._wall_offset + self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go back")
        self.now += seconds


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, notice: Notice) -> None:
        """Kept as subscribers read it (the publisher adapter's fields)."""
        self.events.append((notice.kind, notice_fields(notice)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [fields for k, fields in self.events if k == kind]


class MemoryStateStore:
    def __init__(self) -> None:
        self.connections: dict[str, SavedConnection] = {}
        self.records: list[HistoryRecord] = []
        self.saves: list[tuple[str, SavedConnection]] = []  # every write, in order

    def save_connection(self, name: str, state: SavedConnection) -> None:
        self.connections[name] = state
        self.saves.append((name, state))

    def load_connections(self) -> dict[str, SavedConnection]:
        return dict(self.connections)

    def append_history(self, record: HistoryRecord) -> None:
        self.records.append(record)

    def history(
        self, connection: str | None = None, since: float | None = None, limit: int = 100
    ) -> Sequence[HistoryRecord]:
        found = [
            r
            for r in self.records
            if (connection is None or r.connection == connection)
            and (since is None or r.time >= since)
        ]
        return found[-limit:]
