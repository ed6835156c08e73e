"""The ports the usecases speak through; adapters implement them, tests fake them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar, runtime_checkable

from extsock_py.domain.credentials import (
    AuthorityLoad,
    CertificateLoad,
    KeyLoad,
    PoolLoad,
    SharedLoad,
)
from extsock_py.domain.notices import Notice
from extsock_py.domain.observations import IkeSaInfo
from extsock_py.domain.persisted import SavedConnection
from extsock_py.domain.reports import HistoryRecord

T = TypeVar("T")


class CharonPort(Protocol):
    """Commands to charon (one VICI session, never shared with the event stream)."""

    def load_conn(self, name: str, body: Mapping[str, Any]) -> None: ...

    def unload_conn(self, name: str) -> None: ...

    def list_conn_names(self) -> list[str]: ...

    def initiate(self, ike: str, child: str | None) -> None:
        """Start an initiation and return at once; the outcome arrives as events."""

    def load_and_initiate(self, name: str, body: Mapping[str, Any], child: str | None) -> None:
        """load_conn then initiate, as one exchange where the transport allows it; raises
        CharonError if either fails (and then no SA of this config is left starting)."""

    def terminate(
        self, ike: str | None = None, ike_id: int | None = None, child_id: int | None = None
    ) -> None:
        """Force-terminate IKE_SAs by config name or unique id, or one CHILD_SA by its
        unique id, without waiting."""

    def list_sas(self) -> list[IkeSaInfo]: ...

    def version(self) -> dict[str, str]: ...


class CommandLanes(Protocol):
    """Runs charon commands off the main loop on a few sessions of their own, in order per
    key (a connection); each outcome comes back to the main loop through `done` (the daemon's
    inbox), so the loop stays the only writer of state."""

    def submit(
        self, key: str, work: Callable[[CharonPort], T], done: Callable[[Future[T]], None]
    ) -> None: ...


class LoadPort(Protocol):
    """What `swanctl --load-all` does to charon: typed load, unload and list per kind.

    The list operations return None when this charon lacks the command (swanctl then
    unloads nothing of that kind).
    """

    def load_cert(self, cert: CertificateLoad) -> None: ...

    def clear_creds(self) -> None:
        """Drop every credential loaded over VICI, certificates too (`swanctl --clear`)."""

    def load_key(self, key: KeyLoad) -> str | None:
        """Load a private key; returns the key id charon gave it (None if it gave none)."""

    def unload_key(self, key_id: str) -> None: ...

    def key_ids(self) -> list[str] | None: ...

    def load_shared(self, secret: SharedLoad) -> None: ...

    def unload_shared(self, secret_id: str) -> None: ...

    def shared_ids(self) -> list[str] | None: ...

    def load_authority(self, authority: AuthorityLoad) -> None: ...

    def unload_authority(self, name: str) -> None: ...

    def authority_names(self) -> list[str] | None: ...

    def load_pool(self, pool: PoolLoad) -> None: ...

    def unload_pool(self, name: str) -> None: ...

    def pool_names(self) -> list[str] | None: ...

    def load_conn(self, name: str, body: Mapping[str, Any]) -> None: ...

    def unload_conn(self, name: str) -> None: ...

    def list_conn_names(self) -> list[str]: ...


class SyncedCharon(CharonPort, LoadPort, Protocol):
    """charon as the daemon's config usecase drives it: connections and credentials."""


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class EventPublisher(Protocol):
    """Fan-out of extsock's own events (control socket subscribers, metrics, logs)."""

    def publish(self, notice: Notice) -> None: ...


#: Follows the published notices; each adapter makes its own form of them (JSON, labels).
Subscriber = Callable[[Notice], None]
Unsubscribe = Callable[[], None]


@runtime_checkable
class Subscribable(Protocol):
    """A publisher whose events adapters may follow (the control socket, metrics)."""

    def subscribe(self, subscriber: Subscriber) -> Unsubscribe: ...


class StateStore(Protocol):
    """What survives a restart of extsock: per-connection state and the failover history."""

    def save_connection(self, name: str, state: SavedConnection) -> None: ...

    def load_connections(self) -> dict[str, SavedConnection]: ...

    def forget_connection(self, name: str) -> None:
        """Drop `name`'s stored state (its history stays)."""

    def append_history(self, record: HistoryRecord) -> None: ...

    def history(
        self, connection: str | None = None, since: float | None = None, limit: int = 100
    ) -> Sequence[HistoryRecord]:
        """The newest `limit` records (of `connection`, from wall time `since` on), oldest
        first."""


class HostAddresses(Protocol):
    """The addresses of this host (its interfaces, virtual IPs included), as text."""

    def addresses(self) -> frozenset[str]: ...


class Resolver(Protocol):
    """DNS: the addresses (A and AAAA) a gateway name has now, in the resolver's order;
    empty when it has none or cannot be resolved."""

    def resolve(self, name: str) -> tuple[str, ...]: ...


@runtime_checkable
class BackgroundResolution(Resolver, Protocol):
    """A resolver that resolves beside the main loop and waits for answers only briefly:
    `resolve_all` asks for several names at once (waiting `wait`, or its own short budget
    when None); `known` is the last answer, without asking again."""

    def resolve_all(
        self, names: Iterable[str], wait: float | None = None
    ) -> Mapping[str, tuple[str, ...]]: ...

    def known(self, name: str) -> tuple[str, ...]: ...


class ProbePort(Protocol):
    """The tunnel monitor's socket for one tunnel; never blocks (see adapters/monitor_prober)."""

    def open(self) -> None:
        """Create the socket; raises OSError (no route, address or namespace missing)."""

    def send(self) -> int:
        """Send one probe; returns answers found pending. Raises OSError if refused."""

    def poll(self) -> int:
        """The number of answers waiting (ECONNREFUSED or datagrams), drained."""

    def close(self) -> None: ...
