"""`extsock run` and `extsock check-config`: the daemon itself, and a check of its config.

These import the composition root (app.py) and the config reader; the main group loads this
module only when one of the two is run (or listed by --help), never for a client command.
Exit codes: 0 ok, 1 failed, 2 usage, 3 charon unreachable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from extsock_py.app import (
    DEFAULT_COMMAND_SESSIONS,
    DEFAULT_STATE_DIR,
    MAX_COMMAND_SESSIONS,
    AppSettings,
    build_app,
)
from extsock_py.domain.errors import CharonUnreachable, ConfigError, ExtsockError

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3


config_file_option = click.option(
    "--file",
    "config_file",
    type=click.Path(path_type=Path),
    default=Path("/etc/swanctl/swanctl.conf"),
    show_default=True,
    help="swanctl.conf to read (connections, secrets, and the extsock policy).",
)


@click.command("run")
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


@click.command("check-config")
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
