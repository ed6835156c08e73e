"""The `control` subsection of the `extsock` policy: which unix groups read or operate.

    extsock {
        control {
            read = adm, monitoring    # may look: status, history, health, watch
            operate = netops          # may also act: switch, hold, ..., load, unload
        }
    }

Group names (or numbers) are resolved when the file is read: an unknown group is an error
naming file, line and key, like any other mistake in the file.
"""

from __future__ import annotations

import difflib
import grp

from extsock_py.adapters.policy_conf import SectionLike
from extsock_py.domain.access import ControlAccess
from extsock_py.domain.errors import ConfigError

KEYS = ("read", "operate")
GROUPS_FORM = "a comma-separated list of unix group names or numbers"


def _gid(name: str) -> int:
    if name.isdigit():
        return int(name)
    return grp.getgrnam(name).gr_gid


def read_access(section: SectionLike | None) -> ControlAccess:
    """The control access of the `extsock` section; the defaults when it has no `control`."""
    control = section.sections.get("control") if section is not None else None
    if control is None:
        return ControlAccess()
    for name, sub in control.sections.items():
        raise ConfigError(sub.file, sub.line, f"extsock.control.{name}", "unknown section")
    gids: dict[str, frozenset[int]] = {}
    for key, value in control.entries.items():
        where = (getattr(value, "file", control.file), value.line, f"extsock.control.{key}")
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(*where, f"unknown key{hint}", "one of " + ", ".join(KEYS))
        names = [part.strip() for part in value.text.split(",") if part.strip()]
        resolved = set()
        for group in names:
            try:
                resolved.add(_gid(group))
            except KeyError:
                raise ConfigError(*where, f"no unix group named {group!r}", GROUPS_FORM) from None
        gids[key] = frozenset(resolved)
    return ControlAccess(read_gids=gids.get("read"), operate_gids=gids.get("operate", frozenset()))
