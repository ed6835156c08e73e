"""The config usecase: brings charon and the failover manager to a desired configuration.

Connections with two or more initiable gateways are managed: extsock loads clones of
them, one gateway at a time. Everything else (credentials, authorities, pools, the other
connections) goes through the same SwanctlSync as the CLI's load-all, and charon alone
handles it; what disappeared from the file is unloaded, the managed clones aside.
"""

from __future__ import annotations

import logging

from extsock_py.domain.config import DesiredConfig, split_managed
from extsock_py.domain.profile import parse_clone_name
from extsock_py.domain.reports import ApplyReport
from extsock_py.interfaces.ports import SyncedCharon
from extsock_py.usecases.failover_manager import FailoverManager
from extsock_py.usecases.swanctl_sync import Outcome, SwanctlSync, SyncTarget

log = logging.getLogger("extsock.config")


class ConfigUsecase:
    def __init__(self, charon: SyncedCharon, manager: FailoverManager) -> None:
        self._charon = charon
        self._manager = manager
        self._sync = SwanctlSync(charon, _log_outcome)
        self.current: DesiredConfig | None = None

    def apply(self, desired: DesiredConfig, start: bool = True) -> ApplyReport:
        """Load what swanctl --load-all would, managed connections aside; start new ones."""
        report = ApplyReport()
        report.notes.extend(self._too_new(desired))
        managed, plain = split_managed(desired, self._manager.resolve_name)
        managed_before = set(self._manager.names())

        plain_before = (
            set(split_managed(self.current, self._manager.resolve_name)[1])
            if self.current
            else set()
        )

        def keep(name: str) -> bool:
            if name in managed and name not in plain_before:
                # An as-written copy loaded outside extsock (swanctl): the takeover replaces
                # it make-before-break; unloading it here would cut its tunnel first.
                return True
            clone = parse_clone_name(name)
            return clone is not None and (
                clone.connection in managed or clone.connection in managed_before
            )

        synced = self._sync.run(
            SyncTarget(
                credentials=desired.credentials,
                authorities=desired.authorities,
                pools=desired.pools,
                connections=plain,
                keep_connection=keep,
            )
        )
        report.credentials = synced.count(("certificate", "key", "shared"))
        report.failures = [f"{o.action} {o.kind} '{o.name}': {o.error}" for o in synced.failures]
        for name in plain:
            report.plain.append(name)
        report.removed.extend(o.name for o in synced.of("connection", "unload") if o.ok)
        for gone in [n for n in self._manager.names() if n not in managed]:
            self._manager.forget(gone)
            report.removed.append(gone)
        to_start = []
        for name, profile in managed.items():
            for verdict in profile.not_gateways:
                note = f"{name}: remote_addrs entry '{verdict.address}' ignored: {verdict.reason}"
                report.notes.append(note)
                log.warning("%s", note)
            if self._manager.manage(profile):
                to_start.append(name)
            report.managed.append(name)
            log.info("%s: managed, gateways %s", name, ", ".join(profile.gateways))
        self.current = desired
        if start:
            self._manager.start_all(to_start)
        return report

    def _too_new(self, desired: DesiredConfig) -> list[str]:
        """What the file uses that the charon in use is too old for (asked only then)."""
        if not desired.newer_options:
            return []
        version = self._charon.version().get("version", "")
        notes = []
        for option in desired.newer_options:
            if option.needs_newer_than(version):
                note = (
                    f"{option.file}:{option.line}: {option.key} needs strongSwan "
                    f"{option.since} or later, charon is {version}: it will refuse that config"
                )
                log.warning("%s", note)
                notes.append(note)
        return notes


def _log_outcome(outcome: Outcome) -> None:
    what = f"{outcome.kind} '{outcome.name}'" + (f" ({outcome.detail})" if outcome.detail else "")
    if not outcome.ok:
        log.warning("%sing %s failed: %s", outcome.action, what, outcome.error)
    elif outcome.kind == "connection" and outcome.action == "load":
        log.info("%s: loaded as is (fewer than two gateways: charon handles it)", outcome.name)
    else:
        log.info("%sed %s", outcome.action, what)
