"""Connections pushed by applications over the control socket: JSON validated into profiles.

This is the external-application interface of the original extsock plugin: an
application sends a connection body (as swanctl would send it to charon, with
`remote_addrs` as a list or a comma string) and an optional policy, and gets failover.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from extsock_py.adapters.policy_conf import PolicyModel
from extsock_py.domain.gateways import initiable_gateways
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import CLONE_SEPARATOR, PROBE_SUFFIX, ConnectionProfile
from extsock_py.usecases.operator import InvalidConnection

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def _split_addrs(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _vici_value(value: object, where: str) -> Any:
    """JSON values as VICI wants them: strings, lists of strings, sections (dicts)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return [_vici_value(item, where) for item in value]
    if isinstance(value, dict):
        return {str(k): _vici_value(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"{where}: null is not a VICI value (leave the key out instead)")


class ConnectionBody(BaseModel):
    """A load-conn body as swanctl would send it; `remote_addrs` may be a comma string."""

    model_config = ConfigDict(extra="allow", frozen=True)

    remote_addrs: Annotated[list[str], BeforeValidator(_split_addrs), Field(min_length=1)]
    children: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def to_vici(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for key, value in (self.model_extra or {}).items():
            body[key] = _vici_value(value, key)
        body["remote_addrs"] = list(self.remote_addrs)
        if self.children:
            body["children"] = _vici_value(self.children, "children")
        return body


def profile_from_request(
    name: str, body: Mapping[str, Any], policy: Mapping[str, Any] | None = None
) -> ConnectionProfile:
    """Validate a pushed connection and make it a profile; InvalidConnection says why not."""
    if not _NAME.match(name) or CLONE_SEPARATOR in name or name.endswith(PROBE_SUFFIX):
        raise InvalidConnection(
            f"invalid connection name {name!r}: use letters, digits and _ . : - "
            f"(at most 128, no '{CLONE_SEPARATOR}')"
        )
    try:
        parsed = ConnectionBody.model_validate(dict(body))
        vici = parsed.to_vici()
        domain_policy = (
            PolicyModel.model_validate(dict(policy)).to_domain()
            if policy is not None
            else FailoverPolicy()
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "missing"
        raise InvalidConnection(f"{name}: key '{where}': {message}") from None
    except ValueError as exc:
        raise InvalidConnection(f"{name}: {exc}") from None
    gateways, rejected = initiable_gateways(list(parsed.remote_addrs))
    if len(gateways) < 2:
        why = "; ".join(f"'{r.address}': {r.reason}" for r in rejected)
        raise InvalidConnection(
            f"{name}: remote_addrs needs two or more gateways (addresses or DNS names) for "
            f"failover, found {len(gateways)}" + (f" ({why})" if why else "")
        )
    return ConnectionProfile(name, gateways, vici, domain_policy, rejected)
