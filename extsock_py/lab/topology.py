"""The lab's topology: node names, addresses, and rendering of the config templates.

Pure: nothing here touches the system except reading template files.

Templates are the canonical files in the repository's top-level ``swanctl/`` folder
(``swanctl/ini/*.conf``, ``swanctl/segw/*.conf``), located through ``$EXTSOCK_SWANCTL_DIR``
or, failing that, next to the ``extsock_py`` package (a checkout or ``pip install -e .``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template
from typing import Any, Literal

from extsock_py.lab.plugins import LAB_LOAD_LIST
from extsock_py.lab.releases import DEFAULT_RELEASE, RELEASES, release

AuthMode = Literal["psk", "cert"]
NodeKind = Literal["ini", "segw"]
DataPlane = Literal["libipsec", "xfrm"]
DATAPLANES: tuple[DataPlane, ...] = ("libipsec", "xfrm")
"""libipsec: ESP in charon (kernel-libipsec, a TUN device), what runs on a host whose kernel has
no ESP. xfrm: ESP in the kernel (kernel-netlink only), what users run: the lab then runs in
a VM with Debian's kernel (vm.py)."""
DATAPLANE_ENV = "EXTSOCK_LAB_DATAPLANE"

INI = "ini"
DEFAULT_PREFIX = "exs-"
ID_DOMAIN = "lab.extsock"
INI_NET = "10.100.0.0/24"
INI_ADDR = "10.100.0.1"
PROTECTED_NET = "10.200.0.0/24"
PROTECTED_ADDR = "10.200.0.1"
# With `inner_ipv6`, the CHILD_SA carries these too (dual stack), addressed the same way.
INI_NET6 = "fd00:100::/64"
INI_ADDR6 = "fd00:100::1"
PROTECTED_NET6 = "fd00:200::/64"
PROTECTED_ADDR6 = "fd00:200::1"
ECHO_PORT = 7777
DEFAULT_PSK = "extsock-lab-shared-secret"
MAX_GATEWAYS = 3
SWANCTL_DIR_ENV = "EXTSOCK_SWANCTL_DIR"

# The explicit plugin list of every lab charon (see plugins.py for why and where each comes from).
PLUGINS = " ".join(LAB_LOAD_LIST)
CONF_FILES = ("strongswan.conf", "swanctl.conf")

_PSK_OK = re.compile(r"^[A-Za-z0-9_.:+/=-]{8,128}$")
_PREFIX_OK = re.compile(r"^[a-z][a-z0-9]{0,5}-$")


class TemplateError(RuntimeError):
    """A template is missing or has a placeholder nobody fills."""


def gateway_name(index: int) -> str:
    """The node name of gateway ``index`` (1-based): ``segw1``..."""
    return f"segw{index}"


def node_kind(node: str) -> NodeKind:
    """``ini`` or ``segw``; raises ValueError for names that are no lab node."""
    if node == INI:
        return "ini"
    if re.fullmatch(r"segw[1-9]", node):
        return "segw"
    raise ValueError(f"not a lab node: {node!r}")


def gateway_index(node: str) -> int:
    """1 for ``segw1``..."""
    if node_kind(node) != "segw":
        raise ValueError(f"not a gateway: {node!r}")
    return int(node[4:])


def node_id(node: str) -> str:
    """The IKE identity of a node: ``ini.lab.extsock``, ``segw1.lab.extsock``..."""
    return f"{node}.{ID_DOMAIN}"


@dataclass(frozen=True)
class Link:
    """The veth pair between ini and gateway ``index``."""

    index: int
    prefix: str = DEFAULT_PREFIX

    @property
    def ini_if(self) -> str:
        return f"{self.prefix}i{self.index}"

    @property
    def gw_if(self) -> str:
        return f"{self.prefix}g{self.index}"

    @property
    def ini_v4(self) -> str:
        return f"10.99.{self.index}.1"

    @property
    def gw_v4(self) -> str:
        return f"10.99.{self.index}.2"

    @property
    def ini_v6(self) -> str:
        return f"fd99:{self.index}::1"

    @property
    def gw_v6(self) -> str:
        return f"fd99:{self.index}::2"

    def gw_addr(self, ipv6: bool) -> str:
        return self.gw_v6 if ipv6 else self.gw_v4


@dataclass(frozen=True)
class LabConfig:
    """Everything that shapes a lab; saved as JSON in the state dir by ``Lab.up``."""

    gateways: int = 2
    ipv6: bool = False
    inner_ipv6: bool = False
    """The traffic selectors also cover INI_NET6 <-> PROTECTED_NET6 (IPv6 through the tunnel)."""
    auth: AuthMode = "psk"
    psk: str = DEFAULT_PSK
    retransmit_timeout: float | None = None
    retransmit_tries: int | None = None
    retransmit_base: float | None = None
    dpd_delay: str = "1s"
    prefix: str = DEFAULT_PREFIX
    virtual_ips: bool = False  # ini installs the virtual IPs gateways assign (vips)
    charon: str = DEFAULT_RELEASE
    """The Debian release every node's charon comes from (releases.py)."""
    node_charon: tuple[str, ...] = ()
    """Per-node exceptions, ``NODE=RELEASE`` (``ini=sid``)."""
    key_passphrase: str | None = None  # cert labs: private keys encrypted, passphrase in secrets
    dataplane: DataPlane = "libipsec"

    def __post_init__(self) -> None:
        if self.dataplane not in DATAPLANES:
            raise ValueError(
                f"dataplane must be one of {', '.join(DATAPLANES)}, not {self.dataplane!r}"
            )
        if not 1 <= self.gateways <= MAX_GATEWAYS:
            raise ValueError(f"gateways must be 1..{MAX_GATEWAYS}, not {self.gateways}")
        if self.auth not in ("psk", "cert"):
            raise ValueError(f"auth must be psk or cert, not {self.auth!r}")
        if not _PSK_OK.match(self.psk):
            raise ValueError("psk: 8-128 characters of [A-Za-z0-9_.:+/=-]")
        if self.key_passphrase is not None and (
            self.auth != "cert" or not _PSK_OK.match(self.key_passphrase)
        ):
            raise ValueError(
                "key_passphrase: cert labs only, 8-128 characters of [A-Za-z0-9_.:+/=-]"
            )
        if not _PREFIX_OK.match(self.prefix):
            raise ValueError(f"prefix must look like 'exs-' (<= 7 chars), not {self.prefix!r}")
        if self.retransmit_timeout is not None and self.retransmit_timeout <= 0:
            raise ValueError("retransmit_timeout must be > 0")
        if self.retransmit_tries is not None and self.retransmit_tries < 0:
            raise ValueError("retransmit_tries must be >= 0")
        if self.retransmit_base is not None and self.retransmit_base < 1:
            raise ValueError("retransmit_base must be >= 1")
        release(self.charon)  # ValueError naming the accepted releases
        object.__setattr__(self, "node_charon", tuple(self.node_charon))
        for entry in self.node_charon:
            node, sep, name = entry.partition("=")
            if not sep or node not in self.nodes:
                raise ValueError(
                    f"node charon {entry!r}: expected NODE=RELEASE with NODE one of "
                    f"{', '.join(self.nodes)} and RELEASE one of {', '.join(RELEASES)}"
                )
            release(name)

    @property
    def gateway_names(self) -> tuple[str, ...]:
        return tuple(gateway_name(k) for k in range(1, self.gateways + 1))

    @property
    def nodes(self) -> tuple[str, ...]:
        return (INI, *self.gateway_names)

    @property
    def links(self) -> tuple[Link, ...]:
        return tuple(Link(k, self.prefix) for k in range(1, self.gateways + 1))

    def namespace(self, node: str) -> str:
        node_kind(node)
        return f"{self.prefix}{node}"

    def link(self, gateway: str) -> Link:
        return Link(gateway_index(gateway), self.prefix)

    def charon_of(self, node: str) -> str:
        """The release of ``node``'s charon: its NODE=RELEASE entry, else ``charon``."""
        for entry in self.node_charon:
            name, _, rel = entry.partition("=")
            if name == node:
                return rel
        return self.charon

    def load_list(self, node: str) -> tuple[str, ...]:
        """The plugins ``node``'s charon loads: on XFRM without kernel-libipsec (with it,
        charon would hand ESP to user space even where the kernel has it) and with updown
        (route-based clones move their route with extsock's updown script)."""
        plugins = release(self.charon_of(node)).load_list
        if self.dataplane == "xfrm":
            return (*(p for p in plugins if p != "kernel-libipsec"), "updown")
        return plugins

    def remote_addrs(self) -> list[str]:
        """The initiator's ordered gateway addresses (what `home.remote_addrs` lists)."""
        return [link.gw_addr(self.ipv6) for link in self.links]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def swanctl_templates_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate the ``swanctl/`` template folder.

    Order: ``explicit``; ``$EXTSOCK_SWANCTL_DIR``; ``<parent of extsock_py>/swanctl`` (the repo
    when running from a checkout or an editable install); ``./swanctl``.
    """
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    elif env := os.environ.get(SWANCTL_DIR_ENV):
        candidates.append(Path(env))
    else:
        candidates.append(Path(__file__).resolve().parents[2] / "swanctl")
        candidates.append(Path.cwd() / "swanctl")
    for path in candidates:
        if (path / "ini" / "swanctl.conf").is_file() and (path / "segw" / "swanctl.conf").is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise TemplateError(
        f"swanctl templates not found (tried {tried}); set {SWANCTL_DIR_ENV} to the "
        "repository's swanctl/ folder"
    )


def _fmt_number(value: float) -> str:
    return f"{value:g}"


def _retransmit_block(cfg: LabConfig, node: str) -> str:
    if node_kind(node) != "ini":
        return ""
    lines = []
    if cfg.retransmit_timeout is not None:
        lines.append(f"    retransmit_timeout = {_fmt_number(cfg.retransmit_timeout)}")
    if cfg.retransmit_tries is not None:
        lines.append(f"    retransmit_tries = {cfg.retransmit_tries}")
    if cfg.retransmit_base is not None:
        lines.append(f"    retransmit_base = {_fmt_number(cfg.retransmit_base)}")
    if not lines:
        return "    # retransmission: charon's defaults"
    return "\n".join(["    # retransmission overridden by the lab", *lines])


def _indent(lines: list[str], depth: int) -> str:
    pad = " " * depth
    return "\n".join(pad + line for line in lines)


def _secrets_block(cfg: LabConfig, node: str) -> str:
    if cfg.auth == "psk":
        return _indent(["ike-lab {", f'    secret = "{cfg.psk}"', "}"], 4)
    if cfg.key_passphrase is not None:
        # swanctl (and extsock) decrypt private/<node>.pem with this passphrase
        lines = [
            f"private-{node} {{",
            f"    file = {node}.pem",
            f'    secret = "{cfg.key_passphrase}"',
            "}",
        ]
        return _indent(lines, 4)
    return "    # pubkey auth: private keys are loaded from private/ beside this file"


def _substitute(template_path: Path, values: dict[str, str]) -> str:
    try:
        text = template_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read template {template_path}: {exc}") from exc
    try:
        return Template(text).substitute(values)
    except (KeyError, ValueError) as exc:
        raise TemplateError(f"{template_path}: unfilled or bad placeholder {exc}") from exc


def render_strongswan_conf(
    node: str,
    cfg: LabConfig,
    *,
    vici_socket: str,
    log_path: str,
    templates: Path | None = None,
) -> str:
    """Render ``swanctl/<kind>/strongswan.conf`` for one node."""
    kind = node_kind(node)
    base = templates if templates is not None else swanctl_templates_dir()
    values = {
        "node": node,
        "plugins": " ".join(cfg.load_list(node)),
        "vici_socket": vici_socket,
        "log_path": log_path,
        "retransmit": _retransmit_block(cfg, node),
        "install_virtual_ip": "yes" if cfg.virtual_ips and kind == "ini" else "no",
    }
    return _substitute(base / kind / "strongswan.conf", values)


def render_swanctl_conf(node: str, cfg: LabConfig, *, templates: Path | None = None) -> str:
    """Render ``swanctl/<kind>/swanctl.conf`` for one node."""
    kind = node_kind(node)
    base = templates if templates is not None else swanctl_templates_dir()
    auth = "psk" if cfg.auth == "psk" else "pubkey"
    values: dict[str, str] = {
        "node": node,
        "auth": auth,
        "local_id": node_id(node),
        "ini_net": f"{INI_NET}, {INI_NET6}" if cfg.inner_ipv6 else INI_NET,
        "protected_net": f"{PROTECTED_NET}, {PROTECTED_NET6}" if cfg.inner_ipv6 else PROTECTED_NET,
        "secrets": _secrets_block(cfg, node),
    }
    if kind == "ini":
        values["remote_addrs"] = ", ".join(cfg.remote_addrs())
        values["remote_id"] = f"*.{ID_DOMAIN}"
        values["dpd_delay"] = cfg.dpd_delay
    else:
        link = cfg.link(node)
        values["local_addrs"] = link.gw_addr(cfg.ipv6)
    if cfg.auth == "cert":
        # The layout swanctl documents: own cert in x509/ (named here), the CA in x509ca/,
        # trusted because it is loaded from there (load-cert flag CA), no `cacerts` needed.
        values["local_extra"] = _indent([f"certs = {node}.pem"], 12)
        values["remote_extra"] = ""
    else:
        values["local_extra"] = ""
        values["remote_extra"] = ""
    text = _substitute(base / kind / "swanctl.conf", values)
    # Blank lines left by empty optional blocks.
    return re.sub(r"\n[ \t]*\n(?=[ \t]*})", "\n", text)


def render_node(
    node: str,
    cfg: LabConfig,
    node_dir: Path,
    *,
    templates: Path | None = None,
    vici_socket: str | None = None,
    log_path: str | None = None,
) -> dict[str, str]:
    """Both files of one node, keyed by file name, with paths inside ``node_dir``."""
    base = templates if templates is not None else swanctl_templates_dir()
    return {
        "strongswan.conf": render_strongswan_conf(
            node,
            cfg,
            vici_socket=vici_socket or str(node_dir / "charon.vici"),
            log_path=log_path or str(node_dir / "charon.log"),
            templates=base,
        ),
        "swanctl.conf": render_swanctl_conf(node, cfg, templates=base),
    }


def is_ipv6(address: str) -> bool:
    return ipaddress.ip_address(address).version == 6
