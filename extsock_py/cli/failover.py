"""Commands that talk to the running daemon over its control socket.

The main group attaches them (`for c in COMMANDS: main.add_command(c)`) and fills
`ctx.obj["control_socket"]` from `--control-socket` / `EXTSOCK_CONTROL_SOCKET`. Exit
codes: 0 ok, 1 the daemon refused or the check failed, 2 usage, 3 daemon unreachable,
4 the daemon is up but refused this connection (too many clients, idle), 5 not permitted
(this uid lacks the role the command needs).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from extsock_py.adapters.control.client import (
    ControlClient,
    ControlError,
    DaemonRefused,
    DaemonUnreachable,
    NotPermitted,
)
from extsock_py.adapters.control.wire import DEFAULT_SOCKET, EVENT_KINDS

ENV_SOCKET = "EXTSOCK_CONTROL_SOCKET"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_REFUSED, EXIT_NOT_PERMITTED = 4, 5

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_AGO_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --- plumbing -----------------------------------------------------------------------------


def socket_path(ctx: click.Context) -> str:
    obj = ctx.find_root().obj
    if isinstance(obj, Mapping) and obj.get("control_socket"):
        return str(obj["control_socket"])
    return os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"extsock: {message}", err=True)
    raise SystemExit(code)


@contextmanager
def _client(ctx: click.Context, timeout: float | None = 15.0) -> Iterator[ControlClient]:
    """A connected client; daemon errors become one stderr line and the exit code."""
    client = ControlClient(socket_path(ctx), timeout=timeout)
    try:
        client.connect()
        yield client
    except DaemonUnreachable as exc:
        _fail(str(exc), EXIT_UNREACHABLE)
    except DaemonRefused as exc:
        _fail(f"the daemon is running but refused this connection: {exc}", EXIT_REFUSED)
    except NotPermitted as exc:
        _fail(str(exc), EXIT_NOT_PERMITTED)
    except ControlError as exc:
        _fail(str(exc), EXIT_FAILED)
    finally:
        client.close()


def _call(ctx: click.Context, cmd: str, **fields: Any) -> Any:
    with _client(ctx) as client:
        return client.request(cmd, **fields)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [headers, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def _clock(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    return f"{int(value // 60)}m{int(value % 60):02d}s"


def parse_since(text: str, now: float | None = None) -> float:
    """`1h`, `30m`, `2d`, `90s`, `1w` ago, or an ISO 8601 time (local when no offset)."""
    match = _AGO.match(text)
    base = now if now is not None else datetime.now().timestamp()
    if match:
        return base - float(match.group(1)) * _AGO_UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected a time span such as 30m, 1h, 2d, or an ISO time such as "
            "2024-05-01T12:00"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


# --- status lines -------------------------------------------------------------------------


def _state_cell(row: Mapping[str, Any]) -> str:
    phase = str(row["phase"])
    if row.get("last_phase"):
        phase = f"{phase} (charon down; was {row['last_phase']})"
    return f"{phase} (held)" if row.get("held") else phase


def _ike_cell(row: Mapping[str, Any]) -> str:
    state = str(row.get("ike_state") or "NONE")
    return f"{state} #{row['ike_id']}" if row.get("ike_id") is not None else state


def _gateways_cell(row: Mapping[str, Any]) -> str:
    """The gateways in order: `*` marks the active one, `(standby)` the hot standby's
    (`(standby connecting)`, `(standby backoff)` while it is not up), `(draining)` the one
    a switch left while its old tunnel drains."""
    active = row.get("active_gateway")
    hot = row.get("hot_standby")
    hot = hot if isinstance(hot, Mapping) else {}
    drain = row.get("draining")
    draining = drain.get("gateway") if isinstance(drain, Mapping) else None

    def cell(g: object) -> str:
        if g == active:
            return f"{g}*"
        if g == draining:
            return f"{g}(draining)"
        if g == hot.get("gateway"):
            phase = hot.get("phase")
            return f"{g}(standby)" if phase == "up" else f"{g}(standby {phase})"
        return str(g)

    return ",".join(cell(g) for g in row.get("gateways", []))


def _next_cell(row: Mapping[str, Any]) -> str:
    action = row.get("next_action")
    if not action:
        return "-"
    due = row.get("next_action_in")
    return f"{action} in {_seconds(due)}" if due is not None else str(action)


def status_table(result: Mapping[str, Any]) -> str:
    rows = [
        [
            str(r["connection"]),
            _state_cell(r),
            str(r.get("target_gateway") or "-"),
            _ike_cell(r),
            _gateways_cell(r),
            str(r.get("failures_total", 0)),
            _next_cell(r),
        ]
        for r in result.get("connections", [])
    ]
    charon = "reachable" if result.get("charon_reachable") else "UNREACHABLE"
    release = result.get("charon")
    if isinstance(release, Mapping) and release.get("dialect"):
        how = "alerts" if release.get("alerts") else "log lines"
        charon += (
            f" (strongSwan {release.get('version') or '?'}, dialect {release['dialect']}, {how})"
        )
    head = f"charon: {charon}; {len(rows)} managed connection{'s' if len(rows) != 1 else ''}"
    if not rows:
        return head
    headers = ["CONNECTION", "STATE", "GATEWAY", "IKE", "GATEWAYS", "FAILURES", "NEXT"]
    return head + "\n" + _table(headers, rows)


def _draining(drain: Mapping[str, Any]) -> str:
    """`draining 10.99.1.2 until 04:12:03 UTC (0.7s)`: the old tunnel of a switch."""
    text = f"draining {drain['gateway']}"
    until = drain.get("until")
    if isinstance(until, (int, float)):
        text += f" until {datetime.fromtimestamp(until, UTC):%H:%M:%S} UTC"
    left = drain.get("in")
    if isinstance(left, (int, float)):
        text += f" ({_seconds(left)})"
    return text


def _one_line(row: Mapping[str, Any], changed: bool | None = None) -> str:
    text = f"{row['connection']}: {_state_cell(row)}"
    if row.get("target_gateway"):
        text += f" on {row['target_gateway']}"
    hot = row.get("hot_standby")
    if isinstance(hot, Mapping) and hot.get("gateway"):
        text += f" (standby {hot['gateway']}: {hot.get('phase')})"
    drain = row.get("draining")
    if isinstance(drain, Mapping) and drain.get("gateway"):
        text += f", {_draining(drain)}"
    if row.get("standby_gateway"):
        text += f", switching to {row['standby_gateway']}"
    elif row.get("next_action"):
        text += f"; next: {_next_cell(row)}"
    if changed is False:
        text += " (no change)"
    return text


def describe_event(event: Mapping[str, Any]) -> str:
    """One human line for a protocol event."""
    kind = str(event.get("event"))
    conn = event.get("connection")
    prefix = f"{_clock(event.get('time'))} "
    reason = f" ({event['reason']})" if event.get("reason") else ""
    text: str
    match kind:
        case "ike-state":
            ike = f" #{event['ike_id']}" if event.get("ike_id") is not None else ""
            gw = event.get("gateway")
            text = f"{conn}: IKE_SA{ike} to {gw}: {event.get('old')} -> {event.get('new')}"
        case "tunnel-up":
            text = f"{conn}: tunnel up via {event.get('gateway')}{reason}"
        case "tunnel-down":
            text = f"{conn}: tunnel down on {event.get('gateway')}{reason}"
        case "failover-started":
            text = f"{conn}: failing over {event.get('from')} -> {event.get('to')}{reason}"
        case "failover":
            took = event.get("duration")
            took_text = f" in {took:.3f}s" if isinstance(took, int | float) else ""
            text = f"{conn}: failover {event.get('from')} -> {event.get('to')}{reason}{took_text}"
        case "redirected":
            took = event.get("duration")
            took_text = f" in {took:.3f}s" if isinstance(took, int | float) else ""
            text = f"{conn}: redirected {event.get('from')} -> {event.get('to')}{took_text}"
        case "switch-failed":
            text = f"{conn}: switch {event.get('from')} -> {event.get('to')} failed{reason}"
        case "standby-up":
            text = f"{conn}: hot standby up towards {event.get('gateway')}"
        case "standby-down":
            text = f"{conn}: hot standby down on {event.get('gateway')}{reason}"
        case "gave-up":
            text = f"{conn}: gave up on the last gateway {event.get('gateway')}{reason}"
        case "held" | "released":
            text = f"{conn}: {kind} by the operator (on {event.get('gateway')})"
        case "charon-lost":
            text = f"charon lost{reason}: waiting for it to come back"
        case "charon-back":
            text = "charon back: connections reloaded"
        case "reloaded":
            text = f"config reloaded: managed {', '.join(event.get('managed', [])) or 'none'}"
        case "reload-failed":
            text = f"reload refused: {event.get('error')}"
        case "missed":
            text = f"missed {event.get('count')} events: this watcher read too slowly"
        case _:
            text = json.dumps(dict(event), sort_keys=True)
    return prefix + text


# --- the failover group -------------------------------------------------------------------


@click.group("failover")
def failover() -> None:
    """Inspect and steer the managed connections of the running daemon."""


@failover.command("status")
@click.argument("conn", required=False)
@click.option("--json", "as_json", is_flag=True, help="The daemon's answer as JSON.")
@click.pass_context
def status_cmd(ctx: click.Context, conn: str | None, as_json: bool) -> None:
    """Gateways, state, IKE state, failures and next action of each managed connection."""
    result = _call(ctx, "status", conn=conn)
    if as_json:
        _print_json(result)
    else:
        click.echo(status_table(result))


@failover.command("history")
@click.argument("conn", required=False)
@click.option("--since", help="Only records newer than this: 30m, 1h, 2d, or an ISO time.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The records as JSON.")
@click.pass_context
def history_cmd(
    ctx: click.Context, conn: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """Past failovers, give-ups and failed switches (newest last)."""
    since_epoch = parse_since(since) if since else None
    result = _call(ctx, "history", conn=conn, since=since_epoch, limit=limit)
    if as_json:
        _print_json(result)
        return
    records = result.get("records", [])
    if not records:
        click.echo("no failover recorded" + (f" since {since}" if since else ""))
        return
    rows = [
        [
            _clock(r.get("time")),
            str(r.get("connection")),
            str(r.get("from") or "-"),
            str(r.get("to") or "-"),
            str(r.get("reason") or "-"),
            str(r.get("result") or "-"),
            _seconds(r.get("duration")),
        ]
        for r in records
    ]
    headers = ["TIME", "CONNECTION", "FROM", "TO", "REASON", "RESULT", "DURATION"]
    click.echo(_table(headers, rows))


def _operator_command(name: str, doc: str) -> click.Command:
    @click.argument("conn")
    @click.option("--json", "as_json", is_flag=True, help="The daemon's answer as JSON.")
    @click.pass_context
    def command(ctx: click.Context, conn: str, as_json: bool) -> None:
        result = _call(ctx, name, conn=conn)
        if as_json:
            _print_json(result)
        else:
            click.echo(_one_line(result["connection"], result.get("changed")))

    command.__doc__ = doc
    return failover.command(name)(command)


hold_cmd = _operator_command("hold", "Pause automatic failover on CONN; its tunnel is kept.")
release_cmd = _operator_command("release", "Resume automatic failover on CONN.")
retry_cmd = _operator_command("retry", "Try CONN again now, from its primary gateway.")
terminate_cmd = _operator_command(
    "terminate", "Bring CONN down and keep it down (not counted as a failure)."
)


@failover.command("switch")
@click.argument("conn")
@click.option("--to", "to", metavar="ADDR", help="The gateway to move to (default: the next).")
@click.option("--json", "as_json", is_flag=True, help="The daemon's answer as JSON.")
@click.pass_context
def switch_cmd(ctx: click.Context, conn: str, to: str | None, as_json: bool) -> None:
    """Move CONN to another gateway now (make-before-break when it is up)."""
    result = _call(ctx, "switch", conn=conn, to=to)
    if as_json:
        _print_json(result)
    else:
        click.echo(_one_line(result["connection"], result.get("changed")))


def _read_json(path: str, what: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return json.loads(text)
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint=what) from None
    except ValueError as exc:
        raise click.BadParameter(f"{path}: not valid JSON: {exc}", param_hint=what) from None


@failover.command("load")
@click.argument("conn")
@click.argument("body_file", metavar="BODY.json")
@click.option("--policy", "policy_file", metavar="POLICY.json", help="Failover policy (JSON).")
@click.option("--json", "as_json", is_flag=True, help="The daemon's answer as JSON.")
@click.pass_context
def load_cmd(
    ctx: click.Context, conn: str, body_file: str, policy_file: str | None, as_json: bool
) -> None:
    """Have the daemon manage CONN from a load-conn body in JSON ('-' reads stdin)."""
    body = _read_json(body_file, "BODY.json")
    policy = _read_json(policy_file, "--policy") if policy_file else None
    if not isinstance(body, dict):
        raise click.BadParameter("the body must be a JSON object", param_hint="BODY.json")
    result = _call(ctx, "load", conn=conn, body=body, policy=policy)
    if as_json:
        _print_json(result)
        return
    click.echo(_one_line(result["connection"]))
    for note in result.get("notes", []):
        click.echo(f"note: {note}")


@failover.command("unload")
@click.argument("conn")
@click.pass_context
def unload_cmd(ctx: click.Context, conn: str) -> None:
    """Stop managing CONN: its tunnel goes down and its clone is unloaded."""
    result = _call(ctx, "unload", conn=conn)
    click.echo(f"{conn}: unloaded")
    for note in result.get("notes", []):
        click.echo(f"note: {note}")


# --- top-level commands -------------------------------------------------------------------


@click.command("watch")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--event",
    "kinds",
    multiple=True,
    type=click.Choice(sorted(EVENT_KINDS)),
    help="Only these kinds of event (repeatable).",
)
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.pass_context
def watch(ctx: click.Context, as_json: bool, kinds: tuple[str, ...], count: int | None) -> None:
    """Print the daemon's events as they happen (until interrupted)."""
    emit: Callable[[Mapping[str, Any]], str] = (
        (lambda e: json.dumps(dict(e), sort_keys=True)) if as_json else describe_event
    )
    seen = 0
    with _client(ctx, timeout=None) as client:
        client.subscribe(list(kinds) if kinds else None)
        try:
            for event in client.events():
                click.echo(emit(event))
                seen += 1
                if count is not None and seen >= count:
                    return
        except KeyboardInterrupt:
            return


@click.command("reload")
@click.option("--json", "as_json", is_flag=True, help="The daemon's answer as JSON.")
@click.pass_context
def reload(ctx: click.Context, as_json: bool) -> None:
    """Have the daemon re-read its config file (a bad file is refused, the running one kept)."""
    result = _call(ctx, "reload")
    if as_json:
        _print_json(result)
        return

    def names(key: str) -> str:
        return ", ".join(result.get(key, [])) or "none"

    click.echo(f"reloaded: managed {names('managed')}; plain {names('plain')}")
    if result.get("removed"):
        click.echo(f"removed: {names('removed')}")
    for note in result.get("notes", []):
        click.echo(f"note: {note}")


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="The verdict as JSON.")
@click.pass_context
def health(ctx: click.Context, as_json: bool) -> None:
    """Exit 0 when charon is reachable and every connection is up or waits by policy."""
    result = _call(ctx, "health")
    if as_json:
        _print_json(result)
    elif result.get("healthy"):
        click.echo("healthy")
    else:
        click.echo("unhealthy: " + "; ".join(result.get("reasons", [])))
    if not result.get("healthy"):
        raise SystemExit(EXIT_FAILED)


COMMANDS: tuple[click.Command, ...] = (failover, watch, reload, health)
