"""What `swanctl --load-all` sends charon besides connections, as typed values.

One value per VICI request (load_creds.c, load_authorities.c, load_pools.c): the usecase
that syncs charon sends them through typed port operations, so nothing has to guess a
command from a message's keys. Secret bytes are held as `Secret` and show in no repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from extsock_py.domain.secret import Secret

CERT_TYPES = frozenset({"X509", "X509_AC", "X509_CRL", "PUBKEY"})
X509_FLAGS = frozenset({"NONE", "CA", "AA", "OCSP"})


@dataclass(frozen=True)
class CertificateLoad:
    """`load-cert`: a file's bytes as swanctl sends them (PEM or DER, unchanged)."""

    source: str
    type: str  # X509, X509_AC, X509_CRL, PUBKEY (certificate_type_names)
    flag: str | None  # X509 only: NONE, CA, AA, OCSP (x509_flag_names)
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.type not in CERT_TYPES:
            raise ValueError(f"unknown certificate type {self.type!r}")
        if (self.flag is not None) != (self.type == "X509") or (
            self.flag is not None and self.flag not in X509_FLAGS
        ):
            raise ValueError(f"flag {self.flag!r} does not go with type {self.type}")


@dataclass(frozen=True)
class KeyLoad:
    """`load-key`: the file's bytes with the folder's type (any, rsa, ecdsa, bliss), or, when
    swanctl decoded the key (a passphrase in `secrets`, PKCS#12), its DER and type (RSA, ...)."""

    source: str
    type: str
    data: Secret
    fallback: KeyLoad | None = None
    """What swanctl sends when charon refuses the decoded key: the file as it is."""


@dataclass(frozen=True)
class SharedLoad:
    """`load-shared`: an ike/eap/xauth/ntlm/ppk secret, its section name as id, its owners."""

    id: str
    type: str
    data: Secret
    owners: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthorityLoad:
    """`load-authority`: one `authorities.<name>` section (cacert as the file's bytes)."""

    name: str
    body: Mapping[str, object]


@dataclass(frozen=True)
class PoolLoad:
    """`load-pool`: one `pools.<name>` section (addrs a value, every attribute a list)."""

    name: str
    body: Mapping[str, object]


@dataclass(frozen=True)
class Credentials:
    """Everything `swanctl --load-creds --noprompt` loads, in the order swanctl sends it."""

    certificates: tuple[CertificateLoad, ...] = ()
    keys: tuple[KeyLoad, ...] = ()
    shared: tuple[SharedLoad, ...] = ()

    def __len__(self) -> int:
        return len(self.certificates) + len(self.keys) + len(self.shared)
