"""``extsock lab ...``: drive the namespace lab from a shell.

Attach to the main group with ``main.add_command(lab)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import click
import vici

from extsock_py.lab import vmlab
from extsock_py.lab.lab import FAIL_MODES, Lab, LabError, default_state_dir
from extsock_py.lab.netns import CommandError
from extsock_py.lab.plugins import PluginsMissing, check_loaded, parse_load_list
from extsock_py.lab.releases import DEFAULT_RELEASE, RELEASES
from extsock_py.lab.topology import (
    DATAPLANE_ENV,
    DATAPLANES,
    SWANCTL_DIR_ENV,
    LabConfig,
    TemplateError,
    render_node,
    swanctl_templates_dir,
)
from extsock_py.lab.vm import VmError

NODES = ("ini", "segw1", "segw2", "segw3")
F = TypeVar("F", bound=Callable[..., Any])


def _friendly(func: F) -> F:
    """Turn the lab's errors into click errors (exit 1, one line)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (LabError, CommandError, TemplateError, ValueError, VmError) as exc:
            raise click.ClickException(str(exc)) from exc

    return cast(F, wrapper)


def _attach(ctx: click.Context) -> Lab:
    obj = ctx.ensure_object(dict)
    return Lab.attach(obj["state_dir"])


@click.group("lab")
@click.option(
    "--dir",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="EXTSOCK_LAB_DIR",
    default=None,
    help=f"lab state dir (default {default_state_dir()}; env EXTSOCK_LAB_DIR)",
)
@click.option(
    "--swanctl-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=SWANCTL_DIR_ENV,
    default=None,
    help=f"template folder (default: the repo's swanctl/; env {SWANCTL_DIR_ENV})",
)
@click.pass_context
def lab(ctx: click.Context, state_dir: Path | None, swanctl_dir: Path | None) -> None:
    """A lab of real charon daemons in network namespaces (needs root)."""
    obj = ctx.ensure_object(dict)
    obj["state_dir"] = state_dir or default_state_dir()
    obj["swanctl_dir"] = swanctl_dir
    # A lab up in the XFRM VM: its commands run there.
    if ctx.invoked_subcommand:
        try:
            rc = vmlab.forward(obj["state_dir"], sys.argv, ctx.invoked_subcommand)
        except VmError as exc:
            raise click.ClickException(str(exc)) from exc
        if rc is not None:
            ctx.exit(rc)


@lab.command()
@click.option("--gateways", type=click.IntRange(1, 3), default=2, show_default=True)
@click.option("--ipv6", is_flag=True, help="ini's remote_addrs are fd99:K::2 (outer IPv6)")
@click.option(
    "--inner-ipv6", is_flag=True, help="the tunnel also carries fd00:100::/64 <-> fd00:200::/64"
)
@click.option("--auth", type=click.Choice(["psk", "cert"]), default="psk", show_default=True)
@click.option("--retransmit-timeout", type=float, default=None, help="ini's charon only")
@click.option("--retransmit-tries", type=int, default=None, help="ini's charon only")
@click.option("--retransmit-base", type=float, default=None, help="ini's charon only")
@click.option("--dpd-delay", default="1s", show_default=True, help="of ini's `home`")
@click.option("--load-ini", is_flag=True, help="also load `home` into ini with plain swanctl")
@click.option("--initiate", is_flag=True, help="with --load-ini: swanctl --initiate it")
@click.option(
    "--charon",
    type=click.Choice(list(RELEASES)),
    default=DEFAULT_RELEASE,
    show_default=True,
    help="Debian release every node's charon comes from: bookworm (the host's, 5.9.8), "
    "trixie (6.0.1), sid (6.1); a Debian root is built with mmdebstrap on first use",
)
@click.option(
    "--node-charon",
    multiple=True,
    metavar="NODE=RELEASE",
    help="one node's charon from another release, e.g. ini=sid (repeatable)",
)
@click.option(
    "--kernel",
    "dataplane",
    type=click.Choice(DATAPLANES),
    default="libipsec",
    show_default=True,
    help="the data plane: libipsec (ESP in charon, here) or xfrm (the kernel's ESP, in a QEMU "
    "VM with Debian's kernel; its image is built once with mmdebstrap)",
)
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.pass_context
@_friendly
def up(
    ctx: click.Context,
    gateways: int,
    ipv6: bool,
    inner_ipv6: bool,
    auth: str,
    retransmit_timeout: float | None,
    retransmit_tries: int | None,
    retransmit_base: float | None,
    dpd_delay: str,
    load_ini: bool,
    initiate: bool,
    charon: str,
    node_charon: tuple[str, ...],
    dataplane: str,
    timeout: float,
) -> None:
    """Create namespaces and links, start one charon per node, load the gateways."""
    obj = ctx.ensure_object(dict)
    if dataplane == "xfrm" and os.environ.get(DATAPLANE_ENV) != "xfrm":
        args = sys.argv[sys.argv.index("up") + 1 :] if "up" in sys.argv else []
        ctx.exit(vmlab.up(obj["state_dir"], vmlab.without_kernel(args), timeout))
    reason = Lab.preflight()
    if reason:
        raise click.ClickException(f"lab cannot run here: {reason}")
    config = LabConfig(
        gateways=gateways,
        ipv6=ipv6,
        inner_ipv6=inner_ipv6,
        auth="cert" if auth == "cert" else "psk",
        retransmit_timeout=retransmit_timeout,
        retransmit_tries=retransmit_tries,
        retransmit_base=retransmit_base,
        dpd_delay=dpd_delay,
        charon=charon,
        node_charon=node_charon,
        dataplane="xfrm" if os.environ.get(DATAPLANE_ENV) == "xfrm" else "libipsec",
    )
    the_lab = Lab(config, obj["state_dir"], obj["swanctl_dir"])
    started = time.monotonic()
    the_lab.up(timeout=timeout)
    click.echo(f"lab up in {time.monotonic() - started:.2f} s; state in {the_lab.state_dir}")
    for node in the_lab.nodes:
        click.echo(f"  {node:6} {the_lab.vici_uri(node)}  charon {the_lab.charon_label(node)}")
    click.echo(f"  ini's managed connection: {the_lab.ini_conf}")
    if load_ini:
        the_lab.load_ini_conf_with_swanctl()
        if initiate:
            proc = the_lab.initiate_with_swanctl()
            click.echo("initiate: " + ("ok" if proc.returncode == 0 else "FAILED"))


@lab.command()
@click.pass_context
@_friendly
def down(ctx: click.Context) -> None:
    """Kill every lab charon, delete the namespaces and the state dir (idempotent)."""
    obj = ctx.ensure_object(dict)
    Lab(state_dir=obj["state_dir"]).down()
    click.echo("lab down")


@lab.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_friendly
def status(ctx: click.Context, as_json: bool) -> None:
    """Per node: namespace, charon, vici, link, faults, SAs."""
    report = _attach(ctx).status()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(s) for s in report], indent=2))
        return
    for node_status in report:
        click.echo("\n".join(node_status.lines()))


@lab.command()
@click.argument("node", type=click.Choice(NODES))
@click.option("--mode", type=click.Choice(FAIL_MODES), default="link", show_default=True)
@click.pass_context
@_friendly
def fail(ctx: click.Context, node: str, mode: str) -> None:
    """Make NODE silent: link = its veth down; drop = drop IKE/ESP in its namespace."""
    _attach(ctx).fail(node, "drop" if mode == "drop" else "link")
    click.echo(f"{node}: failed ({mode})")


@lab.command()
@click.argument("node", type=click.Choice(NODES))
@click.pass_context
@_friendly
def heal(ctx: click.Context, node: str) -> None:
    """Undo every fault on NODE."""
    _attach(ctx).heal(node)
    click.echo(f"{node}: healed")


@lab.command()
@click.argument("node", type=click.Choice(NODES))
@click.pass_context
@_friendly
def kill(ctx: click.Context, node: str) -> None:
    """SIGKILL NODE's charon."""
    _attach(ctx).kill(node)
    click.echo(f"{node}: charon killed")


@lab.command()
@click.argument("node", type=click.Choice(NODES))
@click.option("--timeout", type=float, default=15.0, show_default=True)
@click.pass_context
@_friendly
def start(ctx: click.Context, node: str, timeout: float) -> None:
    """(Re)start NODE's charon; a gateway's config is loaded again."""
    the_lab = _attach(ctx)
    the_lab.start(node, timeout=timeout)
    click.echo(f"{node}: charon pid {the_lab.pid(node)}")


@lab.command()
@click.option("--count", type=int, default=1, show_default=True)
@click.pass_context
@_friendly
def ping(ctx: click.Context, count: int) -> None:
    """ICMP and UDP echo from 10.100.0.1 (ini) to 10.200.0.1 through the tunnel."""
    the_lab = _attach(ctx)
    icmp = the_lab.ping_through_tunnel(count=count)
    via = the_lab.udp_echo(tries=count)
    click.echo(f"icmp {'ok' if icmp else 'FAILED'}; udp echo {'via ' + via if via else 'FAILED'}")
    if not (icmp or via):
        ctx.exit(1)


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("node", type=click.Choice(NODES))
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=float, default=300.0, show_default=True)
@click.pass_context
@_friendly
def exec_(ctx: click.Context, node: str, argv: tuple[str, ...], timeout: float) -> None:
    """Run a command in NODE's network namespace: lab exec ini -- ip addr."""
    the_lab = _attach(ctx)
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", the_lab.namespace(node), *argv], timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise click.ClickException(f"timed out after {timeout:g} s") from exc
    ctx.exit(proc.returncode)


@lab.command()
@click.argument("node", type=click.Choice(NODES))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--gateways", type=click.IntRange(1, 3), default=2, show_default=True)
@click.option("--ipv6", is_flag=True)
@click.option("--auth", type=click.Choice(["psk", "cert"]), default="psk", show_default=True)
@click.option("--psk", envvar="EXTSOCK_LAB_PSK", default=None)
@click.option("--vici-socket", default=None, help="default: OUT/charon.vici")
@click.option("--log-path", default=None, help="default: OUT/charon.log")
@click.pass_context
@_friendly
def render(
    ctx: click.Context,
    node: str,
    out: Path,
    gateways: int,
    ipv6: bool,
    auth: str,
    psk: str | None,
    vici_socket: str | None,
    log_path: str | None,
) -> None:
    """Render NODE's strongswan.conf and swanctl.conf into OUT (used by the docker lab)."""
    obj = ctx.ensure_object(dict)
    extra: dict[str, Any] = {"psk": psk} if psk else {}
    config = LabConfig(
        gateways=gateways, ipv6=ipv6, auth="cert" if auth == "cert" else "psk", **extra
    )
    templates = swanctl_templates_dir(obj["swanctl_dir"])
    out.mkdir(parents=True, exist_ok=True)
    files = render_node(
        node, config, out, templates=templates, vici_socket=vici_socket, log_path=log_path
    )
    for name, text in files.items():
        (out / name).write_text(text)
        click.echo(str(out / name))


@lab.command("check-plugins")
@click.option(
    "--conf",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="the charon's strongswan.conf (its `load` list is checked)",
)
@click.option("--vici-socket", required=True, help="path of that charon's vici socket")
@click.option("--name", default="charon", show_default=True, help="who, in the message")
@_friendly
def check_plugins(conf: Path, vici_socket: str, name: str) -> None:
    """Exit 1 naming each plugin of the load list a running charon did not load, and the
    Debian package that ships it (used by the docker lab)."""
    load_list = parse_load_list(conf.read_text())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(vici_socket)
        stats = vici.Session(sock).stats()
    except OSError as exc:
        raise click.ClickException(f"{name}: vici at {vici_socket}: {exc}") from exc
    finally:
        sock.close()
    loaded = [p.decode() if isinstance(p, bytes) else str(p) for p in stats.get("plugins", [])]
    try:
        check_loaded(name, load_list, loaded)
    except PluginsMissing as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: all {len(load_list)} plugins of the load list loaded")


if __name__ == "__main__":  # pragma: no cover
    lab()
