"""The strongSwan releases a lab node's charon can come from, named by Debian release.

``bookworm`` is the host's own charon (Debian 12, strongSwan 5.9.8). ``trixie`` (Debian 13,
6.0.1) and ``sid`` (6.1.x) run from a Debian root built with mmdebstrap (``roots.py``).

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from extsock_py.lab.plugins import LAB_LOAD_LIST

# In strongSwan 6 the sha1, sha2, hmac, aes and kdf plugins are gone (openssl provides them):
# a 5.9 list makes 6.x log `plugin 'sha1': failed to load`.
_GONE_IN_6 = frozenset({"sha1", "sha2", "hmac", "aes", "kdf"})
LOAD_LIST_6: tuple[str, ...] = tuple(p for p in LAB_LOAD_LIST if p not in _GONE_IN_6)

ROOT_PACKAGES = (
    "strongswan-charon",
    "strongswan-swanctl",
    "libstrongswan-standard-plugins",
    "libstrongswan-extra-plugins",
    "libcharon-extra-plugins",
)
"""What a charon root holds beyond minbase: charon, the vici plugin, openssl and gcm,
curve25519, kernel-libipsec (as the host installs them)."""


@dataclass(frozen=True)
class Release:
    name: str  # the Debian suite
    strongswan: str  # the version its Debian ships (measured)
    load_list: tuple[str, ...]
    host: bool = False  # the host's own charon, no root to build


RELEASES: dict[str, Release] = {
    "bookworm": Release("bookworm", "5.9.8", LAB_LOAD_LIST, host=True),
    "trixie": Release("trixie", "6.0.1", LOAD_LIST_6),
    "sid": Release("sid", "6.1.0", LOAD_LIST_6),
}
DEFAULT_RELEASE = "bookworm"


def release(name: str) -> Release:
    """The release called ``name``; ValueError naming the accepted ones otherwise."""
    try:
        return RELEASES[name]
    except KeyError:
        raise ValueError(
            f"unknown charon release {name!r}; accepted: {', '.join(RELEASES)}"
        ) from None
