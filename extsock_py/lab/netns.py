"""Thin wrappers over ``ip``, ``nft`` and friends; every call has a timeout."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

DEFAULT_TIMEOUT = 10.0
NETNS_DIR = Path("/run/netns")
FAULT_TABLE = "exs_fault"


class CommandError(RuntimeError):
    """A command failed or timed out."""

    def __init__(self, argv: Sequence[str], message: str) -> None:
        super().__init__(f"{' '.join(argv)}: {message}")
        self.argv = list(argv)


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing text output; raise CommandError on failure."""
    try:
        proc = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, f"timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise CommandError(argv, str(exc)) from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise CommandError(argv, f"exit {proc.returncode}: {detail}")
    return proc


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ns_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def ns_add(ns: str) -> None:
    """Create a namespace with lo up; IPv6 addresses survive a link down (``fail --mode link``)
    and skip DAD."""
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    settings = [f"net.ipv6.conf.{scope}.{key}" for scope in ("all", "default")
                for key in ("keep_addr_on_down=1", "accept_dad=0")]  # fmt: skip
    run(ns_argv(ns, ["sysctl", "-q", "-w", *settings]))


def ns_delete(ns: str) -> None:
    """Delete a namespace if it exists (its veths go with it)."""
    if ns_exists(ns):
        run(["ip", "netns", "delete", ns], check=False)


def ns_pids(ns: str) -> list[int]:
    """Processes whose network namespace is ``ns``."""
    if not ns_exists(ns):
        return []
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b,
         "netns", ns_b])  # fmt: skip


def add_addr(ns: str, ifname: str, cidr: str, *, nodad: bool = False) -> None:
    argv = ["ip", "-n", ns, "addr", "add", cidr, "dev", ifname]
    if nodad:
        argv.append("nodad")
    run(argv)


def set_link(ns: str, ifname: str, *, up: bool) -> None:
    run(["ip", "-n", ns, "link", "set", ifname, "up" if up else "down"])


def link_state(ns: str, ifname: str) -> str:
    """``UP``, ``DOWN``, ``LOWERLAYERDOWN``... or ``absent``."""
    if not ns_exists(ns):
        return "absent"
    proc = run(["ip", "-n", ns, "-j", "link", "show", "dev", ifname], check=False)
    if proc.returncode != 0:
        return "absent"
    try:
        data = json.loads(proc.stdout)
        return str(data[0].get("operstate", "UNKNOWN"))
    except (ValueError, IndexError, AttributeError):
        return "UNKNOWN"


def link_admin_up(ns: str, ifname: str) -> bool:
    proc = run(["ip", "-n", ns, "-j", "link", "show", "dev", ifname], check=False)
    try:
        return "UP" in json.loads(proc.stdout)[0].get("flags", [])
    except (ValueError, IndexError, AttributeError):
        return False


_DROP_RULES = (
    "udp dport { 500, 4500 } drop",
    "udp sport { 500, 4500 } drop",
    "meta l4proto esp drop",
)


def drop_ike_esp(ns: str) -> None:
    """Drop IKE (UDP 500/4500) and ESP in and out of ``ns`` (nftables inet table)."""
    rules = "; ".join(_DROP_RULES)
    script = (
        f"table inet {FAULT_TABLE} {{\n"
        f"  chain input {{ type filter hook input priority -10; policy accept; {rules}; }}\n"
        f"  chain output {{ type filter hook output priority -10; policy accept; {rules}; }}\n"
        "}\n"
    )
    undrop(ns)
    run(ns_argv(ns, ["nft", "-f", "-"]), stdin=script)


def undrop(ns: str) -> None:
    if dropping(ns):
        run(ns_argv(ns, ["nft", "delete", "table", "inet", FAULT_TABLE]))


def dropping(ns: str) -> bool:
    if not ns_exists(ns):
        return False
    proc = run(ns_argv(ns, ["nft", "list", "table", "inet", FAULT_TABLE]), check=False)
    return proc.returncode == 0
