"""swanctl's commands in the `extsock` CLI, talking to charon directly over VICI.

These do not go through the extsock daemon: they work whether or not it runs, exactly as
swanctl would, on the VICI socket named by the main group's `-u/--uri`.

Exit codes: 0 ok, 1 charon refused or failed (or a bad swanctl.conf), 2 usage,
3 charon unreachable. Errors go to stderr, one line each, saying what to do.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.shell_completion import CompletionItem

from extsock_py import __version__
from extsock_py.adapters.vici.commands import ViciCharon
from extsock_py.adapters.vici.transport import DEFAULT_URI, parse_uri
from extsock_py.cli import render
from extsock_py.domain.errors import (
    CharonCommandFailed,
    CharonError,
    CharonUnreachable,
    ConfigError,
    ExtsockError,
)

if TYPE_CHECKING:  # the loading commands import these when they run (the swanctl.conf reader
    # and its crypto take longer to import than a listing takes to run)
    from extsock_py.adapters.swanctl.loader import LoadedConfig
    from extsock_py.usecases.swanctl_sync import Outcome, SyncReport

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3

DEFAULT_SWANCTL_CONF = Path("/etc/swanctl/swanctl.conf")
LIST_TIMEOUT = 30.0
"""Seconds a listing or load command may take before charon counts as unreachable."""
GRACE = 10.0
"""Seconds added to --timeout before extsock stops waiting for charon's own answer."""

# -- plumbing --------------------------------------------------------------------------------


def _swanctl_file_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--file`, the swanctl.conf a loading command reads (swanctl's default path)."""
    return click.option(
        "--file",
        "config_file",
        type=_FILE,
        default=DEFAULT_SWANCTL_CONF,
        show_default=True,
        help=help_text,
    )


def _uri(ctx: click.Context) -> str:
    obj = ctx.find_root().obj
    uri = obj.get("uri") if isinstance(obj, dict) else None
    return uri if isinstance(uri, str) else DEFAULT_URI


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"extsock: {message}", err=True)
    raise click.exceptions.Exit(code)


def _unreachable(uri: str, exc: CharonUnreachable, connected: bool) -> str:
    cause = exc.__cause__
    where = "set -u/--uri or EXTSOCK_VICI_URI"
    if not connected and isinstance(cause, OSError):
        why = cause.strerror or str(cause) or type(cause).__name__
        if isinstance(cause, PermissionError):
            todo = "run as root, or give this user access to the socket"
        elif isinstance(cause, TimeoutError):
            todo = "charon did not accept in time; is it overloaded or hung?"
        else:
            todo = "is charon running with the vici plugin?"
        return f"cannot reach charon at {uri} ({why}): {todo} ({where})"
    if not connected:
        return f"cannot reach charon at {uri}: {exc} ({where})"
    what = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    return f"lost charon at {uri} during the command ({what}): check that charon still runs"


@contextlib.contextmanager
def _charon(
    ctx: click.Context,
    *,
    timeout: float | None = LIST_TIMEOUT,
    hint: str = "",
) -> Iterator[ViciCharon]:
    """A connected ViciCharon; charon's failures become one stderr line and the exit code."""
    uri = _uri(ctx)
    try:
        parse_uri(uri)
    except CharonUnreachable as exc:
        raise click.UsageError(f"{exc} (option -u/--uri)", ctx) from None
    charon = ViciCharon(uri, command_timeout=timeout)
    connected = False
    try:
        charon.connect()
        connected = True
        yield charon
    except CharonUnreachable as exc:
        _fail(EXIT_UNREACHABLE, _unreachable(uri, exc, connected))
    except CharonCommandFailed as exc:  # `<command> failed: <what charon said>`
        _fail(EXIT_FAILED, f"{exc.command} failed: {exc.errmsg}" + (f"; {hint}" if hint else ""))
    except CharonError as exc:
        _fail(EXIT_FAILED, str(exc) + (f"; {hint}" if hint else ""))
    finally:
        charon.close()


def _read_conf(path: Path) -> LoadedConfig:
    from extsock_py.adapters.swanctl import read_swanctl_conf

    try:
        return read_swanctl_conf(path)
    except ConfigError as exc:
        _fail(EXIT_FAILED, f"{exc} (fix the file, then run the command again)")


def _echo_json(document: render.Json) -> None:
    click.echo(render.dumps(document))


def _echo_text(text: str) -> None:
    if text:
        click.echo(text)


def _echo(document: render.Json, as_json: bool, as_text: Callable[[render.Json], str]) -> None:
    """A listing's document as JSON, or as text close to swanctl's."""
    if as_json:
        _echo_json(document)
    else:
        _echo_text(as_text(document))


def _echo_log(event: str, message: dict[str, Any]) -> None:
    click.echo(render.format_log(message))


def _millis(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, math.ceil(seconds * 1000))


def _wait(seconds: float | None) -> float | None:
    """How long to wait for charon's answer to a command carrying `timeout`."""
    return None if seconds is None else seconds + GRACE


# -- shell completion ------------------------------------------------------------------------


def _completion_conns(ctx: click.Context) -> list[dict[str, Any]]:
    uri = ctx.find_root().params.get("uri") or DEFAULT_URI
    try:
        with ViciCharon(str(uri), connect_timeout=0.5, command_timeout=2.0) as charon:
            return charon.list_conns_raw()
    except ExtsockError:
        return []


def complete_ike(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Connection names charon has loaded, for --ike."""
    names = [name for event in _completion_conns(ctx) for name, _ in render.sections(event)]
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_child(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """CHILD_SA config names charon has loaded, for --child."""
    names: list[str] = []
    for event in _completion_conns(ctx):
        for _, body in render.sections(event):
            children = body.get("children")
            if isinstance(children, Mapping):
                names.extend(name for name, _ in render.sections(children))
    unique = dict.fromkeys(names)
    return [CompletionItem(n) for n in unique if n.startswith(incomplete)]


_JSON_HELP = "Print a JSON document (schema: docs/json-output.md) instead of text."
_ID = click.IntRange(min=1)
_SECONDS = click.FloatRange(min=0, min_open=True)
_LOGLEVEL = click.IntRange(min=-1, max=4)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

# -- listings --------------------------------------------------------------------------------


@click.command("list-sas")
@click.option("--ike", metavar="NAME", shell_complete=complete_ike, help="Only IKE_SAs of NAME.")
@click.option("--ike-id", type=_ID, metavar="N", help="Only the IKE_SA with unique id N.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.pass_context
def list_sas(ctx: click.Context, ike: str | None, ike_id: int | None, as_json: bool) -> None:
    """List charon's IKE_SAs and their CHILD_SAs, as `swanctl --list-sas`.

    \b
    home@10.99.1.2: #3, ESTABLISHED, IKEv2, 84b0016b5660a18a_i* 1b2c3d4e5f607182_r
      local  '10.99.0.1' @ 10.99.0.1[500]
      remote '10.99.1.2' @ 10.99.1.2[500]
      ...
    """
    with _charon(ctx) as charon:
        events = charon.list_sas_raw(ike=ike, ike_id=ike_id)
    document = render.list_sas_json(events)
    _echo(document, as_json, render.format_list_sas)


@click.command("list-conns")
@click.option(
    "--ike", metavar="NAME", shell_complete=complete_ike, help="Only the connection NAME."
)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.pass_context
def list_conns(ctx: click.Context, ike: str | None, as_json: bool) -> None:
    """List the connections loaded in charon, as `swanctl --list-conns`.

    Connections the extsock daemon manages show as its clones, named CONN@GATEWAY.
    """
    with _charon(ctx) as charon:
        events = charon.list_conns_raw(ike=ike)
    document = render.list_conns_json(events)
    _echo(document, as_json, render.format_list_conns)


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Show charon's uptime, worker threads, job queues, IKE_SA counts and plugins."""
    with _charon(ctx) as charon:
        response = charon.stats()
    document = render.stats_json(response)
    _echo(document, as_json, render.format_stats)


@click.command("version")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.pass_context
def version(ctx: click.Context, as_json: bool) -> None:
    """Show extsock's version and the version of the charon it talks to.

    Without charon, the text form still prints extsock's version before failing.
    """
    if not as_json:
        click.echo(f"extsock {__version__}")
    with _charon(ctx) as charon:
        response = charon.request("version")
    document = render.version_json(response, __version__)
    if as_json:
        _echo_json(document)
    else:
        click.echo(render.charon_version_line(document))


# -- loading ---------------------------------------------------------------------------------


def _print_outcome(outcome: Outcome) -> None:
    """One line per request, worded as swanctl words it; failures to stderr."""
    kind, name = outcome.kind, outcome.name
    if outcome.action == "unload":
        if not outcome.ok:
            what = {"key": "key", "shared": "secret"}.get(kind, kind)
            click.echo(f"unloading {what} '{name}' failed: {_said(outcome)}", err=True)
        return
    if kind == "certificate":
        what, done = f"'{name}'", f"loaded certificate from '{name}'"
    elif kind == "key":
        key_type = "private" if outcome.detail == "any" else outcome.detail
        what, done = f"'{name}'", f"loaded {key_type} key from '{name}'"
    elif kind == "shared":
        what = f"{outcome.detail} secret '{name}'"
        done = f"loaded {what}"
    else:
        what = f"{kind} '{name}'"
        done = f"loaded {what}"
    if outcome.ok:
        click.echo(done)
    else:
        click.echo(f"loading {what} failed: {_said(outcome)}", err=True)


def _said(outcome: Outcome) -> str:
    """What charon said when it refused, else extsock's description of the failure."""
    return outcome.errmsg or outcome.error or "charon gave no reason"


_CRED_KINDS = ("certificate", "key", "shared")


def _summary(report: SyncReport, kinds: tuple[str, ...], noun: str, found: int) -> str | None:
    """swanctl's closing line of a stage; None when everything loaded."""
    loaded = report.count(kinds)
    unloaded = report.count(kinds, action="unload")
    failed = report.count(kinds, ok=False)
    if found == 0 and noun != "credentials":
        click.echo(f"no {noun} found, {unloaded} unloaded")
        return None
    if failed == 0:
        click.echo(f"successfully loaded {loaded} {noun}, {unloaded} unloaded")
        return None
    return (
        f"loaded {loaded} of {found} {noun}, {found - loaded} failed to load, {unloaded} unloaded"
    )


def _keep_clones(ctx_conf: LoadedConfig) -> Callable[[str], bool]:
    from extsock_py.domain.profile import parse_clone_name

    def keep(name: str) -> bool:
        clone = parse_clone_name(name)
        if clone is not None and clone.connection in ctx_conf.connections:
            click.echo(f"kept connection '{name}' (extsock daemon's, for '{clone.connection}')")
            return True
        return False

    return keep


def _load(
    ctx: click.Context,
    config_file: Path,
    stages: tuple[str, ...],
    command: str,
    clear: bool = False,
) -> None:
    """Run the stages of `swanctl --load-all` (in its order) through the one SwanctlSync.

    Each stage's closing line follows its requests; as load_all.c, a stage of authorities
    or pools that failed ends the run (credentials that failed do not).
    """
    from extsock_py.usecases.swanctl_sync import SwanctlSync, SyncTarget

    conf = _read_conf(config_file)
    stage_targets = {
        "creds": SyncTarget(credentials=conf.credentials, clear=clear),
        "authorities": SyncTarget(authorities=conf.authorities),
        "pools": SyncTarget(pools=conf.pools),
        "conns": SyncTarget(connections=conf.connections, keep_connection=_keep_clones(conf)),
    }
    found = {
        "creds": (_CRED_KINDS, "credentials", len(conf.credentials)),
        "authorities": (("authority",), "authorities", len(conf.authorities)),
        "pools": (("pool",), "pools", len(conf.pools)),
        "conns": (("connection",), "connections", len(conf.connections)),
    }
    problems: dict[str, str] = {}
    with _charon(ctx) as charon:
        sync = SwanctlSync(charon, _print_outcome)
        for stage in stages:
            report = sync.run(stage_targets[stage])
            if (problem := _summary(report, *found[stage])) is not None:
                problems[found[stage][1]] = problem
                if stage in ("authorities", "pools"):
                    break
    if problems:
        what = " and ".join(problems)
        _fail(
            EXIT_FAILED,
            "; ".join(problems.values()) + f"; fix the {what} named above and run {command} again",
        )


@click.command("load-conns")
@_swanctl_file_option("swanctl.conf whose connections to load.")
@click.pass_context
def load_conns(ctx: click.Context, config_file: Path) -> None:
    """(Re-)load every connection of a swanctl.conf into charon, as `swanctl --load-conns`.

    Each connection is sent as written (lists split at commas, certs as the files' bytes);
    connections charon has that the file no longer has are unloaded, except the clones
    (CONN@GATEWAY) the extsock daemon made of connections still in the file. While the
    daemon runs, prefer `extsock reload`: it loads managed connections one gateway at a time.
    """
    _load(ctx, config_file, ("conns",), "load-conns")


_CLEAR_HELP = "Clear every loaded credential first (certificates too), as swanctl --clear."


@click.command("load-creds")
@_swanctl_file_option("swanctl.conf whose secrets (and the credentials beside it) to load.")
@click.option("--clear", is_flag=True, help=_CLEAR_HELP)
@click.pass_context
def load_creds(ctx: click.Context, config_file: Path, clear: bool) -> None:
    """Load credentials into charon, as `swanctl --load-creds --noprompt`.

    Certificates from x509/, x509ca/, x509ocsp/, x509aa/, x509ac/, x509crl/, pubkey/;
    private keys from private/, rsa/, ecdsa/, pkcs8/ (decrypted with a passphrase from
    `secrets`, as swanctl does); PKCS#12 containers from pkcs12/ with their passphrase;
    shared secrets (ike, eap, xauth, ntlm, ppk) from `secrets`. Keys and shared secrets
    charon holds that the file no longer has are unloaded. No secret is ever printed.
    """
    _load(ctx, config_file, ("creds",), "load-creds", clear)


@click.command("load-all")
@_swanctl_file_option("swanctl.conf to load, with the credential folders beside it.")
@click.option("--clear", is_flag=True, help=_CLEAR_HELP)
@click.pass_context
def load_all(ctx: click.Context, config_file: Path, clear: bool) -> None:
    """Load credentials, authorities, pools and connections, as `swanctl --load-all --noprompt`.

    The same requests as swanctl, in its order; what charon holds that the file no longer
    has is unloaded (the extsock daemon's clones of connections in the file are kept).
    """
    _load(ctx, config_file, ("creds", "authorities", "pools", "conns"), "load-all", clear)


# -- control ---------------------------------------------------------------------------------

_TIMEOUT_HELP = (
    "Seconds charon waits for completion before detaching (the command then continues in "
    "charon). Default: wait until done."
)
_LOGLEVEL_HELP = "Verbosity of charon's log lines shown while waiting (-1..4)."


@click.command("initiate")
@click.option(
    "--child", metavar="NAME", shell_complete=complete_child, help="The CHILD_SA config to start."
)
@click.option(
    "--ike",
    metavar="NAME",
    shell_complete=complete_ike,
    help="The connection NAME (alone: its IKE_SA only; with --child: the child's parent).",
)
@click.option("--timeout", type=_SECONDS, metavar="SECONDS", help=_TIMEOUT_HELP)
@click.option(
    "--loglevel", type=_LOGLEVEL, default=1, metavar="LEVEL", show_default=True, help=_LOGLEVEL_HELP
)
@click.pass_context
def initiate(
    ctx: click.Context,
    child: str | None,
    ike: str | None,
    timeout: float | None,
    loglevel: int,
) -> None:
    """Start a connection in charon, as `swanctl --initiate`, showing charon's log meanwhile.

    This bypasses the extsock daemon; to move a connection it manages to another gateway,
    use `extsock failover switch` instead.
    """
    if child is None and ike is None:
        raise click.UsageError("give --child NAME (and optionally --ike NAME), or --ike NAME", ctx)
    message: dict[str, Any] = {}
    if child is not None:
        message["child"] = child
    if ike is not None:
        message["ike"] = ike
    if (millis := _millis(timeout)) is not None:
        message["timeout"] = millis
    message["loglevel"] = loglevel
    hint = "check the names with 'extsock list-conns' and charon's log lines above"
    with _charon(ctx, timeout=_wait(timeout), hint=hint) as charon:
        charon.streamed("initiate", "control-log", message, on_event=_echo_log)
    click.echo("initiate completed successfully")


@click.command("terminate")
@click.option(
    "--ike", metavar="NAME", shell_complete=complete_ike, help="IKE_SAs of connection NAME."
)
@click.option("--ike-id", type=_ID, metavar="N", help="The IKE_SA with unique id N.")
@click.option(
    "--child", metavar="NAME", shell_complete=complete_child, help="CHILD_SAs of config NAME."
)
@click.option("--child-id", type=_ID, metavar="N", help="The CHILD_SA with unique id N.")
@click.option(
    "--force",
    is_flag=True,
    help="Delete the IKE_SA without waiting for the peer's answer (unless --timeout is set).",
)
@click.option("--timeout", type=_SECONDS, metavar="SECONDS", help=_TIMEOUT_HELP)
@click.option(
    "--loglevel", type=_LOGLEVEL, default=1, metavar="LEVEL", show_default=True, help=_LOGLEVEL_HELP
)
@click.pass_context
def terminate(
    ctx: click.Context,
    ike: str | None,
    ike_id: int | None,
    child: str | None,
    child_id: int | None,
    force: bool,
    timeout: float | None,
    loglevel: int,
) -> None:
    """Close SAs in charon, as `swanctl --terminate`; give exactly one selector.

    This bypasses the extsock daemon, which may bring a connection it manages back up.
    """
    selectors = {"ike": ike, "ike-id": ike_id, "child": child, "child-id": child_id}
    chosen = {k: v for k, v in selectors.items() if v is not None}
    if len(chosen) != 1:
        raise click.UsageError(
            "give exactly one of --ike NAME, --ike-id N, --child NAME, --child-id N "
            "('extsock list-sas' shows them)",
            ctx,
        )
    message: dict[str, Any] = dict(chosen)
    if force:
        message["force"] = True
    if (millis := _millis(timeout)) is not None:
        message["timeout"] = millis
    message["loglevel"] = loglevel
    hint = "'extsock list-sas' shows the SAs there are"
    with _charon(ctx, timeout=_wait(timeout), hint=hint) as charon:
        charon.streamed("terminate", "control-log", message, on_event=_echo_log)
    click.echo("terminate completed successfully")


COMMANDS: tuple[click.Command, ...] = (
    list_sas,
    list_conns,
    load_conns,
    load_creds,
    load_all,
    initiate,
    terminate,
    stats,
    version,
)


def attach_swanctl_commands(group: click.Group) -> None:
    """Add the swanctl-like commands to `group` (the main `extsock` group); idempotent."""
    for command in COMMANDS:
        group.add_command(command)
