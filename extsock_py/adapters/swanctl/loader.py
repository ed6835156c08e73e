"""swanctl.conf -> the VICI messages `swanctl --load-conns` / `--load-creds --noprompt` send.

load_conns.c sends each `connections.<name>` section as it is in the file: options first (in
order of first appearance), then subsections; the values of list keys (is_list_key) split on
commas at any depth; certs/cacerts/pubkeys (is_file_list_key) replaced by the contents of the
files, relative names looked up in x509/, x509ca/, pubkey/ beside the top-level swanctl.conf.
load_creds.c sends `load-shared` per ike/eap/xauth/ntlm/ppk secret and `load-key` per file in
private/, rsa/, ecdsa/, pkcs8/.
"""

from __future__ import annotations

import os.path
from dataclasses import dataclass, field
from pathlib import Path

from pydantic_core import PydanticCustomError

from extsock_py.domain.errors import ConfigError

from . import keys
from .model import SwanctlConfig, validate
from .secret import Secret
from .settings import FileReader, LocalFiles, Section, Value, parse_settings, split_list
from .values import decode_blob

MAX_VICI_VALUE = 0xFFFF  # a VICI value is prefixed by a 16-bit length
_UNSUPPORTED_DIRS = {"bliss": "BLISS keys", "pkcs12": "PKCS#12 containers"}


@dataclass(frozen=True)
class SharedSecret:
    """A `load-shared` message: a PSK/EAP/XAUTH/NTLM/PPK secret and its owners."""

    id: str
    type: str
    owners: tuple[str, ...]
    data: Secret

    def vici_message(self) -> dict[str, object]:
        return {
            "id": self.id,
            "type": self.type,
            "data": self.data.reveal(),
            "owners": list(self.owners),
        }


@dataclass(frozen=True)
class PrivateKey:
    """A `load-key` message: a private key file's bytes and the VICI key type."""

    path: Path
    type: str
    data: Secret

    def vici_message(self) -> dict[str, object]:
        return {"type": self.type, "data": self.data.reveal()}


@dataclass(frozen=True)
class LoadedConfig:
    """A swanctl.conf turned into VICI messages; no secret shows in its repr."""

    path: Path
    connections: dict[str, dict[str, object]]
    connection_lines: dict[str, int]
    shared_secrets: list[SharedSecret]
    private_keys: list[PrivateKey]
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
    return LoadedConfig(
        path=path,
        connections=connections,
        connection_lines={name: conn.section.line for name, conn in model.connections.items()},
        shared_secrets=[
            SharedSecret(s.name, s.type, s.owners, Secret(s.secret.get_secret_value()))
            for s in model.shared_secrets
        ],
        private_keys=_private_keys(base),
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


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file())


def _private_keys(base: Path) -> list[PrivateKey]:
    loaded: list[PrivateKey] = []
    for folder, vici_type in keys.KEY_DIRS.items():
        for path in _files(base / folder):
            data = path.read_bytes()
            if not data:
                raise ConfigError(str(path), None, None, "empty private key file")
            if b"ENCRYPTED" in data[:4096]:
                raise ConfigError(
                    str(path),
                    None,
                    None,
                    "private key is encrypted; extsock does not decrypt keys",
                    "an unencrypted key (openssl pkey -in KEY -out KEY)",
                )
            loaded.append(PrivateKey(path, vici_type, Secret(data)))
    for folder, what in _UNSUPPORTED_DIRS.items():
        for path in _files(base / folder):
            raise ConfigError(str(path), None, None, f"{what} are not supported by extsock")
    return loaded


def _refuse_unsupported(model: SwanctlConfig) -> None:
    for token in model.tokens:
        raise ConfigError(
            model.file,
            None,
            f"secrets.{token.name}",
            "smartcard tokens are not supported by extsock",
            "keys in private/, rsa/, ecdsa/ or pkcs8/",
        )
