"""One sync of charon to a swanctl.conf, as `swanctl --load-all` does it; daemon and CLI alike.

The stages run in swanctl's order (load_all.c): credentials, authorities, pools,
connections. Each stage reads what charon holds of its kind first, loads what the file
has, then unloads what charon holds and the file no longer has:
- keys: `get-keys`, then each `load-key` answers the id it got; ids not answered are
  unloaded (load_creds.c). Shared secrets likewise by their section name (`get-shared`).
- certificates cannot be unloaded one by one over VICI (there is no unload-cert);
  swanctl leaves them too, and only `--clear` (`clear-creds`, SyncTarget.clear) drops
  them all, with every key and secret, before the credentials are loaded again.
- authorities, pools and connections by name; connections `keep_connection` accepts
  (the daemon's clones, managed connections) are left alone.
A failure of one item is reported and the sync goes on; losing charon stops it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from extsock_py.domain.credentials import AuthorityLoad, Credentials, PoolLoad
from extsock_py.domain.errors import CharonCommandFailed, CharonError, CharonUnreachable
from extsock_py.interfaces.ports import LoadPort

T = TypeVar("T")
U = TypeVar("U")
KINDS = ("certificate", "key", "shared", "authority", "pool", "connection")


@dataclass(frozen=True)
class Outcome:
    """One request of the sync: what was (un)loaded, and charon's refusal if it refused."""

    kind: str  # one of KINDS
    action: str  # "load" or "unload"
    name: str  # the file, secret id, or section name; never a secret
    detail: str = ""  # the key or secret type, the certificate type and flag
    error: str | None = None
    errmsg: str | None = None  # charon's own words, when it answered that it refused

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SyncReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def of(self, kind: str, action: str = "load") -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind and o.action == action]

    def count(self, kinds: Iterable[str], action: str = "load", ok: bool = True) -> int:
        wanted = set(kinds)
        return sum(o.kind in wanted and o.action == action and o.ok == ok for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def _collect(into: list[T], call: Callable[[U], T], arg: U) -> None:
    into.append(call(arg))


def _keep_nothing(name: str) -> bool:
    return False


@dataclass(frozen=True)
class SyncTarget:
    """What charon should hold; a stage whose value is None is not run."""

    credentials: Credentials | None = None
    authorities: Sequence[AuthorityLoad] | None = None
    pools: Sequence[PoolLoad] | None = None
    connections: Mapping[str, Mapping[str, Any]] | None = None
    keep_connection: Callable[[str], bool] = _keep_nothing
    clear: bool = False  # clear-creds first, as `swanctl --clear`: drops certificates too


class SwanctlSync:
    """Brings charon to a SyncTarget through the typed LoadPort."""

    def __init__(
        self, charon: LoadPort, on_outcome: Callable[[Outcome], None] | None = None
    ) -> None:
        self._charon = charon
        self._on_outcome = on_outcome

    def run(self, target: SyncTarget) -> SyncReport:
        report = SyncReport()
        if target.credentials is not None:
            if target.clear:
                self._charon.clear_creds()
            self._credentials(target.credentials, report)
        if target.authorities is not None:
            self._named(
                report,
                "authority",
                self._charon.authority_names(),
                [(a.name, partial(self._charon.load_authority, a)) for a in target.authorities],
                self._charon.unload_authority,
            )
        if target.pools is not None:
            self._named(
                report,
                "pool",
                self._charon.pool_names(),
                [(p.name, partial(self._charon.load_pool, p)) for p in target.pools],
                self._charon.unload_pool,
            )
        if target.connections is not None:
            present = [n for n in self._charon.list_conn_names() if not target.keep_connection(n)]
            self._named(
                report,
                "connection",
                present,
                [
                    (name, partial(self._charon.load_conn, name, body))
                    for name, body in target.connections.items()
                ],
                self._charon.unload_conn,
            )
        return report

    # -- stages ------------------------------------------------------------------------------

    def _credentials(self, creds: Credentials, report: SyncReport) -> None:
        stale_keys = self._charon.key_ids()
        stale_shared = self._charon.shared_ids()
        for cert in creds.certificates:
            detail = cert.type + (f" {cert.flag}" if cert.flag else "")
            load_cert = partial(self._charon.load_cert, cert)
            self._do(report, "certificate", "load", cert.source, detail, load_cert)
        for key in creds.keys:
            answered: list[str | None] = []
            load_key = partial(_collect, answered, self._charon.load_key, key)
            ok = self._do(report, "key", "load", key.source, key.type, load_key)
            if not ok and key.fallback is not None:  # as load_creds.c load_keys()
                fallback = key.fallback
                load_key = partial(_collect, answered, self._charon.load_key, fallback)
                ok = self._do(report, "key", "load", fallback.source, fallback.type, load_key)
            if ok and stale_keys is not None:
                # without the id charon gave a key, no key can safely count as stale
                got = answered[0] if answered else None
                stale_keys = None if got is None else [k for k in stale_keys if k != got]
        for secret in creds.shared:
            load_shared = partial(self._charon.load_shared, secret)
            ok = self._do(report, "shared", "load", secret.id, secret.type, load_shared)
            if ok and stale_shared is not None:
                stale_shared = [k for k in stale_shared if k != secret.id]
        for key_id in stale_keys or []:
            self._do(report, "key", "unload", key_id, "", partial(self._charon.unload_key, key_id))
        for secret_id in stale_shared or []:
            unload_shared = partial(self._charon.unload_shared, secret_id)
            self._do(report, "shared", "unload", secret_id, "", unload_shared)

    def _named(
        self,
        report: SyncReport,
        kind: str,
        present: Sequence[str] | None,
        loads: Sequence[tuple[str, Callable[[], None]]],
        unload: Callable[[str], None],
    ) -> None:
        stale = list(present or [])
        for name, load in loads:
            stale = [n for n in stale if n != name]
            self._do(report, kind, "load", name, "", load)
        for name in stale:
            self._do(report, kind, "unload", name, "", partial(unload, name))

    def _do(
        self,
        report: SyncReport,
        kind: str,
        action: str,
        name: str,
        detail: str,
        call: Callable[[], object],
    ) -> bool:
        try:
            call()
        except CharonUnreachable:
            raise
        except CharonCommandFailed as exc:
            outcome = Outcome(kind, action, name, detail, str(exc), exc.errmsg)
        except CharonError as exc:
            outcome = Outcome(kind, action, name, detail, str(exc))
        else:
            outcome = Outcome(kind, action, name, detail)
        report.outcomes.append(outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return outcome.ok
