"""Private keys encrypted the traditional OpenSSL way, opened as strongSwan's pem plugin
opens them (pem_builder.c), with `cryptography`'s primitives:

    -----BEGIN RSA PRIVATE KEY-----
    Proc-Type: 4,ENCRYPTED
    DEK-Info: AES-192-CBC,0D0A950DE743355790A9922FE430CC51

The ciphers the pem plugin accepts: DES-EDE3-CBC and AES-128, 192 and 256 in CBC mode. The
key is OpenSSL's EVP_BytesToKey with MD5, one round, the passphrase and the first 8 bytes
of the IV as salt; the plaintext ends in PKCS#7 padding, whose every byte is checked (a
wrong passphrase shows there, or in the DER that follows). `cryptography`'s own PEM reader
refuses AES-192 ("Key encrypted with unknown cipher"), so these keys are decrypted here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes

# DEK-Info name -> (the cipher, made from a key; key length; block length), in bytes
CIPHERS: dict[str, tuple[Callable[[bytes], BlockCipherAlgorithm], int, int]] = {
    "DES-EDE3-CBC": (TripleDES, 24, 8),
    "AES-128-CBC": (algorithms.AES, 16, 16),
    "AES-192-CBC": (algorithms.AES, 24, 16),
    "AES-256-CBC": (algorithms.AES, 32, 16),
}
SALT_LEN = 8

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(?P<inner>.*?)-----END \1-----", re.DOTALL)


class PemError(ValueError):
    """The block cannot be opened: an unsupported cipher, a wrong passphrase, bad armour."""


@dataclass(frozen=True)
class EncryptedPem:
    """One traditional encrypted PEM block: its label, cipher, IV and ciphertext."""

    label: str  # "RSA PRIVATE KEY", "EC PRIVATE KEY"
    cipher: str  # the DEK-Info algorithm, as written
    iv: bytes
    ciphertext: bytes


def find_encrypted(data: bytes) -> EncryptedPem | None:
    """The first PEM block of `data` if it carries `Proc-Type: 4,ENCRYPTED`, else None."""
    match = _BLOCK.search(data)
    if match is None:
        return None
    head, sep, body = match.group("inner").replace(b"\r\n", b"\n").partition(b"\n\n")
    if not sep:
        return None
    headers: dict[str, str] = {}
    for line in head.decode("ascii", "replace").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if headers.get("proc-type", "").replace(" ", "") != "4,ENCRYPTED":
        return None
    cipher, _, iv_hex = headers.get("dek-info", "").partition(",")
    try:
        iv = bytes.fromhex(iv_hex.strip())
        ciphertext = base64.b64decode(b"".join(body.split()), validate=True)
    except (ValueError, binascii.Error):
        raise PemError("malformed DEK-Info IV or base64 body") from None
    return EncryptedPem(match.group(1).decode("ascii"), cipher.strip().upper(), iv, ciphertext)


def bytes_to_key(passphrase: bytes, salt: bytes, length: int) -> bytes:
    """OpenSSL's EVP_BytesToKey with MD5 and one round: D_i = MD5(D_i-1 || pass || salt)."""
    out, block = b"", b""
    while len(out) < length:
        block = hashlib.md5(block + passphrase + salt).digest()
        out += block
    return out[:length]


def decrypt(pem: EncryptedPem, passphrase: bytes) -> bytes:
    """The DER inside `pem`; PemError for an unsupported cipher or a wrong passphrase."""
    if pem.cipher not in CIPHERS:
        raise PemError(f"encryption algorithm '{pem.cipher}' not supported")
    algorithm, key_len, block = CIPHERS[pem.cipher]
    if len(pem.iv) != block or len(pem.iv) < SALT_LEN:
        raise PemError(f"the IV of {pem.cipher} must be {block} bytes")
    if not pem.ciphertext or len(pem.ciphertext) % block:
        raise PemError("the encrypted body is not a whole number of blocks")
    key = bytes_to_key(passphrase, pem.iv[:SALT_LEN], key_len)
    decryptor = Cipher(algorithm(key), modes.CBC(pem.iv)).decryptor()
    plain = decryptor.update(pem.ciphertext) + decryptor.finalize()
    padding = plain[-1]
    if not 0 < padding <= block or plain[-padding:] != bytes([padding]) * padding:
        raise PemError("invalid padding: wrong passphrase")
    return plain[:-padding]
