"""A lab of real charon daemons in network namespaces: ini and two or three gateways.

Each node is a network namespace (``exs-ini``, ``exs-segw1``...) with one charon, started as
``ip netns exec NS unshare -m sh -c '... mount -t tmpfs tmpfs /run ...; exec charon'`` so that
each daemon has its own /run (pid file) while its state dir stays reachable: the daemon's files
(strongswan.conf, swanctl.conf, charon.log, charon.vici) live in ``<state dir>/<node>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import vici

from extsock_py.lab import netns, roots
from extsock_py.lab.certs import make_pki
from extsock_py.lab.netns import CommandError, run
from extsock_py.lab.plugins import (
    DEBIAN_PLUGIN_PACKAGES,
    MissingPlugin,
    PluginsMissing,
    check_loaded,
    describe_missing,
    failed_in_log,
    parse_load_list,
)
from extsock_py.lab.releases import release
from extsock_py.lab.topology import (
    DATAPLANE_ENV,
    ECHO_PORT,
    INI,
    INI_ADDR,
    INI_ADDR6,
    INI_NET,
    PROTECTED_ADDR,
    PROTECTED_ADDR6,
    PROTECTED_NET,
    LabConfig,
    node_kind,
    render_node,
    swanctl_templates_dir,
)

FailMode = Literal["link", "drop"]
FAIL_MODES: tuple[FailMode, ...] = ("link", "drop")
CHARON = Path("/usr/lib/ipsec/charon")
DEFAULT_STATE_DIR = Path("/run/extsock-lab")
STATE_DIR_ENV = "EXTSOCK_LAB_DIR"
STATE_FILE = "lab.json"
CA_DIR = "ca"
# Under the XFRM VM's emulation everything runs 10-30x slower than on the host: the VM's
# test session multiplies the lab's fixed timeouts (vici answers, extsock's start) by this.
SLOWDOWN_ENV = "EXTSOCK_LAB_SLOWDOWN"
SLOWDOWN = max(1.0, float(os.environ.get(SLOWDOWN_ENV) or 1.0))
VICI_TIMEOUT = 5.0 * SLOWDOWN

# Inside the daemon's own mount namespace: keep the state dir reachable through a bind mount
# (it may itself live under /run), give /run a fresh tmpfs (charon's pid file is /run/charon.pid),
# put the state dir back, then become charon.  $1 = state dir, $2 = strongswan.conf, $3 = charon.
_CHARON_SCRIPT = (
    'set -e; mount --bind "$1" /mnt; mount -t tmpfs -o mode=0755 tmpfs /run; '
    'mkdir -p "$1"; mount --move /mnt "$1"; '
    'STRONGSWAN_CONF="$2" exec "$3"'
)
# The same for a charon of another release, from a Debian root ($4): /dev (for /dev/net/tun)
# and /proc bound into the root, a fresh tmpfs /run and /tmp, the state dir bound at the same
# path inside, so paths in strongswan.conf and the vici socket read the same from outside.
# All of it in charon's own mount namespace: the mounts go away with charon, even after a crash.
_CHROOT_SCRIPT = (
    'set -e; R="$4"; mount --bind /dev "$R/dev"; mount -t proc proc "$R/proc"; '
    'mount -t tmpfs -o mode=0755 tmpfs "$R/run"; mount -t tmpfs tmpfs "$R/tmp"; '
    'mkdir -p "$R$1"; mount --bind "$1" "$R$1"; '
    'exec chroot "$R" env STRONGSWAN_CONF="$2" "$3"'
)

_ECHO_SERVER = """\
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
tag = sys.argv[3].encode()
while True:
    try:  # an answer sent before this gateway's tunnel route exists fails: keep serving
        data, peer = s.recvfrom(4096)
        s.sendto(tag + b" " + data, peer)
    except OSError:
        pass
"""

_ECHO_CLIENT = """\
import socket, sys, time
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
wait, tries = float(sys.argv[4]), int(sys.argv[5])
for i in range(tries):
    s.settimeout(wait)
    s.sendto(b"echo %d" % i, (sys.argv[2], int(sys.argv[3])))
    try:
        data, _ = s.recvfrom(4096)
    except OSError:
        continue
    print(data.decode().split()[0])
    sys.exit(0)
sys.exit(1)
"""


class LabError(RuntimeError):
    """The lab could not do what was asked."""


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; bounded in time and count."""
    deadline = time.monotonic() + timeout
    max_polls = int(timeout / interval) + 2
    for _ in range(max_polls):
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    return predicate()


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def _text(value: Any) -> Any:
    """Decode the bytes in a vici answer, recursively."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {str(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def _proc_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name in parentheses.
    if stat.rpartition(")")[2].split()[0] not in ("Z", "X"):
        return True
    # A zombie leader whose other threads still exit still holds the sockets (UDP 500...).
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def _proc_environ(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class NodeStatus:
    """What ``Lab.status`` reports for one node."""

    node: str
    namespace: str
    namespace_exists: bool
    pid: int | None
    charon_alive: bool
    vici_uri: str
    vici_ok: bool
    link: str | None
    fault: str | None
    sas: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        pid = f"pid {self.pid} {'alive' if self.charon_alive else 'dead'}" if self.pid else "no pid"
        head = (
            f"{self.node:6} ns {self.namespace}{'' if self.namespace_exists else ' (absent)'}; "
            f"charon {pid}; vici {'ok' if self.vici_ok else 'down'}"
        )
        if self.link is not None:
            head += f"; link {self.link}"
        if self.fault:
            head += f"; FAULT {self.fault}"
        return [head, *(f"        {sa}" for sa in self.sas)]


class Lab:
    """ini + gateways, each a namespace with one charon.  See the module docstring."""

    def __init__(
        self,
        config: LabConfig | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        templates: str | os.PathLike[str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self._templates_arg = templates
        saved = self._read_state()
        if config is None:
            config = LabConfig.from_dict(saved["config"]) if saved else LabConfig()
        self.config = config
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def attach(cls, state_dir: str | os.PathLike[str] | None = None) -> Lab:
        """The lab a previous ``up`` (maybe another process) left in ``state_dir``."""
        lab = cls(state_dir=state_dir)
        if not (lab.state_dir / STATE_FILE).is_file():
            raise LabError(f"no lab in {lab.state_dir} (run `lab up` first)")
        return lab

    # ----------------------------------------------------------------- naming and paths

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.config.nodes

    @property
    def gateways(self) -> tuple[str, ...]:
        return self.config.gateway_names

    def _check_node(self, node: str) -> None:
        if node not in self.nodes:
            raise LabError(f"unknown node {node!r}; this lab has {', '.join(self.nodes)}")

    def namespace(self, node: str) -> str:
        return self.config.namespace(node)

    def node_dir(self, node: str) -> Path:
        return self.state_dir / node

    def vici_path(self, node: str) -> Path:
        return self.node_dir(node) / "charon.vici"

    def vici_uri(self, node: str) -> str:
        """``unix:///<state dir>/<node>/charon.vici``: reachable from the root namespace."""
        return f"unix://{self.vici_path(node)}"

    def log_path(self, node: str) -> Path:
        return self.node_dir(node) / "charon.log"

    def swanctl_conf(self, node: str) -> Path:
        return self.node_dir(node) / "swanctl.conf"

    @property
    def ini_conf(self) -> Path:
        """The rendered managed connection ``home`` (extsock loads it; the lab does not)."""
        return self.swanctl_conf(INI)

    # ----------------------------------------------------------------- state file

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.state_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _state(self) -> dict[str, Any]:
        data = self._read_state() or {}
        data.setdefault("config", self.config.to_dict())
        data.setdefault("pids", {})
        data.setdefault("echo_pids", {})
        data.setdefault("faults", {})
        return data

    def _write_state(self, data: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.state_dir / STATE_FILE)

    def pid(self, node: str) -> int | None:
        value = self._state()["pids"].get(node)
        return int(value) if value else None

    def is_running(self, node: str) -> bool:
        pid = self.pid(node)
        if pid is None:
            return False
        child = self._children.get(pid)
        if child is not None:
            # Our own child: exact, and immune to the instant of each exec (ip netns exec ->
            # unshare -> sh -> charon) where /proc/PID/cmdline reads back empty.
            return child.poll() is None
        if not _proc_alive(pid):
            return False
        cmdline = _proc_cmdline(pid)
        return not cmdline or "charon" in cmdline  # empty: in the middle of an exec

    # ----------------------------------------------------------------- preflight

    @staticmethod
    def preflight(dataplane: str | None = None) -> str | None:
        """None when a lab can run here, else why not (integration tests skip with it).

        ``dataplane`` (default: ``$EXTSOCK_LAB_DATAPLANE``, else libipsec): only libipsec
        needs /dev/net/tun; a lab on XFRM runs where the kernel has ESP (in the VM)."""
        dataplane = dataplane or os.environ.get(DATAPLANE_ENV) or "libipsec"
        if os.geteuid() != 0:
            return "the lab needs root (network namespaces, mounts)"
        if not CHARON.is_file():
            return f"{CHARON} missing (apt-get install strongswan-charon libcharon-extra-plugins)"
        for tool in ("ip", "swanctl", "unshare", "nft", "pki"):
            if shutil.which(tool) is None:
                return f"`{tool}` not found on PATH"
        if dataplane == "libipsec" and not Path("/dev/net/tun").exists():
            return "/dev/net/tun missing (kernel-libipsec needs it)"
        probe = f"exs-pf{os.getpid()}"
        try:
            run(["ip", "netns", "add", probe], timeout=5)
        except CommandError as exc:
            return f"`ip netns add` fails: {exc}"
        finally:
            with contextlib.suppress(CommandError):
                netns.ns_delete(probe)
        return None

    # ----------------------------------------------------------------- up / down

    def up(self, timeout: float = 30.0, *, cleanup_on_error: bool = True) -> None:
        """Build namespaces and links, render configs, start all charons, load gateways.

        A lab already there (same namespace names or state dir) is torn down first.
        """
        if self._read_state() is not None or any(
            netns.ns_exists(self.namespace(n)) for n in self.nodes
        ):
            self.down()
        self.ensure_roots()  # a first build takes ~30 s per release, outside `timeout`
        deadline = time.monotonic() + timeout
        try:
            self._write_state(self._state())
            self._render_all()
            self._build_network()
            for node in self.nodes:
                self._spawn_charon(node)
            for node in self.nodes:
                self._wait_vici(node, max(1.0, deadline - time.monotonic()))
            for gw in self.gateways:
                self._load_gateway(gw)
            for gw in self.gateways:
                self._start_echo(gw, PROTECTED_ADDR)
                if self.config.inner_ipv6:
                    self._start_echo(gw, PROTECTED_ADDR6)
        except BaseException:
            if cleanup_on_error:
                self.down()
            raise

    def _render_all(self) -> None:
        templates = swanctl_templates_dir(self._templates_arg)
        dirs = {node: self.node_dir(node) for node in self.nodes}
        for node, node_dir in dirs.items():
            node_dir.mkdir(parents=True, exist_ok=True)
            for name, text in render_node(node, self.config, node_dir, templates=templates).items():
                (node_dir / name).write_text(text)
        if self.config.auth == "cert":
            ca_dir = self.state_dir / CA_DIR
            ca_dir.mkdir(mode=0o700, exist_ok=True)
            make_pki(self.config, ca_dir, dirs)

    def _build_network(self) -> None:
        cfg = self.config
        for node in self.nodes:
            netns.ns_add(self.namespace(node))
        ini_ns = self.namespace(INI)
        netns.add_addr(ini_ns, "lo", f"{INI_ADDR}/24")
        if cfg.inner_ipv6:  # libipsec's routes need a source inside the local selector
            netns.add_addr(ini_ns, "lo", f"{INI_ADDR6}/64", nodad=True)
        for link in cfg.links:
            gw = f"segw{link.index}"
            gw_ns = self.namespace(gw)
            netns.add_addr(gw_ns, "lo", f"{PROTECTED_ADDR}/24")
            if cfg.inner_ipv6:
                netns.add_addr(gw_ns, "lo", f"{PROTECTED_ADDR6}/64", nodad=True)
            netns.add_veth(ini_ns, link.ini_if, gw_ns, link.gw_if)
            # Up before addresses: IPv6 addresses added to a down veth cost ~1 s (lost NS)
            # on the first packet after the link comes up.
            netns.set_link(ini_ns, link.ini_if, up=True)
            netns.set_link(gw_ns, link.gw_if, up=True)
            netns.add_addr(ini_ns, link.ini_if, f"{link.ini_v4}/24")
            netns.add_addr(ini_ns, link.ini_if, f"{link.ini_v6}/64", nodad=True)
            netns.add_addr(gw_ns, link.gw_if, f"{link.gw_v4}/24")
            netns.add_addr(gw_ns, link.gw_if, f"{link.gw_v6}/64", nodad=True)

    def down(self, timeout: float = 15.0) -> None:
        """Remove everything: idempotent, works after a crash and without a state file."""
        deadline = time.monotonic() + timeout
        our_ns = [self.config.namespace(n) for n in LabConfig(3, prefix=self.config.prefix).nodes]
        victims: set[int] = set(self._orphan_charons())
        for ns in our_ns:
            victims.update(netns.ns_pids(ns))
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: not any(_proc_alive(pid) for pid in victims),
            max(0.1, deadline - time.monotonic()),
        )
        self._reap()
        for ns in our_ns:
            netns.ns_delete(ns)
        roots.unmount_leftovers()
        self._remove_state_dir()

    def _orphan_charons(self) -> list[int]:
        """Charons (or our echo servers) started for this state dir, found through /proc."""
        marker = f"STRONGSWAN_CONF={self.state_dir}/"
        found = []
        state = self._read_state() or {}
        recorded = {int(p) for p in (state.get("pids") or {}).values() if p}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            cmd = _proc_cmdline(pid)
            if "charon" not in cmd and pid not in recorded:
                continue
            if any(var.startswith(marker) for var in _proc_environ(pid)):
                found.append(pid)
        return found

    def _reap(self) -> None:
        """Collect our exited children (no zombies); never waits for live ones."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]

    def _remove_state_dir(self) -> None:
        if not self.state_dir.is_dir():
            return
        owned = {STATE_FILE, f".{STATE_FILE}.tmp", CA_DIR, INI, "segw1", "segw2", "segw3"}
        for entry in self.state_dir.iterdir():
            if entry.name in owned:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()

    # ----------------------------------------------------------------- daemons

    def ensure_roots(self) -> dict[str, Path]:
        """The Debian root of each node whose charon is not the host's, built if missing."""
        found: dict[str, Path] = {}
        for node in self.nodes:
            rel = release(self.config.charon_of(node))
            if not rel.host:
                try:
                    found[node] = roots.ensure_root(rel)
                except roots.RootError as exc:
                    raise LabError(f"charon {rel.name} of {node}: {exc}") from exc
        return found

    def charon_root(self, node: str) -> Path | None:
        """Where ``node``'s charon runs from: a Debian root, or None for the host's charon."""
        rel = release(self.config.charon_of(node))
        return None if rel.host else roots.root_dir(rel)

    def charon_label(self, node: str) -> str:
        """``sid (6.1.0)``: the release of ``node``'s charon and its strongSwan version."""
        rel = release(self.config.charon_of(node))
        root = self.charon_root(node)
        version = rel.strongswan if root is None else roots.charon_version(root)
        return f"{rel.name} ({version or '?'})"

    def _spawn_charon(self, node: str) -> int:
        node_dir = self.node_dir(node)
        self.vici_path(node).unlink(missing_ok=True)
        conf = str(node_dir / "strongswan.conf")
        root = self.charon_root(node)
        if root is None:
            script = ["sh", "-c", _CHARON_SCRIPT, "lab-charon", str(self.state_dir), conf,
                      str(CHARON)]  # fmt: skip
        else:
            if not roots.is_ready(root):
                raise LabError(f"no charon root at {root}: run `extsock lab up` to build it")
            script = ["sh", "-c", _CHROOT_SCRIPT, "lab-charon", str(self.state_dir), conf,
                      roots.CHARON_IN_ROOT, str(root)]  # fmt: skip
        argv = netns.ns_argv(self.namespace(node), ["unshare", "-m", *script])
        with open(node_dir / "charon.out", "ab") as out:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self._children[child.pid] = child
        state = self._state()
        state["pids"][node] = child.pid
        self._write_state(state)
        (node_dir / "charon.pid").write_text(f"{child.pid}\n")
        return child.pid

    def _wait_vici(self, node: str, timeout: float) -> None:
        loaded: list[str] = []

        def ready() -> bool:
            if not self.is_running(node):
                why = self._failed_plugins(node)
                raise LabError(f"charon of {node} died at start: {why or self._log_tail(node)}")
            try:
                with self.vici_session(node, timeout=1.0) as session:
                    stats = _text(session.stats())
            except OSError:
                return False
            loaded.extend(str(p) for p in stats.get("plugins") or ())
            return True

        if not wait_until(ready, timeout, interval=0.02):
            why = self._failed_plugins(node)
            raise LabError(f"vici of {node} not ready after {timeout:.1f} s{why and ': ' + why}")
        self._check_plugins(node, loaded)

    def load_list(self, node: str) -> tuple[str, ...]:
        """The plugins of the ``load`` line of a node's rendered strongswan.conf."""
        try:
            return parse_load_list((self.node_dir(node) / "strongswan.conf").read_text())
        except OSError:
            return ()

    def _check_plugins(self, node: str, loaded: Sequence[str]) -> None:
        """Stop with the plugin and its Debian package unless charon loaded its whole list."""
        try:
            check_loaded(f"charon of {node}", self.load_list(node), loaded, self._packages(node))
        except PluginsMissing as exc:
            raise LabError(str(exc)) from exc

    def _packages(self, node: str) -> Mapping[str, str]:
        """plugin -> Debian package for ``node``'s charon (its root's own, if it has one)."""
        root = self.charon_root(node)
        return DEBIAN_PLUGIN_PACKAGES if root is None else roots.plugin_packages(root)

    def _failed_plugins(self, node: str) -> str:
        """Which plugins of the load list charon's log says failed to load, and the fix; or ''."""
        with contextlib.suppress(OSError):
            log = (self.node_dir(node) / "charon.log").read_text(errors="replace")
            log += (self.node_dir(node) / "charon.out").read_text(errors="replace")
            failed = [p for p in failed_in_log(log) if p in self.load_list(node)]
            if failed:
                packages = self._packages(node)
                missing = [MissingPlugin(p, packages.get(p)) for p in failed]
                return describe_missing(f"charon of {node}", missing)
        return ""

    def _log_tail(self, node: str, lines: int = 5) -> str:
        tail: list[str] = []
        for name in ("charon.out", "charon.log"):
            with contextlib.suppress(OSError):
                tail += (self.node_dir(node) / name).read_text(errors="replace").splitlines()
        return " | ".join(tail[-lines:]) or f"no output in {self.node_dir(node)}"

    def _load_gateway(self, gateway: str) -> None:
        self.swanctl(gateway, "--load-all", "--file", str(self.swanctl_conf(gateway)))

    def _start_echo(self, gateway: str, address: str) -> None:
        argv = netns.ns_argv(
            self.namespace(gateway),
            [sys.executable, "-c", _ECHO_SERVER, address, str(ECHO_PORT), gateway],
        )
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._children[child.pid] = child
        state = self._state()
        state["echo_pids"][gateway if address == PROTECTED_ADDR else f"{gateway}-v6"] = child.pid
        self._write_state(state)

    def kill(self, node: str, timeout: float = 5.0) -> None:
        """SIGKILL a node's charon (its namespace, links and config stay)."""
        self._check_node(node)
        pid = self.pid(node)
        if pid is None or not self.is_running(node):
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        child = self._children.pop(pid, None)
        if child is not None:
            # waitpid returns once every thread is gone (and with them its sockets).
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise LabError(f"charon {pid} of {node} survived SIGKILL for {timeout} s") from None
        elif not wait_until(lambda: not _proc_alive(pid), timeout):
            raise LabError(f"charon {pid} of {node} survived SIGKILL for {timeout} s")
        self._reap()

    def start(self, node: str, timeout: float = 15.0) -> None:
        """(Re)start a node's charon; a gateway gets its config loaded again."""
        self._check_node(node)
        if self.is_running(node):
            raise LabError(f"charon of {node} already runs (pid {self.pid(node)})")
        if not netns.ns_exists(self.namespace(node)):
            raise LabError(f"namespace {self.namespace(node)} missing: run `lab up`")
        self._spawn_charon(node)
        self._wait_vici(node, timeout)
        if node_kind(node) == "segw":
            self._load_gateway(node)

    def reset(self, timeout: float = 15.0) -> None:
        """Back to just after ``up``: heal all, restart every charon (no SA, ini has no conn)."""
        for node in reversed(self.nodes):
            self.heal(node)
        for node in self.nodes:
            self.kill(node)
        for node in self.nodes:
            self._spawn_charon(node)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            self._wait_vici(node, max(1.0, deadline - time.monotonic()))
        for gw in self.gateways:
            self._load_gateway(gw)

    # ----------------------------------------------------------------- faults

    def fail(self, node: str, mode: FailMode = "link") -> None:
        """Make a node silent: ``link`` downs its veth(s), ``drop`` drops IKE/ESP in its netns."""
        self._check_node(node)
        if mode not in FAIL_MODES:
            raise LabError(f"fail mode must be one of {FAIL_MODES}, not {mode!r}")
        ns = self.namespace(node)
        if mode == "link":
            for ifname in self._node_ifs(node):
                netns.set_link(ns, ifname, up=False)
        else:
            netns.drop_ike_esp(ns)
        state = self._state()
        modes = set(state["faults"].get(node, "").split(",")) - {""}
        state["faults"][node] = ",".join(sorted(modes | {mode}))
        self._write_state(state)

    def heal(self, node: str) -> None:
        """Undo every fault on a node."""
        self._check_node(node)
        ns = self.namespace(node)
        for ifname in self._node_ifs(node):
            netns.set_link(ns, ifname, up=True)
        netns.undrop(ns)
        # Return once both ends report UP: IPv6 packets sent earlier are lost (~1 s NDP retry).
        # A veth is only UP with both ends admin-up, so links still failed elsewhere are skipped.
        ends = [end for pair in self._link_pairs(node) if all(netns.link_admin_up(*e) for e in pair)
                for end in pair]  # fmt: skip
        wait_until(lambda: all(netns.link_state(n, i) == "UP" for n, i in ends), 3.0)
        state = self._state()
        state["faults"].pop(node, None)
        self._write_state(state)

    def _link_pairs(self, node: str) -> list[tuple[tuple[str, str], tuple[str, str]]]:
        """(namespace, interface) of both ends of each link of ``node``."""
        links = self.config.links if node == INI else (self.config.link(node),)
        ini_ns = self.namespace(INI)
        return [
            ((ini_ns, link.ini_if), (self.namespace(f"segw{link.index}"), link.gw_if))
            for link in links
        ]

    def _node_ifs(self, node: str) -> list[str]:
        if node == INI:
            return [link.ini_if for link in self.config.links]
        return [self.config.link(node).gw_if]

    # ----------------------------------------------------------------- running things

    def ns_exec(
        self, node: str, argv: Sequence[str], timeout: float = 10.0, *, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in a node's network namespace (not in charon's mount namespace)."""
        self._check_node(node)
        return run(netns.ns_argv(self.namespace(node), argv), timeout=timeout, check=check)

    def swanctl(
        self, node: str, *args: str, timeout: float = 15.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``swanctl ARGS -u <node's vici>`` from the root namespace."""
        self._check_node(node)
        return run(["swanctl", *args, "-u", self.vici_uri(node)], timeout=timeout, check=check)

    @contextlib.contextmanager
    def vici_session(self, node: str, timeout: float = VICI_TIMEOUT) -> Iterator[Any]:
        """A ``vici.Session`` on a node's socket (with a socket timeout), closed afterwards."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(self.vici_path(node)))
            yield vici.Session(sock)
        finally:
            sock.close()

    def load_ini_conf_with_swanctl(self, timeout: float = 15.0) -> None:
        """Load the rendered ``home`` into ini's charon with plain swanctl (no extsock)."""
        self.swanctl(INI, "--load-all", "--file", str(self.ini_conf), timeout=timeout)

    def initiate_with_swanctl(
        self, child: str = "net", ike: str = "home", timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """``swanctl --initiate`` on ini; returns the finished process (check returncode)."""
        secs = max(1, int(timeout))
        return self.swanctl(
            INI, "--initiate", "--child", child, "--ike", ike, "--timeout", str(secs),
            timeout=secs + 5.0, check=False,
        )  # fmt: skip

    def list_sas(self, node: str, timeout: float = VICI_TIMEOUT) -> list[dict[str, Any]]:
        """``list-sas`` of a node as str-valued dicts, one ``{ike name: {...}}`` per IKE_SA."""
        with self.vici_session(node, timeout) as session:
            return [_text(sa) for sa in list(session.list_sas())]

    def child_installed(self, node: str, child: str | None = None) -> bool:
        """Whether a node's charon has an INSTALLED CHILD_SA (named ``child``, if given)."""
        try:
            sas = self.list_sas(node, timeout=2.0)
        except OSError:
            return False
        for entry in sas:
            for ike in entry.values():
                for sa in (ike.get("child-sas") or {}).values():
                    if sa.get("state") == "INSTALLED" and child in (None, sa.get("name")):
                        return True
        return False

    def which_gateway_has_child(self) -> str | None:
        """The first gateway whose charon has an INSTALLED CHILD_SA, or None."""
        for gw in self.gateways:
            if self.is_running(gw) and self.child_installed(gw):
                return gw
        return None

    def wait_child_installed(self, gateway: str, timeout: float = 10.0) -> bool:
        """Wait until ``gateway`` (or any node) has an INSTALLED CHILD_SA."""
        self._check_node(gateway)
        return wait_until(lambda: self.child_installed(gateway), timeout, interval=0.05)

    def ping_through_tunnel(self, count: int = 1, timeout: float = 1.0) -> bool:
        """ICMP from 10.100.0.1 (ini) to 10.200.0.1 (the protected net): True if any reply."""
        wait = max(1, round(timeout))
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), "-I", INI_ADDR,
                PROTECTED_ADDR]  # fmt: skip
        try:
            proc = self.ns_exec(INI, argv, timeout=count * (wait + 1) + 5.0)
        except CommandError:
            return False
        return proc.returncode == 0

    def udp_echo(self, timeout: float = 1.0, tries: int = 1, source: str = INI_ADDR) -> str | None:
        """UDP from `source` (10.100.0.1) to the echo server on 10.200.0.1 (from an IPv6
        `source`: on fd00:200::1, in a lab with `inner_ipv6`): the answering gateway or None."""
        target = PROTECTED_ADDR6 if ":" in source else PROTECTED_ADDR
        argv = [sys.executable, "-c", _ECHO_CLIENT, source, target, str(ECHO_PORT),
                str(timeout), str(tries)]  # fmt: skip
        try:
            proc = self.ns_exec(INI, argv, timeout=tries * timeout + 10.0)
        except CommandError:
            return None
        answer = proc.stdout.strip()
        return answer if proc.returncode == 0 and answer else None

    # ----------------------------------------------------------------- status

    def status(self) -> list[NodeStatus]:
        state = self._read_state() or {}
        faults = state.get("faults") or {}
        result = []
        for node in self.nodes:
            ns = self.namespace(node)
            exists = netns.ns_exists(ns)
            pid = self.pid(node)
            alive = self.is_running(node)
            link = None
            if node != INI and exists:
                link = netns.link_state(ns, self.config.link(node).gw_if)
            fault = faults.get(node)
            if exists and netns.dropping(ns) and "drop" not in (fault or ""):
                fault = f"{fault},drop" if fault else "drop"
            sas: list[str] = []
            vici_ok = False
            if alive:
                try:
                    sas = [_sa_line(entry) for entry in self.list_sas(node, timeout=2.0)]
                    vici_ok = True
                except OSError as exc:
                    sas = [f"vici error: {exc}"]
            result.append(
                NodeStatus(node, ns, exists, pid, alive, self.vici_uri(node), vici_ok, link,
                           fault, sas)
            )  # fmt: skip
        return result


def _sa_line(entry: dict[str, Any]) -> str:
    parts = []
    for name, ike in entry.items():
        children = ", ".join(
            f"{c.get('name')}:{c.get('state')}" for c in (ike.get("child-sas") or {}).values()
        )
        parts.append(
            f"{name}#{ike.get('uniqueid')} {ike.get('state')} "
            f"{ike.get('local-host')} <-> {ike.get('remote-host')} "
            f"[{ike.get('remote-id')}] {children or 'no CHILD_SA'}"
        )
    return "; ".join(parts)


__all__ = [
    "FAIL_MODES",
    "INI_NET",
    "PROTECTED_NET",
    "FailMode",
    "Lab",
    "LabError",
    "NodeStatus",
    "wait_until",
]
