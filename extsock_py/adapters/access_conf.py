"""The `control` subsection of the `extsock` policy: which unix groups read or operate.

    extsock {
        control {
            read = adm, monitoring    # may look: status, history, health, watch
            operate = netops          # may also act: switch, hold, ..., load, unload
            push {                    # what a non-root operator may load (domain/push.py)
                gateways = 203.0.113.0/24, segw.example.net
                local_ts = 10.50.0.0/16
                remote_ts = 10.9.0.0/16
                ids = app-*.example.net
                max = 64
            }
        }
    }

Group names (or numbers) are resolved when the file is read: an unknown group is an error
naming file, line and key, like any other mistake in the file.
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
from typing import Any

from extsock_py.adapters.policy_conf import SectionLike
from extsock_py.domain.access import ControlAccess
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.gateways import classify_address
from extsock_py.domain.identity import IdPattern, parse_pattern
from extsock_py.domain.push import PushPolicy
from extsock_py.domain.selectors import Network

KEYS = ("read", "operate")
GROUPS_FORM = "a comma-separated list of unix group names or numbers"
PUSH_KEYS = ("gateways", "local_ts", "remote_ts", "ids", "max")
PUSH_FORMS = {
    "gateways": "a comma-separated list of networks (203.0.113.0/24, 2001:db8::/32, or one "
    "address) and DNS names",
    "local_ts": "a comma-separated list of networks (10.50.0.0/16, 2001:db8:50::/48)",
    "remote_ts": "a comma-separated list of networks (10.9.0.0/16, 2001:db8:9::/48)",
    "ids": "a comma-separated list of identity patterns (app-*.example.net, *@apps.example, "
    "email:*@x.example, 10.50.0.*)",
    "max": "a whole number from 0 to 4096",
}
MAX_PUSHED = 4096


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
        if name != "push":
            raise ConfigError(
                sub.file, sub.line, f"extsock.control.{name}", "unknown section", "push"
            )
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
    push = control.sections.get("push")
    return ControlAccess(
        read_gids=gids.get("read"),
        operate_gids=gids.get("operate", frozenset()),
        push=read_push(push) if push is not None else None,
    )


def _network(text: str) -> Network:
    if text.count("/") > 1 or not all(c.isalnum() or c in ".:/" for c in text):
        raise ValueError(text)
    if "/" in text and not text.rsplit("/", 1)[1].isdigit():
        raise ValueError(text)
    return ipaddress.ip_network(text, strict=True)


def read_push(section: SectionLike) -> PushPolicy:
    """The `push` subsection: what a non-root operator may load. Every key is required."""
    for name, sub in section.sections.items():
        raise ConfigError(sub.file, sub.line, f"extsock.control.push.{name}", "unknown section")
    values: dict[str, Any] = {}
    for key, value in section.entries.items():
        where = (getattr(value, "file", section.file), value.line, f"extsock.control.push.{key}")
        if key not in PUSH_KEYS:
            close = difflib.get_close_matches(key, PUSH_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(*where, f"unknown key{hint}", "one of " + ", ".join(PUSH_KEYS))
        items = [part.strip() for part in value.text.split(",") if part.strip()]
        try:
            values[key] = _push_value(key, value.text.strip(), items)
        except ValueError as exc:
            raise ConfigError(*where, str(exc), PUSH_FORMS[key]) from None
    for key in PUSH_KEYS:
        if key not in values:
            raise ConfigError(
                section.file,
                section.line,
                f"extsock.control.push.{key}",
                "missing",
                PUSH_FORMS[key],
            )
    nets, names = values["gateways"]
    return PushPolicy(
        nets, names, values["local_ts"], values["remote_ts"], values["ids"], values["max"]
    )


def _push_value(key: str, text: str, items: list[str]) -> Any:
    if key == "max":
        if not text.isdigit() or int(text) > MAX_PUSHED:
            raise ValueError(f"invalid max {text!r}")
        return int(text)
    if not items:
        raise ValueError("empty")
    if key == "ids":
        patterns: list[IdPattern] = []
        for item in items:
            patterns.append(parse_pattern(item))
        return tuple(patterns)
    if key == "gateways":
        nets: list[Network] = []
        names: set[str] = set()
        for item in items:
            try:
                nets.append(_network(item))
                continue
            except ValueError:
                pass
            verdict = classify_address(item)
            if not verdict.initiable or any(c.isspace() for c in item):
                raise ValueError(f"{item!r} is neither a network nor a DNS name")
            names.add(item.lower().rstrip("."))
        return tuple(nets), frozenset(names)
    out: list[Network] = []
    for item in items:
        try:
            out.append(_network(item))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (host bits must be zero)") from None
    return tuple(out)
