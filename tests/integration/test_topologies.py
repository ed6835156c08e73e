"""Real topologies against real charon daemons: shared IKE_SAs, IKE redirect, and the
`ike-state` stream per IKE_SA (issue 14); what the first chaos run found with shared
IKE_SAs (issue 26).

- Two managed connections (`home`, `upb`) whose configs are equal but for their children:
  charon (reuse_ikesa = yes, its default) puts `upb`'s CHILD_SA into `home`'s IKE_SA.
  `home` carries 10.100.0.0/25 (traffic from 10.100.0.1), `upb` 10.100.0.128/25 (from
  10.100.0.129), so traffic proves each tunnel on its own.
- A gateway redirects the client (RFC 5685, `swanctl --redirect` on the gateway) to a
  third gateway that is not in `remote_addrs`.

Each test starts from a reset lab and a fresh extsock; every wait is bounded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from extsock_py.adapters.control.client import ControlClient
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI
from tests.integration.resilience_support import FAST_POLICY, runner_tag

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("lab", [{"gateways": 3}], indirect=True),
]

GW1, GW2, GW3 = "10.99.1.2", "10.99.2.2", "10.99.3.2"
HOME_SRC, UPB_SRC = "10.100.0.1", "10.100.0.129"
POLICY = FAST_POLICY
_CONNECTIONS = re.compile(r"^connections \{\n(.*?)^\}\n", re.S | re.M)


def two_connections(text: str) -> str:
    """`home` on 10.100.0.0/25 plus `upb`: the same IKE config, child net2 on .128/25,
    and both towards the two configured gateways only (segw3 is a redirect target)."""
    match = _CONNECTIONS.search(text)
    assert match is not None
    home = match.group(1).replace("10.100.0.0/24", "10.100.0.0/25")
    upb = home.replace("    home {", "    upb {", 1).replace("net {", "net2 {", 1)
    upb = upb.replace("10.100.0.0/25", "10.100.0.128/25")
    return text.replace(match.group(1), home + upb)


def two_gateways(text: str) -> str:
    """`home` towards segw1 and segw2 only: segw3 is reached by redirect alone."""
    return text.replace(f"{GW1}, {GW2}, {GW3}", f"{GW1}, {GW2}")


class Events:
    """Everything extsock publishes, collected by a subscriber thread (bounded)."""

    def __init__(self, runner: ExtsockRunner) -> None:
        self.items: list[dict[str, Any]] = []
        self._client = ControlClient(runner.control_socket, timeout=1.0)
        self._client.subscribe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.items) < 10_000:
            try:
                self.items.append(self._client.next_event())
            except Exception:  # timeouts while idle; the daemon gone at the end
                continue

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.items) if e.get("event") == kind]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._client.close()


@pytest.fixture
def start(fresh_lab: Lab, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    made: list[tuple[ExtsockRunner, Events | None]] = []

    def make(transform: Callable[[str], str], policy: str = POLICY) -> tuple[ExtsockRunner, Events]:
        tag = runner_tag(request)
        runner = ExtsockRunner(fresh_lab, policy, name=f"t-{tag}", conf_transform=transform)
        runner.write_config()
        made.append((runner, None))
        runner.start()
        events = Events(runner)
        made[-1] = (runner, events)
        return runner, events

    # The address of upb's traffic, inside its local_ts (libipsec routes need it).
    fresh_lab.ns_exec(INI, ["ip", "addr", "replace", f"{UPB_SRC}/32", "dev", "lo"], check=True)
    try:
        yield make
    finally:
        for runner, events in made:
            if events is not None:
                events.close()
            runner.stop()


def children_on(lab: Lab, node: str) -> dict[str, int]:
    """INSTALLED CHILD_SAs by name on a node."""
    counts: dict[str, int] = {}
    for entry in lab.list_sas(node):
        for ike in entry.values():
            for child in (ike.get("child-sas") or {}).values():
                if child.get("state") == "INSTALLED":
                    counts[child["name"]] = counts.get(child["name"], 0) + 1
    return counts


def ike_sas(lab: Lab, node: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, ike) for entry in lab.list_sas(node) for name, ike in entry.items()]


def both_up_on(runner: ExtsockRunner, gateway: str) -> bool:
    return all(
        runner.status(conn)["phase"] == "up" and runner.status(conn)["active_gateway"] == gateway
        for conn in ("home", "upb")
    )


def assert_true_stream(events: Events, born_after: int) -> None:
    """Per IKE_SA: each event starts where the last ended, nothing after DESTROYING, and
    one with an id above `born_after` (created after the subscription) from CREATED."""
    last: dict[int, str] = {}
    for e in events.of("ike-state"):
        ike_id = e["ike_id"]
        if ike_id in last or ike_id > born_after:
            assert e["old"] == last.get(ike_id, "CREATED"), (e, events.of("ike-state"))
        assert e["old"] != "DESTROYING", e
        last[ike_id] = e["new"]


# --- 1. shared IKE_SAs ------------------------------------------------------------------


def test_a_second_connection_in_the_first_ones_ike_sa_is_up_and_stays(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    runner, events = start(two_connections)
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=HOME_SRC) == "segw1"
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=UPB_SRC) == "segw1"
    # Past connect_timeout (5 s): nothing failed over, each child installed once.
    assert not wait_until(lambda: runner.status("upb")["phase"] != "up", 7.0)
    assert children_on(fresh_lab, INI) == {"net": 1, "net2": 1}
    sas = ike_sas(fresh_lab, INI)
    assert len(sas) == 1, sas  # charon's reuse_ikesa: one IKE_SA carries both
    assert runner.status("home")["ike_id"] == runner.status("upb")["ike_id"]
    assert runner.status("upb")["failures_total"] == 0
    assert not events.of("failover-started")
    assert_true_stream(events, born_after=runner.status("upb")["ike_id"])
    upb = runner.status("upb")
    assert (upb["ike_state"], upb["ike_gateway"]) == ("ESTABLISHED", GW1)


def test_a_dead_gateway_moves_every_connection_riding_its_ike_sa(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    runner, events = start(two_connections)
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    first_id = runner.status("home")["ike_id"]
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: both_up_on(runner, GW2), 20.0), runner.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5, source=HOME_SRC) == "segw2"
    assert fresh_lab.udp_echo(timeout=1.0, tries=5, source=UPB_SRC) == "segw2"
    assert children_on(fresh_lab, INI) == {"net": 1, "net2": 1}
    assert_true_stream(events, born_after=first_id)


def test_moving_one_connection_keeps_the_shared_ike_sa_of_the_other(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    runner, events = start(two_connections)
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    shared_id = runner.status("home")["ike_id"]
    runner.request("switch", conn="upb", to=GW2)
    assert wait_until(lambda: runner.status("upb")["active_gateway"] == GW2, 10.0), (
        runner.log_tail()
    )
    # home never went down: same IKE_SA, child still there, traffic on segw1.
    assert not wait_until(lambda: runner.status("home")["ike_id"] != shared_id, 2.0)
    home = runner.status("home")
    assert home["phase"] == "up" and home["active_gateway"] == GW1
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=HOME_SRC) == "segw1"
    assert fresh_lab.udp_echo(timeout=1.0, tries=5, source=UPB_SRC) == "segw2"
    assert children_on(fresh_lab, INI) == {"net": 1, "net2": 1}
    assert children_on(fresh_lab, "segw1") == {"net": 1}
    assert not [e for e in events.of("tunnel-down") if e["connection"] == "home"]
    assert_true_stream(events, born_after=shared_id)


def test_a_restarted_extsock_adopts_both_connections_of_a_shared_ike_sa(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    runner, _ = start(two_connections)
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    shared_id = runner.status("home")["ike_id"]
    runner.stop()  # tunnels are left up
    runner.start()
    assert wait_until(lambda: both_up_on(runner, GW1), 10.0), runner.log_tail()
    assert runner.status("upb")["ike_id"] == runner.status("home")["ike_id"] == shared_id
    # Adopted, not started again: no second CHILD_SA, no second IKE_SA, nothing moves.
    assert not wait_until(lambda: runner.status("upb")["phase"] != "up", 6.0)
    assert children_on(fresh_lab, INI) == {"net": 1, "net2": 1}
    assert len(ike_sas(fresh_lab, INI)) == 1
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=UPB_SRC) == "segw1"
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=HOME_SRC) == "segw1"


# --- 2. redirect --------------------------------------------------------------------------


def test_a_redirect_is_followed_then_failover_goes_on_with_the_configured_list(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    runner, events = start(two_gateways)
    assert wait_until(lambda: runner.status()["active_gateway"] == GW1, 15.0), runner.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"
    first_id = runner.status()["ike_id"]
    fresh_lab.swanctl("segw1", "--redirect", "--ike", "lab-ini", "--gateway", GW3)
    assert wait_until(lambda: runner.status()["active_gateway"] == GW3, 10.0), runner.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw3"
    # It stays there: no failure counted, no failover, one tunnel.
    assert not wait_until(lambda: runner.status()["active_gateway"] != GW3, 6.0)
    status = runner.status()
    assert status["phase"] == "up" and status["failures_total"] == 0
    assert not events.of("failover-started") and not events.of("tunnel-down")
    assert children_on(fresh_lab, INI) == {"net": 1}
    assert not fresh_lab.child_installed("segw1")
    redirected = events.of("redirected")
    assert [(e["from"], e["to"], e["reason"]) for e in redirected] == [(GW1, GW3, "redirect")]
    history = runner.request("history", conn="home")["records"]
    assert history[-1]["reason"] == "redirect" and history[-1]["to"] == GW3
    print(*events.of("ike-state"), sep="\n")
    assert_true_stream(events, born_after=first_id)
    # The IKE_SA left at segw1 ended with DESTROYING; the new one is at segw3.
    old = [e for e in events.of("ike-state") if e["ike_id"] == first_id]
    assert old[-1]["new"] == "DESTROYING" and old[-1]["gateway"] == GW1
    new = [e for e in events.of("ike-state") if e["ike_id"] == status["ike_id"]]
    assert new[-1]["new"] == "ESTABLISHED" and new[-1]["gateway"] == GW3
    # The redirect target dies: the failover goes on with the configured list (segw2).
    fresh_lab.fail("segw3", "link")
    assert wait_until(lambda: runner.status()["active_gateway"] == GW2, 20.0), runner.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    started = events.of("failover-started")
    assert started and started[-1]["from"] == GW3 and started[-1]["to"] == GW2
    assert_true_stream(events, born_after=first_id)


# --- 3. the ike-state stream ----------------------------------------------------------------


def test_the_ike_state_stream_tells_each_ike_sa_from_birth_to_destroying(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    runner, events = start(lambda text: text)
    assert wait_until(lambda: runner.status()["active_gateway"] == GW1, 15.0), runner.log_tail()
    first_id = runner.status()["ike_id"]
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: runner.status()["active_gateway"] == GW2, 20.0), runner.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    second_id = runner.status()["ike_id"]
    assert wait_until(
        lambda: any(
            e["ike_id"] == first_id and e["new"] == "DESTROYING" for e in events.of("ike-state")
        ),
        5.0,
    ), events.of("ike-state")
    assert_true_stream(events, born_after=first_id)
    by_id: dict[int, list[str]] = {}
    for e in events.of("ike-state"):
        by_id.setdefault(e["ike_id"], []).append(e["new"])
        assert e["connection"] == "home" and e["gateway"] in (GW1, GW2)
    assert by_id[first_id][-1] == "DESTROYING"
    # Born after the subscription: its whole life, as charon went through it.
    assert by_id[second_id][:2] == ["CONNECTING", "ESTABLISHED"]
    assert "DESTROYING" not in by_id[second_id]


def test_a_redirect_charon_refuses_leaves_the_tunnel_where_it_is(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    """charon follows 5 redirects within 300 s; it logs the 6th and stays (ike_sa.c).

    Under load, charon sometimes drops the target's answer to the IKE_SA_INIT of a
    redirect (it sends it before the new IKE_SA is in its manager: "IKE_SA checkout not
    successful" at mgr level 2) and gets it on its retransmit 4 s later; that retransmit
    of a redirect in flight is no failure of the tunnel (it was, and this test was flaky)."""
    runner, events = start(two_gateways)
    assert wait_until(lambda: runner.status()["active_gateway"] == GW1, 15.0), runner.log_tail()
    hops = [("segw1", GW3), ("segw3", GW1), ("segw1", GW3), ("segw3", GW1), ("segw1", GW3)]
    for node, to in hops:
        # the gateway redirects only an IKE_SA it has established: wait for its side too
        assert wait_until(lambda: fresh_lab.child_installed(node), 10.0)  # noqa: B023
        fresh_lab.swanctl(node, "--redirect", "--ike", "lab-ini", "--gateway", to)
        assert wait_until(lambda: runner.status()["active_gateway"] == to, 10.0), (  # noqa: B023
            runner.log_tail()
        )
    assert wait_until(lambda: fresh_lab.child_installed("segw3"), 10.0)
    fresh_lab.swanctl("segw3", "--redirect", "--ike", "lab-ini", "--gateway", GW1)
    assert not wait_until(lambda: runner.status()["active_gateway"] != GW3, 7.0)
    status = runner.status()
    assert status["phase"] == "up" and status["failures_total"] == 0
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw3"
    assert len(events.of("redirected")) == 5 and not events.of("failover-started")


# --- 4. shared IKE_SAs under faults: what the first chaos run found (issue 26) --------------


def draining(runner: ExtsockRunner, conn: str) -> str | None:
    """The gateway of `conn`'s drain, if one runs."""
    drain = runner.status(conn)["draining"]
    return None if drain is None else str(drain["gateway"])


def one_each(lab: Lab) -> bool:
    """ini has exactly one installed CHILD_SA of each connection."""
    return children_on(lab, INI) == {"net": 1, "net2": 1}


def test_after_ini_s_charon_restarts_both_tunnels_of_the_new_shared_ike_sa_are_seen(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    """The restarted charon numbers its IKE_SAs from 1 again: the new IKE_SA #1 carries both
    CHILD_SAs with the numbers the old one had. Seen: upb's read as home's, upb failed over
    for connect-timeout 5 s later and its CHILD_SA stayed installed."""
    runner, events = start(two_connections)
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    fresh_lab.kill(INI)
    fresh_lab.start(INI)
    assert wait_until(lambda: both_up_on(runner, GW1), 10.0), runner.log_tail()
    assert not wait_until(lambda: runner.status("upb")["phase"] != "up", 6.0), runner.log_tail()
    assert not events.of("failover-started"), events.of("failover-started")
    assert one_each(fresh_lab), children_on(fresh_lab, INI)
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=UPB_SRC) == "segw1"


def test_a_switch_back_into_the_shared_ike_sa_a_drain_left(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    """home leaves the shared IKE_SA (switch to segw2, drain ended: its CHILD_SA alone goes,
    upb's stays) and is switched back: charon puts the new CHILD_SA into that IKE_SA.
    Seen: switch-failed after the connect timeout, with the CHILD_SA left installed."""
    runner, events = start(two_connections)
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    shared_id = runner.status("upb")["ike_id"]
    runner.request("switch", conn="home", to=GW2)
    assert wait_until(lambda: runner.status("home")["active_gateway"] == GW2, 10.0)
    assert wait_until(lambda: children_on(fresh_lab, "segw1") == {"net": 1}, 5.0)
    runner.request("switch", conn="home", to=GW1)
    assert wait_until(lambda: both_up_on(runner, GW1), 4.0), runner.log_tail()
    assert runner.status("home")["ike_id"] == shared_id  # the IKE_SA the drain left
    assert wait_until(lambda: one_each(fresh_lab), 5.0), children_on(fresh_lab, INI)
    assert not wait_until(lambda: bool(events.of("switch-failed")), 6.0), runner.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=HOME_SRC) == "segw1"


def test_a_switch_to_the_gateway_being_drained(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    """home switched to segw2 with a 5 s drain, then back to segw1 during it: the drain ends
    at once (README) and the switch completes. Seen: it failed after the connect timeout."""
    runner, events = start(two_connections, POLICY + "    switch_drain = 5s\n")
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    runner.request("switch", conn="home", to=GW2)
    assert wait_until(lambda: draining(runner, "home") == GW1, 10.0)
    runner.request("switch", conn="home", to=GW1)
    assert wait_until(lambda: both_up_on(runner, GW1), 4.0), runner.log_tail()
    assert not wait_until(lambda: bool(events.of("switch-failed")), 6.0), runner.log_tail()
    assert wait_until(lambda: one_each(fresh_lab), 5.0), children_on(fresh_lab, INI)
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=HOME_SRC) == "segw1"


def test_the_end_of_a_drain_ends_a_rekeyed_child_sa(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    """home's CHILD_SA in the shared IKE_SA is rekeyed, then home switches to segw2: the
    drain's end must end the rekeyed CHILD_SA. Seen: it named the old id, and the rekeyed
    one stayed installed for 12 s."""
    runner, _ = start(two_connections)
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    child_ids = {
        child["name"]: child["uniqueid"]
        for _, ike in ike_sas(fresh_lab, INI)
        for child in (ike.get("child-sas") or {}).values()
    }
    fresh_lab.swanctl(INI, "--rekey", "--child-id", str(child_ids["net"]))

    def rekeyed() -> bool:
        ids = [
            child["uniqueid"]
            for _, ike in ike_sas(fresh_lab, INI)
            for child in (ike.get("child-sas") or {}).values()
            if child["name"] == "net" and child["state"] == "INSTALLED"
        ]
        return ids != [] and child_ids["net"] not in ids

    assert wait_until(rekeyed, 5.0), fresh_lab.list_sas(INI)
    runner.request("switch", conn="home", to=GW2)
    assert wait_until(lambda: runner.status("home")["active_gateway"] == GW2, 10.0)
    # the drain (1 s) ends, and with it home's CHILD_SA at segw1; upb's stays
    assert wait_until(lambda: children_on(fresh_lab, "segw1") == {"net": 1}, 4.0), children_on(
        fresh_lab, "segw1"
    )
    assert one_each(fresh_lab), children_on(fresh_lab, INI)
    assert runner.status("upb")["active_gateway"] == GW1


def test_extsock_killed_during_a_drain_adopts_one_child_sa_per_connection(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    """kill -9 while home's old CHILD_SA drains in the IKE_SA it shares with upb: the
    restarted extsock adopts one CHILD_SA per connection and ends the other. Seen: three
    installed CHILD_SAs for 25 s."""
    runner, _ = start(two_connections, POLICY + "    switch_drain = 30s\n")
    assert wait_until(lambda: both_up_on(runner, GW1), 15.0), runner.log_tail()
    runner.request("switch", conn="home", to=GW2)
    assert wait_until(lambda: draining(runner, "home") == GW1, 10.0)
    assert children_on(fresh_lab, INI) == {"net": 2, "net2": 1}
    runner.kill9()
    runner.start()
    assert wait_until(lambda: one_each(fresh_lab), 5.0), children_on(fresh_lab, INI)
    home, upb = runner.status("home"), runner.status("upb")
    assert (home["phase"], home["active_gateway"]) == ("up", GW2), runner.log_tail(80)
    assert (upb["phase"], upb["active_gateway"]) == ("up", GW1), runner.log_tail(80)
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=HOME_SRC) == "segw2"
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=UPB_SRC) == "segw1"
