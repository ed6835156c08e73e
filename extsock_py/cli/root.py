"""The `extsock` group, `run` and `check-config`; the other commands attach at import.

Exit codes: 0 ok, 1 failed, 2 usage, 3 daemon or charon unreachable.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from extsock_py import __version__
from extsock_py.adapters.logging_setup import setup_logging
from extsock_py.app import (
    DEFAULT_COMMAND_SESSIONS,
    DEFAULT_CONTROL_SOCKET,
    DEFAULT_STATE_DIR,
    DEFAULT_VICI_URI,
    MAX_COMMAND_SESSIONS,
    AppSettings,
    build_app,
)
from extsock_py.domain.errors import CharonUnreachable, ConfigError, ExtsockError

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3

# Commands that are not the product's: their modules are imported only when one of them is
# asked for (or listed by --help), never by the daemon or the operator's commands.
_LAZY_COMMANDS = {"lab": ("extsock_py.lab.cli", "lab")}


class _MainGroup(click.Group):
    """The `extsock` group: the product's commands, and the lab's loaded on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _LAZY_COMMANDS:
            module, attribute = _LAZY_COMMANDS[cmd_name]
            loaded = getattr(importlib.import_module(module), attribute)
            if not isinstance(loaded, click.Command):
                raise TypeError(f"{module}.{attribute} is not a click command")
            command = loaded
        return command


@click.group(cls=_MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-u",
    "--uri",
    default=DEFAULT_VICI_URI,
    envvar="EXTSOCK_VICI_URI",
    show_default=True,
    help="charon's VICI socket, as swanctl's --uri (unix:///path or tcp://host:port).",
)
@click.option(
    "--control-socket",
    default=DEFAULT_CONTROL_SOCKET,
    envvar="EXTSOCK_CONTROL_SOCKET",
    show_default=True,
    help="The running daemon's control socket.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format", default="human", show_default=True, type=click.Choice(["human", "json"])
)
@click.version_option(__version__, prog_name="extsock")
@click.pass_context
def main(
    ctx: click.Context, uri: str, control_socket: str, log_level: str, log_format: str
) -> None:
    """extsock keeps IPsec tunnels up across several gateways, next to strongSwan's charon.

    A connection whose remote_addrs lists two or more gateways is managed: extsock
    initiates it towards the first, and when that gateway stops answering it moves
    the tunnel to the next one, within seconds.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(
        uri=uri, control_socket=control_socket, log_level=log_level, log_format=log_format
    )
    setup_logging(log_level, log_format)


config_file_option = click.option(
    "--file",
    "config_file",
    type=click.Path(path_type=Path),
    default=Path("/etc/swanctl/swanctl.conf"),
    show_default=True,
    help="swanctl.conf to read (connections, secrets, and the extsock policy).",
)


@main.command()
@config_file_option
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path(DEFAULT_STATE_DIR),
    show_default=True,
    help="Where state and failover history survive restarts.",
)
@click.option("--no-state", is_flag=True, help="Keep no state on disk.")
@click.option("--no-control", is_flag=True, help="Open no control socket.")
@click.option(
    "--control-group",
    metavar="GROUP",
    default=None,
    help="Group of the control socket (mode 0660): its members may connect; what they may "
    "do is set by extsock.control in the config (read by default).",
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    default=None,
    help="Serve Prometheus metrics and /health on this address.",
)
@click.option(
    "--command-sessions",
    type=click.IntRange(0, MAX_COMMAND_SESSIONS),
    default=DEFAULT_COMMAND_SESSIONS,
    show_default=True,
    help="VICI sessions that run connections' commands side by side, so that a storm of "
    "failovers reaches charon as fast as it can take it (0: all on one session).",
)
@click.option(
    "--down-on-exit",
    is_flag=True,
    help="Bring managed tunnels down when stopping (default: leave them up).",
)
@click.pass_context
def run(
    ctx: click.Context,
    config_file: Path,
    state_dir: Path,
    no_state: bool,
    no_control: bool,
    control_group: str | None,
    metrics: str | None,
    command_sessions: int,
    down_on_exit: bool,
) -> None:
    """Load the config into charon and keep its tunnels up until SIGTERM or SIGINT.

    SIGHUP reloads the file; a bad file is reported and the running config kept.
    """
    settings = AppSettings(
        uri=ctx.obj["uri"],
        config_file=config_file,
        state_dir=None if no_state else state_dir,
        control_socket=None if no_control else Path(ctx.obj["control_socket"]),
        metrics=metrics,
        down_on_exit=down_on_exit,
        control_group=control_group,
        command_sessions=command_sessions,
    )
    app = build_app(settings)
    app.loop.install_signal_handlers()
    try:
        app.run()
    except CharonUnreachable as exc:
        click.echo(f"extsock: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    except ExtsockError as exc:  # a ConfigError among them
        click.echo(f"extsock: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except OSError as exc:  # a surface that cannot open (e.g. what a sandbox forbids)
        click.echo(f"extsock: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILED)


@main.command("check-config")
@config_file_option
def check_config(config_file: Path) -> None:
    """Validate a swanctl.conf and show which connections extsock would manage."""
    from extsock_py.adapters.config_reader import read_desired_config
    from extsock_py.adapters.resolver import SystemResolver
    from extsock_py.domain.config import split_managed

    try:
        desired = read_desired_config(config_file)
    except ConfigError as exc:
        click.echo(f"extsock: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    managed, plain = split_managed(desired, SystemResolver().resolve)
    for name, profile in managed.items():
        click.echo(f"{name}: managed, gateways {', '.join(profile.gateways)}")
        for verdict in profile.not_gateways:
            click.echo(f"  ignored '{verdict.address}': {verdict.reason}")
    for name in plain:
        click.echo(f"{name}: loaded as is (fewer than two gateways)")
    creds = desired.credentials
    decoded = sum(k.type.isupper() for k in creds.keys)
    click.echo(
        f"credentials: {len(creds.certificates)} certificates, {len(creds.keys)} private keys "
        f"({decoded} decrypted or decoded as swanctl does), {len(creds.shared)} shared secrets; "
        f"{len(desired.authorities)} authorities, {len(desired.pools)} pools"
    )


@main.command("xfrmi-updown")
def xfrmi_updown() -> None:
    """Print the path of the updown script of route-based clones (clone_if_id_base)."""
    from importlib.resources import files

    click.echo(str(files("extsock_py") / "data" / "xfrmi-updown.sh"))


def _attach_subcommands() -> None:
    from extsock_py.cli.failover import COMMANDS
    from extsock_py.cli.swanctl import attach_swanctl_commands

    attach_swanctl_commands(main)
    for command in COMMANDS:
        main.add_command(command)


_attach_subcommands()
