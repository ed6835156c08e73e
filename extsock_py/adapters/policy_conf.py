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

import difflib
import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from extsock_py.domain.errors import ConfigError
from extsock_py.domain.policy import (
    PROBE_KINDS,
    BackoffPolicy,
    FailbackPolicy,
    FailoverPolicy,
    MonitorPolicy,
    ProbeKind,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
DURATION_FORM = "a duration such as 500ms, 5s, 2m or 1h (a bare number means seconds)"
BOOL_FORM = "yes or no"
ADDRESS_FORM = "an IPv4 or IPv6 address"
NETNS_FORM = "the name of a network namespace in /run/netns"
_NETNS = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,254}")


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


def _spoken(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def at_most(limit: float) -> AfterValidator:
    """A duration bound that names itself: a policy never waits for 10^16 s."""

    def check(value: float) -> float:
        if value > limit:
            raise ValueError(f"{_spoken(value)} is too long: at most {_spoken(limit)}")
        return value

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
HOUR, DAY = 3600.0, 86400.0
Flag = Annotated[bool, BeforeValidator(parse_bool)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffModel(_Strict):
    initial: Annotated[PositiveDuration, at_most(HOUR)] = 1.0
    maximum: Annotated[PositiveDuration, at_most(DAY)] = 60.0
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)


class FailbackModel(_Strict):
    enabled: Flag = False
    probe_interval: Annotated[PositiveDuration, at_most(HOUR)] = 10.0
    probe_timeout: Annotated[PositiveDuration, at_most(10 * 60.0)] = 5.0
    hold_down: Annotated[Duration, at_most(DAY)] = 30.0


def parse_address(value: object) -> str:
    text = str(value).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"invalid address {text!r}: expected {ADDRESS_FORM}") from None


def parse_netns(value: object) -> str:
    text = str(value).strip()
    if not _NETNS.fullmatch(text):
        raise ValueError(f"invalid network namespace name {text!r}: expected {NETNS_FORM}")
    return text


def parse_probe(value: object) -> str:
    text = str(value).strip().lower()
    if text not in PROBE_KINDS:
        shown = str(value).strip()
        raise ValueError(f"invalid probe {shown!r}: expected {' or '.join(PROBE_KINDS)}")
    return text


Address = Annotated[str, BeforeValidator(parse_address)]
ProbeName = Annotated[ProbeKind, BeforeValidator(parse_probe)]
NetnsName = Annotated[str, BeforeValidator(parse_netns)]


class MonitorModel(_Strict):
    enabled: Flag = False
    local: Address | None = None
    remote: Address | None = None
    port: int = Field(default=33434, ge=1, le=65535)
    interval: Annotated[PositiveDuration, at_most(60.0)] = 0.5
    misses: int = Field(default=3, ge=1, le=100)
    netns: NetnsName | None = None
    probe: ProbeName = "udp"


class PolicyModel(_Strict):
    connect_timeout: Annotated[PositiveDuration, at_most(10 * 60.0)] = 5.0
    dead_after_retransmits: int = Field(default=1, ge=0, le=10)
    attempts_per_gateway: int = Field(default=1, ge=1, le=100)
    max_cycles: int = Field(default=10, ge=0, le=1_000_000)
    backoff: BackoffModel = Field(default_factory=BackoffModel)
    failback: FailbackModel = Field(default_factory=FailbackModel)
    monitor: MonitorModel = Field(default_factory=MonitorModel)

    def to_domain(self) -> FailoverPolicy:
        return FailoverPolicy(
            connect_timeout=self.connect_timeout,
            dead_after_retransmits=self.dead_after_retransmits,
            attempts_per_gateway=self.attempts_per_gateway,
            max_cycles=self.max_cycles,
            backoff=BackoffPolicy(**self.backoff.model_dump()),
            failback=FailbackPolicy(**self.failback.model_dump()),
            monitor=MonitorPolicy(**self.monitor.model_dump()),
        )


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


def _fields_of(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    for part in path[:-1]:
        annotation = model.model_fields.get(str(part))
        if annotation is None or not isinstance(annotation.annotation, type):
            break
        if issubclass(annotation.annotation, BaseModel):
            model = annotation.annotation
    return list(model.model_fields)


def _validate(
    data: dict[str, Any], where: SectionLike, prefix: str, origin: SectionLike | None = None
) -> PolicyModel:
    try:
        model = PolicyModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = tuple(err["loc"])
        line, file = _locate(origin or where, path)
        key = ".".join([prefix, *map(str, path)])
        if err["type"] == "extra_forbidden":
            known = _fields_of(PolicyModel, path)
            close = difflib.get_close_matches(str(path[-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                file, line, key, f"unknown key{hint}", "one of " + ", ".join(known)
            ) from None
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(file, line, key, message) from None
    return model


def _check_monitor(monitor: MonitorModel, where: SectionLike, prefix: str) -> None:
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
    default_model = _validate(defaults, section, "extsock")
    overrides = section.sections.get("connections")
    policies: dict[str, FailoverPolicy] = {}
    for name in connections:
        own = overrides.sections.get(name) if overrides is not None else None
        if own is None:
            _check_monitor(default_model.monitor, section, "extsock")
            policies[name] = default_model.to_domain()
            continue
        merged = _merge(defaults, _as_dict(own))
        prefix = f"extsock.connections.{name}"
        model = _validate(merged, own, prefix)
        _check_monitor(model.monitor, own, prefix)
        policies[name] = model.to_domain()
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
    return default_model.to_domain(), policies


POLICY_KEYS_DOC = PolicyModel.model_json_schema()
