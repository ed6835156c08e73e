"""Connections pushed by applications over the control socket: JSON validated into profiles.

This is the external-application interface of the original extsock plugin: an
application sends a connection body (as swanctl would send it to charon, with
`remote_addrs` as a list or a comma string) and an optional policy, and gets failover.

Whoever may push is not thereby root: a body carries only the keys listed here. Nothing
that makes charon run a program (`updown`), read a file, or take a credential
(`certs`, `cacerts`, `pubkeys`) passes; neither does a `reqid` that could take another
connection's. Every local auth round names its identity (`id`), so a pushed connection
never presents the host's default one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from extsock_py.adapters.control.protocol import clip
from extsock_py.adapters.policy_conf import validate_policy
from extsock_py.domain.gateways import initiable_gateways
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import CLONE_SEPARATOR, PROBE_SUFFIX, ConnectionProfile
from extsock_py.domain.push import texts
from extsock_py.domain.selectors import SelectorError, strict_reading
from extsock_py.usecases.operator import InvalidConnection

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
MAX_GATEWAYS = 16
MAX_CHILDREN = 16
MAX_ROUNDS = 4

CONNECTION_KEYS = frozenset(
    [
        "version",
        "local_addrs",
        "remote_addrs",
        "local_port",
        "remote_port",
        "proposals",
        "vips",
        "aggressive",
        "pull",
        "dscp",
        "encap",
        "mobike",
        "dpd_delay",
        "dpd_timeout",
        "fragmentation",
        "childless",
        "send_certreq",
        "send_cert",
        "ocsp",
        "keyingtries",
        "unique",
        "reauth_time",
        "rekey_time",
        "over_time",
        "rand_time",
        "pools",
        "if_id_in",
        "if_id_out",
        "ppk_id",
        "ppk_required",
        "children",
    ]
)
AUTH_KEYS = frozenset(
    [
        "round",
        "auth",
        "id",
        "eap_id",
        "aaa_id",
        "xauth_id",
        "groups",
        "cert_policy",
        "ca_id",
        "revocation",
    ]
)
CHILD_KEYS = frozenset(
    [
        "ah_proposals",
        "esp_proposals",
        "local_ts",
        "remote_ts",
        "rekey_time",
        "life_time",
        "rand_time",
        "rekey_bytes",
        "life_bytes",
        "rand_bytes",
        "rekey_packets",
        "life_packets",
        "rand_packets",
        "mode",
        "policies",
        "policies_fwd_out",
        "dpd_action",
        "close_action",
        "start_action",
        "ipcomp",
        "inactivity",
        "interface",
        "mark_in",
        "mark_in_sa",
        "mark_out",
        "set_mark_in",
        "set_mark_out",
        "if_id_in",
        "if_id_out",
        "label",
        "label_mode",
        "tfc_padding",
        "hw_offload",
        "copy_df",
        "copy_ecn",
        "copy_dscp",
        "sha256_96",
        "replay_window",
        "per_cpu_sas",
    ]
)
_WHY_NOT = {
    "updown": "charon would run it as root",
    "hostaccess": "it only serves an updown script",
    "certs": "credentials and files are loaded with swanctl, not pushed",
    "cacerts": "credentials and files are loaded with swanctl, not pushed",
    "pubkeys": "credentials and files are loaded with swanctl, not pushed",
    "reqid": "it could take a configured connection's",
    "priority": "its policies could be put before a configured connection's",
}


def _refuse(name: str, where: str, key: str, allowed: frozenset[str]) -> InvalidConnection:
    why = _WHY_NOT.get(key, "not among the keys a pushed connection may set")
    return InvalidConnection(
        f"{name}: key '{clip(where + key)}' is not allowed in a pushed connection ({why}); "
        f"allowed: {', '.join(sorted(allowed))}"
    )


def _is_round(key: str) -> bool:
    return key in ("local", "remote") or key.startswith(("local-", "remote-"))


def check_keys(name: str, body: Mapping[str, Any]) -> None:
    """Refuse any key outside the allow-lists, naming it; every local round needs an id."""
    rounds = 0
    for key, value in body.items():
        if _is_round(key):
            rounds += 1
            if not isinstance(value, Mapping):
                raise InvalidConnection(f"{name}: key '{key}' must be a section (an object)")
            for sub in value:
                if sub not in AUTH_KEYS:
                    raise _refuse(name, f"{key}.", str(sub), AUTH_KEYS)
            if key.startswith("local") and not value.get("id"):
                raise InvalidConnection(
                    f"{name}: key '{key}.id' is missing: a pushed connection names its own "
                    "identity in every local auth round"
                )
        elif key not in CONNECTION_KEYS:
            raise _refuse(name, "", str(key), CONNECTION_KEYS | {"local", "remote"})
    if not any(k == "local" or k.startswith("local-") for k in body):
        raise InvalidConnection(
            f"{name}: key 'local' is missing: a pushed connection names its identity (local.id)"
        )
    if rounds > 2 * MAX_ROUNDS:
        raise InvalidConnection(f"{name}: more than {MAX_ROUNDS} auth rounds per side")
    children = body.get("children", {})
    if not isinstance(children, Mapping):
        raise InvalidConnection(f"{name}: key 'children' must be a section (an object)")
    if len(children) > MAX_CHILDREN:
        raise InvalidConnection(f"{name}: more than {MAX_CHILDREN} children")
    for child, options in children.items():
        if not isinstance(options, Mapping):
            raise InvalidConnection(f"{name}: key 'children.{child}' must be a section")
        if not _NAME.fullmatch(str(child)):
            raise InvalidConnection(f"{name}: invalid child name '{clip(str(child))}'")
        for key in options:
            if key not in CHILD_KEYS:
                raise _refuse(name, f"children.{child}.", str(key), CHILD_KEYS)
        for key in ("local_ts", "remote_ts"):
            for entry in _ts_entries(options.get(key)):
                try:
                    strict_reading(entry)
                except SelectorError as exc:
                    raise InvalidConnection(
                        f"{name}: key 'children.{child}.{key}': {exc}"
                    ) from None


def _ts_entries(value: object) -> list[str]:
    """The selectors charon is sent: a comma string is split (and made a list), the items
    of a list are sent as they are, white space and all."""
    if isinstance(value, list):
        return [item if isinstance(item, str) else str(item) for item in value]
    return texts(value)


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
            children = _vici_value(self.children, "children")
            for options in children.values():
                for key in ("local_ts", "remote_ts"):
                    if isinstance(options.get(key), str):
                        # a list for charon (a plain string is refused), read as swanctl reads it
                        options[key] = texts(options[key])
            body["children"] = children
        return body


def profile_from_request(
    name: str, body: Mapping[str, Any], policy: Mapping[str, Any] | None = None
) -> ConnectionProfile:
    """Validate a pushed connection and make it a profile; InvalidConnection says why not."""
    if not _NAME.fullmatch(name) or CLONE_SEPARATOR in name or name.endswith(PROBE_SUFFIX):
        raise InvalidConnection(
            f"invalid connection name '{clip(name)}': use letters, digits and _ . : - "
            f"(at most 128, no '{CLONE_SEPARATOR}')"
        )
    try:
        parsed = ConnectionBody.model_validate(dict(body))
        vici = parsed.to_vici()
        domain_policy = validate_policy(policy) if policy is not None else FailoverPolicy()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "missing"
        raise InvalidConnection(f"{name}: key '{where}': {message}") from None
    except ValueError as exc:
        raise InvalidConnection(f"{name}: {exc}") from None
    if len(parsed.remote_addrs) > MAX_GATEWAYS:
        raise InvalidConnection(
            f"{name}: key 'remote_addrs': {len(parsed.remote_addrs)} entries, at most "
            f"{MAX_GATEWAYS} are accepted"
        )
    gateways, rejected = initiable_gateways(list(parsed.remote_addrs))
    if len(gateways) < 2:
        why = "; ".join(f"'{r.address}': {r.reason}" for r in rejected)
        raise InvalidConnection(
            f"{name}: remote_addrs needs two or more gateways (addresses or DNS names) for "
            f"failover, found {len(gateways)}" + (f" ({why})" if why else "")
        )
    check_keys(name, body)
    return ConnectionProfile(name, gateways, vici, domain_policy, rejected)
