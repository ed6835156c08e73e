"""The operator's records as JSON objects, as the control protocol (docs/control-protocol.md),
`/health` and `extsock failover ... --json` show them: the one place they are made."""

from __future__ import annotations

from typing import Any

from extsock_py.domain.reports import (
    ChangeResult,
    ConnectionStatus,
    HealthReport,
    HistoryRecord,
    LoadResult,
    ReloadReport,
    StatusReport,
    UnloadResult,
)

JsonObject = dict[str, Any]


def row_json(row: ConnectionStatus) -> JsonObject:
    """A status row."""
    out: JsonObject = {
        "connection": row.connection,
        "gateways": list(row.gateways),
        "active_gateway": row.active_gateway,
        "target_gateway": row.target_gateway,
        "phase": row.phase,
        "ike_id": row.ike_id,
        "held": row.held,
        "failures_total": row.failures_total,
        "failures_in_cycle": row.failures_in_cycle,
        "cycles_failed": row.cycles_failed,
        "next_action": row.next_action,
        "next_action_in": row.next_action_in,
        # Named so in version 1 of the control protocol (documented): kept for users.
        "standby_gateway": row.switch_gateway,
        "redirected_to": row.redirected_to,
        "hot_standby": None
        if row.hot_standby_gateway is None
        else {"gateway": row.hot_standby_gateway, "phase": row.hot_standby_phase},
        "draining": None
        if row.draining_gateway is None
        else {
            "gateway": row.draining_gateway,
            "ike_id": row.draining_ike_id,
            "in": row.draining_in,
            "until": row.draining_until,
        },
        "virtual_ips": list(row.virtual_ips),
        "ike_state": row.ike_state,
        "ike_gateway": row.ike_gateway,
        "next_action_at": row.next_action_at,
        "source": row.source,
    }
    if row.last_phase is not None:
        out["last_phase"] = row.last_phase
    return out


def status_json(report: StatusReport) -> JsonObject:
    release = report.charon
    return {
        "charon_reachable": report.charon_reachable,
        "charon": None
        if release is None
        else {"version": release.version, "dialect": release.dialect, "alerts": release.alerts},
        "connections": [row_json(row) for row in report.connections],
    }


def record_json(record: HistoryRecord) -> JsonObject:
    out: JsonObject = {} if record.id is None else {"id": record.id}
    out.update(
        {
            "time": record.time,
            "connection": record.connection,
            "from": record.from_gateway,
            "to": record.to_gateway,
            "reason": record.reason,
            "result": record.result,
            "duration": record.duration,
            "outage": record.outage,
        }
    )
    return out


def history_json(records: list[HistoryRecord]) -> JsonObject:
    return {"records": [record_json(r) for r in records]}


def health_json(report: HealthReport) -> JsonObject:
    out: JsonObject = {"healthy": report.healthy, "charon_reachable": report.charon_reachable}
    if report.connections is not None:
        out["connections"] = dict(report.connections)
    out["reasons"] = list(report.reasons)
    return out


def change_json(result: ChangeResult) -> JsonObject:
    return {"connection": row_json(result.connection), "changed": result.changed}


def load_json(result: LoadResult) -> JsonObject:
    return {
        "connection": row_json(result.connection),
        "started": result.started,
        "notes": list(result.notes),
    }


def unload_json(result: UnloadResult) -> JsonObject:
    return {"connection": result.connection, "unloaded": True, "notes": list(result.notes)}


def reload_json(report: ReloadReport) -> JsonObject:
    """The reply to a reload that was not refused (a refusal is an error reply)."""
    if report.applied is None:
        return {"deferred": True}
    applied = report.applied
    return {
        "managed": applied.managed,
        "plain": applied.plain,
        "removed": applied.removed,
        "notes": applied.notes,
        "failures": applied.failures,
    }
