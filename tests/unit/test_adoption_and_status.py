"""What operators see around a restart of extsock or of charon: the IKE state of adopted
tunnels, a failover that finished while extsock was away, and status while charon is down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from click.testing import CliRunner

from extsock_py.adapters.control.server import attach_control
from extsock_py.adapters.reports_json import row_json
from extsock_py.cli.failover import failover
from extsock_py.domain.errors import CharonUnreachable
from extsock_py.domain.persisted import SavedConnection
from extsock_py.domain.profile import clone_name
from tests.unit.test_control_support import Harness, make_harness, short_dir, wait_until


@contextmanager
def started(harness: Harness) -> Iterator[Harness]:
    def run() -> None:
        try:
            harness.daemon.run()
        except BaseException as exc:
            harness.errors.append(exc)

    harness.thread = threading.Thread(target=run, name="daemon-loop", daemon=True)
    harness.thread.start()
    assert harness.daemon.ready.wait(5), harness.errors
    try:
        yield harness
    finally:
        harness.daemon.request_stop()
        harness.thread.join(timeout=5)
    assert not harness.errors, harness.errors


def test_an_adopted_tunnel_shows_charons_ike_state() -> None:
    harness = make_harness()
    harness.charon.add_sa(clone_name("home", "10.0.0.2"), unique_id=41)
    with started(harness):
        row = row_json(harness.operator.status("home").connections[0])
    assert (row["phase"], row["active_gateway"]) == ("up", "10.0.0.2")
    assert (row["ike_state"], row["ike_id"]) == ("ESTABLISHED", 41)


def test_a_failover_finished_while_extsock_was_away_is_in_the_history() -> None:
    harness = make_harness()
    harness.store.save_connection(
        "home", SavedConnection(gateway="10.0.0.1", phase="up", held=False, failures_total=2)
    )
    harness.store.save_connection(  # died mid-failover: the target was persisted, not up
        "office", SavedConnection(gateway="192.0.2.2", phase="connecting", last_up="192.0.2.1")
    )
    harness.charon.add_sa(clone_name("home", "10.0.0.2"), unique_id=41)
    harness.charon.add_sa(clone_name("office", "192.0.2.2"), unique_id=42)
    with started(harness):
        records = harness.store.history()
    moved = {(r.connection, r.from_gateway, r.to_gateway, r.reason, r.result) for r in records}
    assert moved == {
        ("home", "10.0.0.1", "10.0.0.2", "while-away", "up"),
        ("office", "192.0.2.1", "192.0.2.2", "while-away", "up"),
    }
    assert harness.store.connections["home"].last_up == "10.0.0.2"


def test_a_tunnel_adopted_where_it_was_is_not_a_failover() -> None:
    harness = make_harness()
    harness.store.save_connection("home", SavedConnection(gateway="10.0.0.1", phase="up"))
    harness.charon.add_sa(clone_name("home", "10.0.0.1"), unique_id=41)
    with started(harness):
        pass
    assert harness.store.history() == []


def test_status_while_charon_is_down_says_unknown_and_what_was_last_known() -> None:
    harness = make_harness()
    with started(harness):
        harness.bring_up("home")
        away = [True]

        def connect() -> None:
            if away[0]:
                raise CharonUnreachable("charon is gone")

        harness.charon.connect = connect  # type: ignore[method-assign]
        harness.on_loop(lambda: harness.daemon.service.charon_lost("charon is gone"))
        op = harness.operator
        row = row_json(op.status("home").connections[0])  # as the protocol shows it
        assert (row["phase"], row["last_phase"], row["active_gateway"]) == ("unknown", "up", None)
        assert list(row)[-3:] == ["next_action_at", "source", "last_phase"]
        assert (row["next_action_in"], row["next_action_at"]) == (None, None)
        assert row["ike_state"] == "UNKNOWN"
        health = op.health()
        assert health.healthy is False
        assert health.reasons == ("charon is not reachable over VICI",)
        with short_dir() as d:
            srv = attach_control(harness.operator, harness.publisher, d / "s")
            srv.start()
            result = CliRunner().invoke(failover, ["status"], obj={"control_socket": str(d / "s")})
            srv.close()
        assert "unknown (charon down; was up)" in result.output, result.output
        away[0] = False
        harness.clock.advance(5.0)  # the loop's next reconnect attempt is due
        wait_until(lambda: harness.daemon.service.charon_reachable, timeout=5)
        assert op.status("home").connections[0].phase != "unknown"
