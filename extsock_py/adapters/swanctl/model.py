"""Validated models of the parts of swanctl.conf extsock uses.

Every option a strongSwan release lists in swanctl.opt (keys.py: 5.9.8 to 6.0.6) is accepted
and carried through as text; the ones extsock reads are checked. Unknown options and sections
are errors naming close matches.
Secrets are held as SecretBytes / SecretStr and never appear in repr or in errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
)

from extsock_py.domain.errors import ConfigError

from . import keys, values
from .settings import Section

_RAW_TOP_SECTIONS = ("extsock", "pools", "authorities")
_TOP_SECTIONS = ("connections", "secrets", *_RAW_TOP_SECTIONS)
_MAX_VICI_NAME = 255  # a VICI name is prefixed by one length byte

AddrList = Annotated[tuple[str, ...], BeforeValidator(values.addresses)]
TsList = Annotated[tuple[str, ...], BeforeValidator(values.traffic_selectors)]
NameList = Annotated[tuple[str, ...], BeforeValidator(values.names)]
FileList = Annotated[tuple[str, ...], BeforeValidator(values.file_list)]
Action = Annotated[str, BeforeValidator(values.action)]
Version = Annotated[int, BeforeValidator(values.version)]
Integer = Annotated[int, BeforeValidator(values.integer)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class AuthRound(_Model):
    """One `local<suffix>` / `remote<suffix>` authentication round."""

    name: str
    auth: Annotated[str, BeforeValidator(values.auth)] | None = None
    id: str | None = None
    round: Integer | None = None
    certs: FileList = ()
    cacerts: FileList = ()
    pubkeys: FileList = ()
    options: dict[str, str] = Field(default_factory=dict)


class Child(_Model):
    """One `children.<name>` CHILD_SA config."""

    name: str
    local_ts: TsList = ()
    remote_ts: TsList = ()
    esp_proposals: NameList = ()
    ah_proposals: NameList = ()
    mode: Annotated[str, BeforeValidator(values.mode)] | None = None
    start_action: Action | None = None
    dpd_action: Action | None = None
    close_action: Action | None = None
    options: dict[str, str] = Field(default_factory=dict)


class Connection(_Model):
    """One `connections.<name>` IKE_SA config; `section` is its raw tree (file order)."""

    name: str
    version: Version = 0
    local_addrs: AddrList = ()
    remote_addrs: AddrList = ()
    proposals: NameList = ()
    local: tuple[AuthRound, ...] = ()
    remote: tuple[AuthRound, ...] = ()
    children: dict[str, Child] = Field(default_factory=dict)  # none: IKE_SA only, as swanctl
    options: dict[str, str] = Field(default_factory=dict)
    section: Section = Field(repr=False, exclude=True)


class SharedSecret(_Model):
    """A `secrets.ike*|eap*|xauth*|ntlm*|ppk*` section, as load_creds.c load_secret() reads it."""

    name: str
    type: Literal["eap", "xauth", "ntlm", "ike", "ppk"]
    secret: Annotated[SecretBytes, BeforeValidator(values.decode_blob)]
    owners: tuple[str, ...] = ()

    @field_validator("secret")
    @classmethod
    def _not_empty(cls, secret: SecretBytes) -> SecretBytes:
        if not secret.get_secret_value():
            raise values.fail("empty secret", "a non-empty secret")
        return secret


class KeyFileSecret(_Model):
    """A `secrets.private*|rsa*|ecdsa*|pkcs8*|pkcs12*` passphrase for an encrypted key file."""

    name: str
    type: Literal["private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12"]
    file: str | None = None
    secrets: tuple[SecretStr, ...] = ()


class Token(_Model):
    """A `secrets.token*` smartcard key reference."""

    name: str
    handle: str | None = None
    slot: str | None = None
    module: str | None = None
    pin: SecretStr | None = None


class SwanctlConfig(_Model):
    """The validated swanctl.conf."""

    file: str
    connections: dict[str, Connection]
    shared_secrets: tuple[SharedSecret, ...] = ()
    key_file_secrets: tuple[KeyFileSecret, ...] = ()
    tokens: tuple[Token, ...] = ()
    authorities: dict[str, Section] = Field(default_factory=dict)
    pools: dict[str, Section] = Field(default_factory=dict)
    extsock: Section | None = None


_M = TypeVar("_M", bound=BaseModel)


def _error(section: Section, key: str | None, message: str, accepted: str | None) -> ConfigError:
    value = section.entries.get(key) if key else None
    return ConfigError(
        file=value.file if value else section.file,
        line=value.line if value else section.line,
        key=section.key_path(key) if key else section.path or None,
        message=message,
        accepted=accepted,
    )


def _build(model: type[_M], section: Section, data: dict[str, Any]) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        key = str(first["loc"][0]) if first["loc"] else None
        ctx = first.get("ctx") or {}
        if first["type"] == "config":
            raise _error(section, key, str(ctx["message"]), ctx.get("accepted")) from None
        raise _error(section, key, str(first["msg"]), None) from None


def _unknown(name: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _never(name: str) -> bool:
    return False


def _check(
    section: Section,
    what: str,
    key_ok: Callable[[str], bool] = _never,
    key_names: Collection[str] = (),
    section_ok: Callable[[str], bool] = _never,
    section_names: Collection[str] = (),
) -> None:
    """Reject options and subsections `section` may not have, suggesting close matches."""
    for key in section.entries:
        if not key_ok(key):
            key_accepted = (
                f"an option of {what} known to strongSwan {keys.RELEASES[0]} to "
                f"{keys.RELEASES[-1]} (swanctl.opt)"
                if key_names
                else f"no options directly in {what}, only sections"
            )
            message = f"unknown option '{key}'{_unknown(key, key_names)}"
            raise _error(section, key, message, key_accepted)
    for name, sub in section.sections.items():
        if not section_ok(name):
            accepted = f"{', '.join(section_names)} in {what}" if section_names else None
            message = f"unknown section '{name}'{_unknown(name, section_names)}"
            if not section_names:
                message = f"unexpected section '{name}': {what} has no subsections"
            raise ConfigError(sub.file, sub.line, sub.path, message, accepted)


def _raw(section: Section) -> dict[str, str]:
    return {key: value.text for key, value in section.entries.items()}


def _typed(section: Section, fields: Collection[str]) -> dict[str, str]:
    return {key: value.text for key, value in section.entries.items() if key in fields}


def _auth_round(section: Section) -> AuthRound:
    _check(
        section,
        "an auth round",
        keys.AUTH_KEYS.__contains__,
        keys.AUTH_KEYS,
        lambda name: name.lower().startswith(("cert", "cacert")),
        ("cert<suffix>", "cacert<suffix>"),
    )
    for sub in section.sections.values():
        _check(sub, "a token certificate", keys.TOKEN_CERT_KEYS.__contains__, keys.TOKEN_CERT_KEYS)
    data = _typed(section, AuthRound.model_fields)
    return _build(AuthRound, section, {**data, "name": section.name, "options": _raw(section)})


def _child(section: Section) -> Child:
    _check(section, "a CHILD_SA", keys.CHILD_KEYS.__contains__, keys.CHILD_KEYS)
    data = _typed(section, Child.model_fields)
    return _build(Child, section, {**data, "name": section.name, "options": _raw(section)})


def _is_conn_section(name: str) -> bool:
    return name.lower() == "children" or name.lower().startswith(("local", "remote"))


def _connection(section: Section) -> Connection:
    if len(section.name.encode()) > _MAX_VICI_NAME:
        raise _error(section, None, "connection name too long", f"at most {_MAX_VICI_NAME} bytes")
    subs = ("children", "local<suffix>", "remote<suffix>")
    conn_keys = keys.CONNECTION_KEYS
    _check(section, "a connection", conn_keys.__contains__, conn_keys, _is_conn_section, subs)
    local: list[AuthRound] = []
    remote: list[AuthRound] = []
    children: dict[str, Child] = {}
    for name, sub in section.sections.items():
        if name.lower() == "children":
            _check(sub, "children", section_ok=bool)
            children.update((n, _child(c)) for n, c in sub.sections.items())
        else:
            (local if name.lower().startswith("local") else remote).append(_auth_round(sub))
    data: dict[str, Any] = _typed(section, Connection.model_fields)
    data.update(name=section.name, local=local, remote=remote, children=children)
    return _build(Connection, section, {**data, "options": _raw(section), "section": section})


def _secret(section: Section) -> BaseModel:
    kind = next((t for t in keys.SECRET_TYPES if section.name.startswith(t)), None)
    if kind is None:
        raise ConfigError(
            section.file,
            section.line,
            section.path,
            f"unknown secret type '{section.name}'{_unknown(section.name, keys.SECRET_TYPES)}",
            "a section named " + ", ".join(f"{t}<suffix>" for t in keys.SECRET_TYPES),
        )
    data: dict[str, Any] = {"name": section.name, "type": kind}
    if kind in keys.SHARED_SECRET_TYPES:
        is_key = lambda k: k == "secret" or k.startswith("id")  # noqa: E731
        _check(section, f"a {kind} secret", is_key, ("secret", "id<suffix>"))
        if "secret" not in section.entries:
            raise _error(section, None, "missing option 'secret'", "secret = <value>")
        owners = [v.text for k, v in section.entries.items() if k.startswith("id")]
        data.update(secret=section.entries["secret"].text, owners=owners)
        return _build(SharedSecret, section, data)
    if kind == "token":
        _check(section, "a token", keys.TOKEN_KEYS.__contains__, keys.TOKEN_KEYS)
        data = {**_typed(section, keys.TOKEN_KEYS), "name": section.name}
        return _build(Token, section, data)
    is_file_key = lambda k: k == "file" or k.startswith("secret")  # noqa: E731
    _check(section, f"a {kind} secret", is_file_key, ("file", "secret<suffix>"))
    secrets = [v.text for k, v in section.entries.items() if k.startswith("secret")]
    file = section.entries.get("file")
    data.update(file=file.text if file else None, secrets=secrets)
    return _build(KeyFileSecret, section, data)


def _not_a_typo(name: str) -> bool:
    return name in _TOP_SECTIONS or not _unknown(name, _TOP_SECTIONS)


def validate(root: Section) -> SwanctlConfig:
    """Validate a parsed swanctl.conf; raises the first ConfigError."""
    if root.entries:
        raise _error(root, next(iter(root.entries)), "unexpected option at top level", None)
    # Other top-level sections are ignored like swanctl does (they serve as bases for `name :
    # base` references), unless the name is a likely typo of one that matters.
    _check(root, "swanctl.conf", section_ok=_not_a_typo, section_names=_TOP_SECTIONS)
    connections: dict[str, Connection] = {}
    secrets: list[BaseModel] = []
    if (conns := root.sections.get("connections")) is not None:
        _check(conns, "connections", section_ok=bool)
        connections = {name: _connection(sub) for name, sub in conns.sections.items()}
    if (section := root.sections.get("secrets")) is not None:
        _check(section, "secrets", section_ok=bool)
        for sub in section.sections.values():
            _check(sub, f"secret '{sub.name}'", key_ok=bool)
            secrets.append(_secret(sub))
    authorities: dict[str, Section] = {}
    if (section := root.sections.get("authorities")) is not None:
        _check(section, "authorities", section_ok=bool)
        for name, sub in section.sections.items():
            keys_ok = keys.AUTHORITY_KEYS
            _check(sub, f"authority '{name}'", keys_ok.__contains__, keys_ok)
            authorities[name] = sub
    pools: dict[str, Section] = {}
    if (section := root.sections.get("pools")) is not None:
        _check(section, "pools", section_ok=bool)
        for name, sub in section.sections.items():
            _check(sub, f"pool '{name}'", key_ok=bool)  # attributes: charon judges the names
            pools[name] = sub
    return SwanctlConfig(
        file=root.file,
        authorities=authorities,
        pools=pools,
        connections=connections,
        shared_secrets=tuple(s for s in secrets if isinstance(s, SharedSecret)),
        key_file_secrets=tuple(s for s in secrets if isinstance(s, KeyFileSecret)),
        tokens=tuple(s for s in secrets if isinstance(s, Token)),
        extsock=root.sections.get("extsock"),
    )
