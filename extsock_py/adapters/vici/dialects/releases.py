"""One dialect per strongSwan release line: which events it has, how it words what matters.

`choose(version)` picks the dialect for the version charon reports (VICI `version`). A charon
newer than every known release gets the newest dialect, older than every known one the oldest,
each with a warning: extsock keeps working, and the log says what to check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from extsock_py.adapters.vici.dialects.wording import ALERTS_6_0_3, RULES_5_9, LogRule
from extsock_py.domain import observations as ob

BASE_EVENTS = ("ike-updown", "child-updown", "ike-rekey", "child-rekey", "ike-update", "log")
"""Every release since 5.x has these; a refused registration of one is an error."""

Version = tuple[int, int, int]


@dataclass(frozen=True)
class Dialect:
    """What extsock knows of one release line, from `since` up to the next dialect's."""

    name: str
    since: Version
    rules: tuple[LogRule, ...]
    alerts: Mapping[str, ob.Signal] = field(default_factory=dict)
    events: tuple[str, ...] = BASE_EVENTS

    @property
    def optional_events(self) -> tuple[str, ...]:
        """Registered when charon accepts them; a refusal switches to the log lines."""
        return ("alert",) if self.alerts else ()

    def reader(self, alerts: bool) -> DialectReader:
        """The translation to use; `alerts`: charon confirmed the `alert` registration."""
        use_alerts = alerts and bool(self.alerts)
        rules = tuple(r for r in self.rules if not (use_alerts and r.alert_covers))
        return DialectReader(self, rules, self.alerts if use_alerts else {})


@dataclass(frozen=True)
class DialectReader:
    """Raw `log` and `alert` observations into IkeSignal (or None: nothing extsock uses)."""

    dialect: Dialect
    rules: tuple[LogRule, ...]
    alerts: Mapping[str, ob.Signal]

    @property
    def uses_alerts(self) -> bool:
        return bool(self.alerts)

    @property
    def log_prefixes(self) -> tuple[str, ...]:
        """What every line of `rules` starts with: the listener drops other lines unread."""
        return tuple(dict.fromkeys(rule.prefix for rule in self.rules))

    def translate(self, obs: ob.Observation) -> ob.Observation | None:
        if isinstance(obs, ob.LogLine):
            return self._line(obs)
        if isinstance(obs, ob.Alert):
            return self._alert(obs)
        return obs

    def _line(self, line: ob.LogLine) -> ob.IkeSignal | None:
        if not line.ike_name or line.ike_id is None:
            return None
        for rule in self.rules:
            match = rule.pattern.match(line.message)
            if match is None:
                continue
            if rule.signal is ob.Signal.INITIATING and int(match.group(1)) != line.ike_id:
                return None  # an IKE_SA rekey, logged in the old (established) SA's context
            target = match.groupdict().get("target")
            return ob.IkeSignal(rule.signal, line.ike_name, line.ike_id, line.message, target)
        return None

    def _alert(self, alert: ob.Alert) -> ob.IkeSignal | None:
        signal = self.alerts.get(alert.kind)
        if signal is None or not alert.ike_name or alert.ike_id is None:
            return None
        return ob.IkeSignal(signal, alert.ike_name, alert.ike_id, alert.kind)


DIALECTS: tuple[Dialect, ...] = (
    Dialect("strongSwan 5.9", (5, 9, 0), RULES_5_9),
    # 6.0.0-6.0.2: the same events and wording; the lab's plugin list differs (no sha1, sha2,
    # hmac, aes, kdf: openssl provides them), which is not the sidecar's concern.
    Dialect("strongSwan 6.0", (6, 0, 0), RULES_5_9),
    # 6.0.3 added the `alert` event: the primary signal for retransmits and give-ups.
    Dialect("strongSwan 6.0.3", (6, 0, 3), RULES_5_9, ALERTS_6_0_3),
)
NEWEST_KNOWN: tuple[int, int] = (6, 1)
"""The newest release line whose source the dialects were checked against."""

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Choice:
    dialect: Dialect
    version: str | None
    warning: str | None = None


def parse_version(text: str | None) -> Version | None:
    match = _VERSION.search(text or "")
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def choose(version: str | None) -> Choice:
    """The dialect for charon's reported `version` (None: charon did not say)."""
    newest = DIALECTS[-1]
    parsed = parse_version(version)
    if parsed is None:
        return Choice(
            newest,
            version,
            f"charon reports no version extsock can read ({version!r}); "
            f"using the newest dialect ({newest.name})",
        )
    if parsed[:2] > NEWEST_KNOWN:
        return Choice(
            newest,
            version,
            f"charon {version} is newer than every release extsock knows "
            f"(up to {NEWEST_KNOWN[0]}.{NEWEST_KNOWN[1]}); using the newest dialect "
            f"({newest.name}); check the log wording extsock depends on "
            "(README, strongSwan releases)",
        )
    known = [d for d in DIALECTS if d.since <= parsed]
    if not known:
        oldest = DIALECTS[0]
        return Choice(
            oldest,
            version,
            f"charon {version} is older than every release extsock knows; "
            f"using the oldest dialect ({oldest.name})",
        )
    return Choice(known[-1], version)
