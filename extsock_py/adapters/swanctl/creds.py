"""The credential folders beside swanctl.conf -> what `swanctl --load-creds --noprompt` sends.

load_creds.c, in its order: every regular file of x509/, x509ca/, x509ocsp/, x509aa/,
x509ac/, x509crl/ and pubkey/ goes out unchanged as `load-cert` (type and flag per folder);
every file of private/, rsa/, ecdsa/, bliss/ and pkcs8/ as `load-key`. A key file named by
a `secrets.<folder><suffix>` section (`file`, `secret<suffix>`) is decoded by swanctl with
those passphrases and sent as DER with the key's own type (RSA, ECDSA, ED25519, ED448),
a key encrypted the traditional OpenSSL way with every cipher the pem plugin takes (pem.py);
any other key file goes out as it is, typed by its folder. A PKCS#12 container in pkcs12/
is opened only with a configured passphrase (--noprompt): its certificates go out as X509
(NONE) DER, its keys as above. No passphrase or key shows in an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from extsock_py.domain.credentials import CertificateLoad, Credentials, KeyLoad
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.secret import Secret

from . import keys, pem
from .model import SwanctlConfig

MAX_VICI_VALUE = 0xFFFF  # a VICI value is prefixed by a 16-bit length

# load_creds.c determine_credtype(): what each folder's decoding accepts
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "private": (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                ed448.Ed448PrivateKey),
    "pkcs8": (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
              ed448.Ed448PrivateKey),
    "rsa": (rsa.RSAPrivateKey,),
    "ecdsa": (ec.EllipticCurvePrivateKey,),
}  # fmt: skip


def read_credentials(base: Path, model: SwanctlConfig) -> Credentials:
    """The load-cert and load-key messages for the folders in `base`; raises ConfigError."""
    certificates: list[CertificateLoad] = []
    private: list[KeyLoad] = []
    for folder, (cert_type, flag) in keys.CERT_DIRS.items():
        for path in _files(base / folder):
            certificates.append(CertificateLoad(str(path), cert_type, flag, _read(path)))
    for folder, raw_type in keys.KEY_DIRS.items():
        for path in _files(base / folder):
            data = _read(path)
            passphrases = _passphrases(model, folder, path.name)
            raw = KeyLoad(str(path), raw_type, Secret(data))
            decoded = _decode_key(folder, data, passphrases, str(path)) if passphrases else None
            # load_keys(): a decoded key charon refuses is sent again as the file
            private.append(replace(decoded, fallback=raw) if decoded else raw)
    for path in _files(base / keys.PKCS12_DIR):
        passphrases = _passphrases(model, keys.PKCS12_DIR, path.name)
        if not passphrases:
            continue  # --noprompt: swanctl opens no container without a configured secret
        certs, container_keys = _open_pkcs12(_read(path), passphrases, str(path))
        certificates.extend(certs)
        private.extend(container_keys)
    return Credentials(certificates=tuple(certificates), keys=tuple(private))


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file())


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_VICI_VALUE:
        raise ConfigError(
            str(path), None, None, f"file is {len(data)} bytes", f"at most {MAX_VICI_VALUE}"
        )
    return data


def _passphrases(model: SwanctlConfig, folder: str, name: str) -> list[bytes]:
    """load_creds.c decrypt_with_config(): every secret<suffix> of each section whose name
    starts with the folder's name and whose `file` is this file's name (any case)."""
    found: list[bytes] = []
    for entry in model.key_file_secrets:
        if entry.name.startswith(folder) and entry.file and entry.file.lower() == name.lower():
            found.extend(s.get_secret_value().encode() for s in entry.secrets)
    return found


def _parse(data: bytes, password: bytes | None) -> object:
    if b"-----BEGIN" in data:
        encrypted = pem.find_encrypted(data)  # the traditional way: as the pem plugin does
        if encrypted is None:
            return serialization.load_pem_private_key(data, password)
        if password is None:
            raise TypeError("encrypted, and no passphrase tried yet")
        return serialization.load_der_private_key(pem.decrypt(encrypted, password), None)
    return serialization.load_der_private_key(data, password)


def _load_private(data: bytes, passphrases: Sequence[bytes]) -> object | None:
    """The key, opened as strongSwan's pem plugin would (unencrypted, or one passphrase)."""
    for password in (None, *passphrases):
        try:
            return _parse(data, password)
        except TypeError:  # encrypted and no password, or a password for a plain key
            continue
        except ValueError:  # wrong passphrase, or not a key
            continue
        except Exception:
            return None
    return None


def _key_load(source: str, key: object) -> KeyLoad | None:
    """load_key_anytype(): the key's DER (private_key_t PRIVKEY_ASN1_DER) and type name."""
    der = serialization.Encoding.DER
    none = serialization.NoEncryption()
    if isinstance(key, rsa.RSAPrivateKey):
        fmt, kind = serialization.PrivateFormat.TraditionalOpenSSL, "RSA"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        fmt, kind = serialization.PrivateFormat.TraditionalOpenSSL, "ECDSA"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        fmt, kind = serialization.PrivateFormat.PKCS8, "ED25519"
    elif isinstance(key, ed448.Ed448PrivateKey):
        fmt, kind = serialization.PrivateFormat.PKCS8, "ED448"
    else:
        return None
    return KeyLoad(source, kind, Secret(key.private_bytes(der, fmt, none)))


def _decode_key(
    folder: str, data: bytes, passphrases: Sequence[bytes], source: str
) -> KeyLoad | None:
    """The decoded key, or None where swanctl falls back to sending the file as it is."""
    accepts = _ACCEPTS.get(folder)
    if accepts is None:
        return None
    key = _load_private(data, passphrases)
    if key is None or not isinstance(key, accepts):
        return None
    return _key_load(source, key)


def _open_pkcs12(
    data: bytes, passphrases: Sequence[bytes], source: str
) -> tuple[list[CertificateLoad], list[KeyLoad]]:
    for password in passphrases:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, password)
        except (ValueError, TypeError):
            continue
        certs = [c for c in (cert, *extra) if c is not None]
        der = serialization.Encoding.DER
        loads = [CertificateLoad(source, "X509", "NONE", c.public_bytes(der)) for c in certs]
        key_load = _key_load(source, key) if key is not None else None
        return loads, [key_load] if key_load is not None else []
    raise ConfigError(
        source,
        None,
        None,
        "none of the configured passphrases opens this PKCS#12 container",
        "secrets { pkcs12<suffix> { file = <name>; secret = <its passphrase> } }",
    )
