"""The failover policy from the `extsock` section of swanctl.conf, validated with pydantic.

swanctl itself ignores top-level sections it does not know, so the policy can live in
the same file as the connections:

    extsock {
        connect_timeout = 5s          # defaults for every managed connection
        failback { enabled = yes }
        connections {
            home { dead_after_retransmits = 2 }   # overrides for one connection
        }
    }
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol, get_args, get_origin, get_type_hints

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import core_schema

from extsock_py.domain.errors import ConfigError
from extsock_py.domain.policy import Accepts, FailoverPolicy, Form, MonitorPolicy

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
DURATION_FORM = "a duration such as 500ms, 5s, 2m or 1h (a bare number means seconds)"
BOOL_FORM = "yes or no"
ADDRESS_FORM = "an IPv4 or IPv6 address"
NETNS_FORM = (
    "the name of a network namespace in /run/netns: letters, digits, _ . - (not starting "
    "with '.' or '-', no '/' or '..', at most 255)"
)
_NETNS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def parse_duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.fullmatch(str(value))
    if not match:
        raise ValueError(f"invalid duration {str(value)!r}: expected {DURATION_FORM}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "1", "on", "enabled"):
        return True
    if text in ("no", "false", "0", "off", "disabled"):
        return False
    raise ValueError(f"invalid boolean {str(value)!r}: expected {BOOL_FORM}")


def parse_address(value: object) -> str:
    text = str(value).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"invalid address {text!r}: expected {ADDRESS_FORM}") from None


def parse_netns(value: object) -> str:
    text = str(value).strip()
    if not _NETNS.fullmatch(text) or ".." in text:
        raise ValueError(f"invalid network namespace name {text!r}: expected {NETNS_FORM}")
    return text


def _spoken(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def between(low: float | None, high: float | None) -> AfterValidator:
    """Duration bounds that name themselves: a policy never waits for 10^16 s, nor polls
    every millisecond."""
    accepted = f"(accepted: {_spoken(low or 0.0)} to {_spoken(high)})" if high else ""

    def check(value: float) -> float:
        if high is not None and value > high:
            raise ValueError(f"{_spoken(value)} is too long: at most {_spoken(high)} {accepted}")
        if low is not None and value < low:
            raise ValueError(f"{_spoken(value)} is too short: at least {_spoken(low)} {accepted}")
        return value

    return AfterValidator(check)


def parse_choice(name: str, options: tuple[str, ...]) -> Callable[[object], str]:
    """A parser for one of `options` (a Literal's words), in any case."""

    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in options:
            shown = str(value).strip()
            raise ValueError(f"invalid {name} {shown!r}: expected {' or '.join(options)}")
        return text

    return parse


_PARSERS: dict[Form, Callable[[object], object]] = {
    Form.DURATION: parse_duration,
    Form.FLAG: parse_bool,
    Form.ADDRESS: parse_address,
    Form.NETNS: parse_netns,
}


def _parser(parse: Callable[[object], object]) -> BeforeValidator:
    # None stays None: an optional key (an address, a namespace) may be left unset
    return BeforeValidator(lambda value: value if value is None else parse(value))


def _field_type(name: str, hint: Any) -> Any:
    """The pydantic form of one domain field: its Accepts turned into parsing and bounds."""
    if get_origin(hint) is not Annotated:
        if dataclasses.is_dataclass(hint):
            return Annotated[hint, DomainSchema()]
        return hint
    base, *meta = get_args(hint)
    accepts = next((m for m in meta if isinstance(m, Accepts)), Accepts())
    parts: list[Any] = []
    if accepts.form is Form.CHOICE:
        parts.append(_parser(parse_choice(name, tuple(map(str, get_args(base))))))
    elif accepts.form in _PARSERS:
        parts.append(_parser(_PARSERS[accepts.form]))
    if accepts.form is Form.DURATION:
        # durations name their bounds in their own unit; numbers as pydantic says them
        parts.append(between(accepts.ge, accepts.le))
    else:
        parts.append(Field(ge=accepts.ge, gt=accepts.gt, le=accepts.le))
    return Annotated[(base, *parts)]


class DomainSchema:
    """Pydantic metadata: validate a domain dataclass key by key, as its `Accepts` say, with
    its own defaults and no unknown keys. The domain stays free of pydantic."""

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        hints = get_type_hints(source, include_extras=True)
        fields: list[core_schema.DataclassField] = []
        for spec in dataclasses.fields(source):
            schema = handler.generate_schema(_field_type(spec.name, hints[spec.name]))
            if spec.default is not dataclasses.MISSING:
                schema = core_schema.with_default_schema(schema, default=spec.default)
            elif spec.default_factory is not dataclasses.MISSING:
                schema = core_schema.with_default_schema(
                    schema, default_factory=spec.default_factory
                )
            fields.append(core_schema.dataclass_field(spec.name, schema))
        args = core_schema.dataclass_args_schema(source.__name__, fields, extra_behavior="forbid")
        return core_schema.dataclass_schema(
            source, args, [spec.name for spec in dataclasses.fields(source)], frozen=True
        )


POLICY = TypeAdapter[FailoverPolicy](Annotated[FailoverPolicy, DomainSchema()])


def validate_policy(data: Mapping[str, Any]) -> FailoverPolicy:
    """A FailoverPolicy from nested key/value data; pydantic's ValidationError if it is wrong."""
    return POLICY.validate_python(dict(data))


class ValueLike(Protocol):
    text: str
    line: int


class SectionLike(Protocol):
    @property
    def entries(self) -> Mapping[str, Any]: ...

    @property
    def sections(self) -> Mapping[str, Any]: ...

    @property
    def file(self) -> str: ...

    @property
    def line(self) -> int: ...


def _as_dict(section: SectionLike, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    data: dict[str, Any] = {key: value.text for key, value in section.entries.items()}
    for name, sub in section.sections.items():
        if name not in skip:
            data[name] = _as_dict(sub)
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _locate(section: SectionLike, path: tuple[str | int, ...]) -> tuple[int, str]:
    """The line of the deepest key of `path` found under `section`, and that key's file."""
    line, file, node = section.line, section.file, section
    for part in path:
        key = str(part)
        if key in node.entries:
            value = node.entries[key]
            return value.line, getattr(value, "file", file)
        if key in node.sections:
            node = node.sections[key]
            line, file = node.line, node.file
        else:
            break
    return line, file


def _fields_of(cls: type[Any], path: tuple[str | int, ...]) -> list[str]:
    """The keys accepted where `path` ends: the fields of the dataclass that holds its last key."""
    for part in path[:-1]:
        hints = get_type_hints(cls)
        inner = hints.get(str(part))
        if inner is None or not (isinstance(inner, type) and dataclasses.is_dataclass(inner)):
            break
        cls = inner
    return [spec.name for spec in dataclasses.fields(cls)]


def _validate(
    data: dict[str, Any], where: SectionLike, prefix: str, origin: SectionLike | None = None
) -> FailoverPolicy:
    try:
        policy = validate_policy(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = tuple(err["loc"])
        line, file = _locate(origin or where, path)
        key = ".".join([prefix, *map(str, path)])
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            known = _fields_of(FailoverPolicy, path)
            close = difflib.get_close_matches(str(path[-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                file, line, key, f"unknown key{hint}", "one of " + ", ".join(known)
            ) from None
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(file, line, key, message) from None
    return policy


def _check_monitor(monitor: MonitorPolicy, where: SectionLike, prefix: str) -> None:
    """An enabled monitor needs both addresses, of one family."""
    if not monitor.enabled:
        return
    for key, accepted in (
        ("local", "an address inside the local traffic selector, present on this host"),
        ("remote", "an address inside the remote traffic selector"),
    ):
        if getattr(monitor, key) is None:
            line, file = _locate(where, ("monitor", "enabled"))
            raise ConfigError(
                file, line, f"{prefix}.monitor.{key}", "the monitor is enabled without it", accepted
            )
    assert monitor.local is not None and monitor.remote is not None
    if ipaddress.ip_address(monitor.local).version != ipaddress.ip_address(monitor.remote).version:
        line, file = _locate(where, ("monitor", "remote"))
        raise ConfigError(
            file, line, f"{prefix}.monitor.remote", "not of the same family as monitor.local"
        )


def locate_policy_key(
    section: SectionLike, connection: str, path: tuple[str, ...]
) -> tuple[str, int, str]:
    """(file, line, dotted key) of the setting at `path` that applies to `connection`:
    its own override when it has one, else the section's default."""
    overrides = section.sections.get("connections")
    own = overrides.sections.get(connection) if overrides is not None else None
    if own is not None and _has(own, path):
        line, file = _locate(own, path)
        return file, line, ".".join(["extsock.connections", connection, *path])
    line, file = _locate(section, path)
    return file, line, ".".join(["extsock", *path])


def _has(section: SectionLike, path: tuple[str, ...]) -> bool:
    node = section
    for part in path[:-1]:
        if part not in node.sections:
            return False
        node = node.sections[part]
    return path[-1] in node.entries


def read_policies(
    section: SectionLike | None, connections: list[str]
) -> tuple[FailoverPolicy, dict[str, FailoverPolicy]]:
    """The default policy and the effective policy of each named connection."""
    if section is None:
        default = FailoverPolicy()
        return default, {name: default for name in connections}
    defaults = _as_dict(section, skip=("connections", "control"))  # control: access_conf
    default_policy = _validate(defaults, section, "extsock")
    overrides = section.sections.get("connections")
    policies: dict[str, FailoverPolicy] = {}
    for name in connections:
        own = overrides.sections.get(name) if overrides is not None else None
        if own is None:
            _check_monitor(default_policy.monitor, section, "extsock")
            policies[name] = default_policy
            continue
        merged = _merge(defaults, _as_dict(own))
        prefix = f"extsock.connections.{name}"
        policy = _validate(merged, own, prefix)
        _check_monitor(policy.monitor, own, prefix)
        policies[name] = policy
    if overrides is not None:
        for name, own in overrides.sections.items():
            if name not in connections:
                close = difflib.get_close_matches(name, connections, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(
                    own.file,
                    own.line,
                    f"extsock.connections.{name}",
                    f"no connection of that name{hint}",
                    "the name of a connection in the connections section",
                )
    return default_policy, policies
