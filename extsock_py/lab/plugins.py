"""Which charon plugins the lab loads, which Debian package ships each, and the check that
every plugin of a charon's load list actually loaded.

Pure: no I/O.  The load list is data (``check_loaded(load_list, loaded)``), so a lab of
another strongSwan release passes its own list (strongSwan 6 has no sha1/sha2/hmac/aes/kdf
plugins: openssl provides them) and, if its packages differ, its own package map.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# LAB-FACTS: an explicit list, or modular loading pulls in ha, dhcp, farp... which break the lab.
LAB_LOAD_LIST: tuple[str, ...] = (
    "random", "nonce", "openssl", "pem", "pkcs1", "pkcs8", "x509", "revocation", "constraints",
    "pubkey", "curve25519", "sha1", "sha2", "hmac", "gcm", "aes", "kdf", "kernel-libipsec",
    "kernel-netlink", "socket-default", "vici", "counters",
)  # fmt: skip

# Debian 12 (strongSwan 5.9.8): the plugins (/usr/lib/ipsec/plugins/libstrongswan-NAME.so) each
# package ships, read with `dpkg -L`.  charon pulls in neither the standard nor the extra plugin
# packages with --no-install-recommends: without them it starts, and every IKE_SA fails.
DEBIAN_PACKAGE_PLUGINS: Mapping[str, tuple[str, ...]] = {
    "libstrongswan": (
        "aes", "attr", "constraints", "dnskey", "drbg", "fips-prf", "gmp", "hmac", "kdf",
        "kernel-netlink", "md5", "mgf1", "nonce", "pem", "pgp", "pkcs1", "pkcs12", "pkcs7",
        "pkcs8", "pubkey", "random", "rc2", "resolve", "revocation", "sha1", "sha2", "sshkey",
        "x509", "xcbc",
    ),
    "libstrongswan-standard-plugins": ("aesni", "agent", "connmark", "gcm", "openssl"),
    "libstrongswan-extra-plugins": (
        "af-alg", "ccm", "chapoly", "cmac", "ctr", "curl", "curve25519", "gcrypt", "ldap",
        "pkcs11", "rdrand", "test-vectors", "tpm",
    ),
    "libcharon-extra-plugins": (
        "addrblock", "certexpire", "dhcp", "eap-aka", "eap-gtc", "eap-identity", "eap-md5",
        "eap-radius", "eap-tls", "eap-tnc", "eap-ttls", "error-notify", "farp", "forecast", "ha",
        "kernel-libipsec", "led", "lookip", "tnc-tnccs", "unity", "xauth-eap", "xauth-pam",
    ),
    "strongswan-libcharon": ("bypass-lan", "counters", "socket-default", "updown"),
    "strongswan-swanctl": ("vici",),
}  # fmt: skip

# plugin -> package, from the table above.
DEBIAN_PLUGIN_PACKAGES: Mapping[str, str] = {
    plugin: package for package, plugins in DEBIAN_PACKAGE_PLUGINS.items() for plugin in plugins
}

_LOAD_LINE = re.compile(r"^\s*load\s*=\s*(?P<list>.*?)\s*$", re.MULTILINE)
_LOADED_LINE = re.compile(r"loaded plugins: (?P<list>.*)$", re.MULTILINE)
_FAILED_LINE = re.compile(r"plugin '(?P<name>[^']+)':? failed to load")


@dataclass(frozen=True)
class MissingPlugin:
    """A plugin of the load list that charon did not load, and where it comes from."""

    plugin: str
    package: str | None  # None: no package known to ship it


class PluginsMissing(RuntimeError):
    """charon did not load every plugin of its load list."""

    def __init__(self, who: str, missing: Sequence[MissingPlugin]) -> None:
        self.who = who
        self.missing = tuple(missing)
        super().__init__(describe_missing(who, self.missing))


def plugin_name(entry: str) -> str:
    """``openssl`` for a load-list entry ``openssl`` or ``openssl!`` (critical)."""
    return entry.rstrip("!")


def parse_load_list(strongswan_conf: str) -> tuple[str, ...]:
    """The plugin names of the first ``load = ...`` line of a strongswan.conf text."""
    match = _LOAD_LINE.search(strongswan_conf)
    if match is None:
        return ()
    return tuple(plugin_name(p) for p in match["list"].split())


def parse_loaded(charon_log: str) -> tuple[str, ...] | None:
    """The plugins of charon's last ``loaded plugins: ...`` log line; None if it has none yet."""
    matches = list(_LOADED_LINE.finditer(charon_log))
    if not matches:
        return None
    return tuple(matches[-1]["list"].split())


def failed_in_log(charon_log: str) -> tuple[str, ...]:
    """The plugins charon logged ``plugin 'NAME': failed to load`` for, in order, once each."""
    return tuple(dict.fromkeys(m["name"] for m in _FAILED_LINE.finditer(charon_log)))


def missing_plugins(
    load_list: Iterable[str],
    loaded: Iterable[str],
    packages: Mapping[str, str] = DEBIAN_PLUGIN_PACKAGES,
) -> tuple[MissingPlugin, ...]:
    """Every plugin of ``load_list`` not in ``loaded``, with the package that ships it."""
    have = set(loaded)
    wanted = dict.fromkeys(plugin_name(p) for p in load_list)
    return tuple(MissingPlugin(p, packages.get(p)) for p in wanted if p not in have)


def check_loaded(
    who: str,
    load_list: Iterable[str],
    loaded: Iterable[str],
    packages: Mapping[str, str] = DEBIAN_PLUGIN_PACKAGES,
) -> None:
    """Raise PluginsMissing (naming plugins and packages) unless all of ``load_list`` loaded."""
    missing = missing_plugins(load_list, loaded, packages)
    if missing:
        raise PluginsMissing(who, missing)


def describe_missing(who: str, missing: Sequence[MissingPlugin]) -> str:
    """One line: which plugins did not load and what to install."""
    names = ", ".join(m.plugin for m in missing)
    packages = sorted({m.package for m in missing if m.package})
    unknown = [m.plugin for m in missing if m.package is None]
    fix = []
    if packages:
        fix.append(f"apt-get install {' '.join(packages)} (or run scripts/install-deps.sh)")
    if unknown:
        fix.append(f"no Debian package known for {', '.join(unknown)}: check the load list")
    plural = "s" if len(missing) > 1 else ""
    return f"{who}: charon did not load plugin{plural} {names} of its load list; " + "; ".join(fix)


__all__ = [
    "DEBIAN_PACKAGE_PLUGINS",
    "DEBIAN_PLUGIN_PACKAGES",
    "LAB_LOAD_LIST",
    "MissingPlugin",
    "PluginsMissing",
    "check_loaded",
    "describe_missing",
    "failed_in_log",
    "missing_plugins",
    "parse_load_list",
    "parse_loaded",
    "plugin_name",
]
