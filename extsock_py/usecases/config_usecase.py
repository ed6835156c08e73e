"""The config usecase: brings charon and the failover manager to a desired configuration.

Connections with two or more initiable gateways are managed: extsock loads clones of
them, one gateway at a time. Every other connection is loaded as swanctl would load
it, and charon alone handles it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extsock_py.domain.config import DesiredConfig, split_managed
from extsock_py.domain.errors import CharonError, CharonUnreachable
from extsock_py.interfaces.ports import CharonPort
from extsock_py.usecases.failover_manager import FailoverManager

log = logging.getLogger("extsock.config")


@dataclass
class ApplyReport:
    managed: list[str] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    credentials: int = 0
    notes: list[str] = field(default_factory=list)


class ConfigUsecase:
    def __init__(self, charon: CharonPort, manager: FailoverManager) -> None:
        self._charon = charon
        self._manager = manager
        self._plain_loaded: set[str] = set()
        self.current: DesiredConfig | None = None

    def apply(self, desired: DesiredConfig, start: bool = True) -> ApplyReport:
        """Load credentials and connections; start managed connections that are new."""
        report = ApplyReport()
        for credential in [*desired.shared_secrets, *desired.private_keys]:
            message = credential.vici_message()
            if "type" in message and "id" in message:
                self._charon.load_shared(message)
            else:
                self._charon.load_key(message)
            report.credentials += 1
        managed, plain = split_managed(desired)
        for name, body in plain.items():
            self._load_plain(name, body)
            report.plain.append(name)
        for gone in sorted(self._plain_loaded - set(plain)):
            self._quiet_unload(gone)
            report.removed.append(gone)
        self._plain_loaded = set(plain)
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

    def _load_plain(self, name: str, body: Mapping[str, Any]) -> None:
        self._charon.load_conn(name, body)
        log.info("%s: loaded as is (fewer than two gateways: charon handles it)", name)

    def _quiet_unload(self, name: str) -> None:
        try:
            self._charon.unload_conn(name)
        except CharonUnreachable:
            raise
        except CharonError as exc:
            log.debug("ignored: %s", exc)
