"""The `extsock` group: its options, and a table of its commands, each imported on demand.

A command's module is imported only when that command is run, completed, or listed by
--help, so that a client command (`failover status`, `watch`, `version`) loads what it uses
and not the daemon (app.py, the config reader, the control server): tests/unit/
test_cli_imports.py checks it.
Exit codes: 0 ok, 1 failed, 2 usage, 3 daemon or charon unreachable.
"""

from __future__ import annotations

import importlib
from typing import Final

import click

from extsock_py import __version__
from extsock_py.adapters.control.wire import DEFAULT_SOCKET
from extsock_py.adapters.vici.transport import DEFAULT_URI

_DAEMON = "extsock_py.cli.daemon"
_FAILOVER = "extsock_py.cli.failover"
_SWANCTL = "extsock_py.cli.swanctl"

PRODUCT_COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "run": (_DAEMON, "run"),
    "check-config": (_DAEMON, "check_config"),
    "failover": (_FAILOVER, "failover"),
    "watch": (_FAILOVER, "watch"),
    "reload": (_FAILOVER, "reload"),
    "health": (_FAILOVER, "health"),
    "list-sas": (_SWANCTL, "list_sas"),
    "list-conns": (_SWANCTL, "list_conns"),
    "load-conns": (_SWANCTL, "load_conns"),
    "load-creds": (_SWANCTL, "load_creds"),
    "load-all": (_SWANCTL, "load_all"),
    "initiate": (_SWANCTL, "initiate"),
    "terminate": (_SWANCTL, "terminate"),
    "stats": (_SWANCTL, "stats"),
    "version": (_SWANCTL, "version"),
    "xfrmi-updown": ("extsock_py.cli.xfrmi", "xfrmi_updown"),
}
"""The product's commands: name -> (module, attribute)."""

TOOL_COMMANDS: Final[dict[str, tuple[str, str]]] = {"lab": ("extsock_py.lab.cli", "lab")}
"""Commands that are not the product's (left out of extsock(8)), loaded the same way."""

QUIET_COMMANDS: Final = frozenset({"failover", "watch", "reload", "health"})
"""The control socket's clients: nothing in them logs, so logging (~8 ms of CPU to import) is
not set up for them; every other command gets --log-level and --log-format."""


def load_command(name: str) -> click.Command | None:
    """The command `name` of either table, imported now; None if there is no such command."""
    where = PRODUCT_COMMANDS.get(name) or TOOL_COMMANDS.get(name)
    if where is None:
        return None
    module, attribute = where
    loaded = getattr(importlib.import_module(module), attribute)
    if not isinstance(loaded, click.Command):
        raise TypeError(f"{module}.{attribute} is not a click command")
    return loaded


class _MainGroup(click.Group):
    """The `extsock` group: commands added to it, and those of the tables, on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *PRODUCT_COMMANDS, *TOOL_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or load_command(cmd_name)


@click.group(cls=_MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-u",
    "--uri",
    default=DEFAULT_URI,
    envvar="EXTSOCK_VICI_URI",
    show_default=True,
    help="charon's VICI socket, as swanctl's --uri (unix:///path or tcp://host:port).",
)
@click.option(
    "--control-socket",
    default=DEFAULT_SOCKET,
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
    if ctx.invoked_subcommand not in QUIET_COMMANDS:
        from extsock_py.adapters.logging_setup import setup_logging

        setup_logging(log_level, log_format)
