"""swanctl.conf -> the VICI messages `swanctl --load-all --noprompt` sends.

load_conns.c sends each `connections.<name>` section as it is in the file: options first (in
order of first appearance), then subsections; the values of list keys (is_list_key) split on
commas at any depth; certs/cacerts/pubkeys (is_file_list_key) replaced by the contents of the
files, relative names looked up in x509/, x509ca/, pubkey/ beside the top-level swanctl.conf.
load_creds.c sends `load-cert`/`load-key` per file of the credential folders (creds.py) and
`load-shared` per ike/eap/xauth/ntlm/ppk secret; load_authorities.c `load-authority` per
`authorities.<name>` (cacert the file's bytes from x509ca/, crl_uris/ocsp_uris lists);
load_pools.c `load-pool` per `pools.<name>` (addrs a value, any other attribute a list).
"""

from __future__ import annotations

import os.path
from dataclasses import dataclass, field
from pathlib import Path

from pydantic_core import PydanticCustomError

from extsock_py.domain.config import NewerOption
from extsock_py.domain.credentials import AuthorityLoad, Credentials, PoolLoad, SharedLoad
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.secret import Secret

from . import keys
from .creds import MAX_VICI_VALUE, read_credentials
from .model import SwanctlConfig, validate
from .settings import FileReader, LocalFiles, Section, Value, parse_settings, split_list
from .values import decode_blob


@dataclass(frozen=True)
class LoadedConfig:
    """A swanctl.conf turned into VICI messages; no secret shows in its repr."""

    path: Path
    connections: dict[str, dict[str, object]]
    connection_lines: dict[str, int]
    credentials: Credentials
    authorities: tuple[AuthorityLoad, ...]
    pools: tuple[PoolLoad, ...]
    newer_options: tuple[NewerOption, ...]
    extsock_section: Section | None
    model: SwanctlConfig = field(repr=False, compare=False)

    def load_conn_message(self, name: str) -> dict[str, object]:
        """The body of the `load-conn` command for one connection."""
        return {name: self.connections[name]}


def read_swanctl_conf(path: Path, reader: FileReader | None = None) -> LoadedConfig:
    """Read, validate and translate a swanctl.conf; raises ConfigError."""
    reader = reader or LocalFiles()
    try:
        text = reader.read_text(str(path))
    except FileNotFoundError:
        raise ConfigError(str(path), None, None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc.strerror}") from None
    model = validate(parse_settings(text, str(path), reader))
    base = Path(os.path.dirname(str(path)) or ".")
    conf_name = path.name
    connections = {
        name: _vici_section(conn.section, base, conf_name)
        for name, conn in model.connections.items()
    }
    _refuse_unsupported(model)
    files = read_credentials(base, model)
    shared = tuple(
        SharedLoad(s.name, s.type, Secret(s.secret.get_secret_value()), s.owners)
        for s in model.shared_secrets
    )
    return LoadedConfig(
        path=path,
        connections=connections,
        connection_lines={name: conn.section.line for name, conn in model.connections.items()},
        credentials=Credentials(files.certificates, files.keys, shared),
        authorities=tuple(
            AuthorityLoad(name, _authority_body(section, base))
            for name, section in model.authorities.items()
        ),
        pools=tuple(PoolLoad(name, _pool_body(section)) for name, section in model.pools.items()),
        newer_options=tuple(_newer_options(model)),
        extsock_section=model.extsock,
        model=model,
    )


def _vici_section(section: Section, base: Path, conf_name: str) -> dict[str, object]:
    body: dict[str, object] = {}
    for key, value in section.entries.items():
        low = key.lower()
        if low in keys.LIST_KEYS:
            body[key] = split_list(value.text)
        elif low in keys.FILE_LIST_DIRS:
            body[key] = [
                _file_item(section, key, value, token, base, conf_name)
                for token in split_list(value.text)
            ]
        else:
            body[key] = value.text
    for name, sub in section.sections.items():
        body[name] = _vici_section(sub, base, conf_name)
    return body


def _file_item(
    section: Section, key: str, value: Value, token: str, base: Path, conf_name: str
) -> bytes:
    def error(message: str, accepted: str | None = None) -> ConfigError:
        return ConfigError(value.file, value.line, section.key_path(key), message, accepted)

    if token[:2].lower() in ("0x", "0s"):
        try:
            return decode_blob(token)
        except PydanticCustomError as exc:
            context = exc.context or {}
            raise error(str(context.get("message")), context.get("accepted")) from None
    folder = keys.FILE_LIST_DIRS[key.lower()]
    path = Path(token) if os.path.isabs(token) else base / folder / token
    accepted = f"a file in {folder}/ beside {conf_name}, an absolute path, or 0x/0s data"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"file '{path}' not found", accepted) from None
    except OSError as exc:
        raise error(f"cannot read '{path}': {exc.strerror}", accepted) from None
    if len(data) > MAX_VICI_VALUE:
        raise error(f"file '{path}' is {len(data)} bytes", f"at most {MAX_VICI_VALUE} bytes")
    return data


def _newer_options(model: SwanctlConfig) -> list[NewerOption]:
    """Where the file uses what only newer releases know (keys.INTRODUCED)."""
    found: list[NewerOption] = []

    def check(section: Section, kind: str) -> None:
        for key, value in section.entries.items():
            since = keys.INTRODUCED.get((kind, key))
            if since is None and kind == "child" and key == "mode":
                since = keys.INTRODUCED.get(("child.mode", value.text.strip()))
            if since is not None:
                found.append(NewerOption(value.file, value.line, section.key_path(key), since))

    for conn in model.connections.values():
        check(conn.section, "connection")
        children = conn.section.sections.get("children")
        for child in children.sections.values() if children is not None else ():
            check(child, "child")
    return found


def _authority_body(section: Section, base: Path) -> dict[str, object]:
    body: dict[str, object] = {}
    for key, value in section.entries.items():
        if key == "cacert":
            body[key] = _authority_cacert(section, key, value, base)
        elif key in keys.AUTHORITY_LIST_KEYS:
            body[key] = split_list(value.text)
        else:
            body[key] = value.text
    return body


def _authority_cacert(section: Section, key: str, value: Value, base: Path) -> bytes:
    """load_authorities.c add_file_key_value(): a path, relative ones in x509ca/."""
    token = value.text
    path = Path(token) if os.path.isabs(token) else base / "x509ca" / token
    accepted = "a file in x509ca/ beside swanctl.conf, or an absolute path"
    try:
        data = path.read_bytes()
    except OSError as exc:
        why = "not found" if isinstance(exc, FileNotFoundError) else exc.strerror
        raise ConfigError(
            value.file, value.line, section.key_path(key), f"file '{path}': {why}", accepted
        ) from None
    if len(data) > MAX_VICI_VALUE:
        raise ConfigError(
            value.file, value.line, section.key_path(key), f"file '{path}' is too large", accepted
        )
    return data


def _pool_body(section: Section) -> dict[str, object]:
    """load_pools.c add_key_values(): `addrs` as a value, every other attribute a list."""
    return {
        key: value.text if key == "addrs" else split_list(value.text)
        for key, value in section.entries.items()
    }


def _refuse_unsupported(model: SwanctlConfig) -> None:
    for token in model.tokens:
        raise ConfigError(
            model.file,
            None,
            f"secrets.{token.name}",
            "smartcard tokens are not supported by extsock",
            "keys in private/, rsa/, ecdsa/ or pkcs8/",
        )
