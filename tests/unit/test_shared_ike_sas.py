"""Two managed connections sharing IKE_SAs (charon's reuse_ikesa): the defects the first
chaos run found (issue 26), each reproduced on fakes.

The daemon's service runs on the fake charon port and a fake clock; charon's events are
built as charon 5.9.8 builds them (tests/fakes/charon_messages.py), decoded by the vici
adapter and read with the 5.9.8 dialect, and handed to the service as the main loop hands
them. `upa` and `upb` have equal configs but for their children (`da`, `db`), so charon
puts the CHILD_SA of the second into the IKE_SA of the first: `upa@GW1[1]` carries `da{1}`
and `db{2}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from extsock_py.adapters.vici.decode import decode_event
from extsock_py.adapters.vici.dialects import choose
from extsock_py.domain import events as ev
from extsock_py.domain import observations as ob
from extsock_py.domain.config import DesiredConfig
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.reports import ConnectionStatus
from extsock_py.usecases.daemon_service import DaemonOptions, DaemonService
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes import charon_messages as cm
from tests.fakes.ports import FakeClock, MemoryStateStore, RecordingPublisher
from tests.unit.test_control_support import CharonStub, NullListener

GW1, GW2, GW3 = "10.77.1.2", "10.77.2.2", "10.77.3.2"
CHILDREN = {"upa": ("da", "10.100.0.0/25"), "upb": ("db", "10.100.0.128/25")}
READER = choose("5.9.8").dialect.reader(alerts=False)


def _body(child: str, local_ts: str, gateways: tuple[str, ...]) -> dict[str, Any]:
    return {
        "remote_addrs": list(gateways),
        "version": "2",
        "local": {"auth": "psk", "id": "ini"},
        "remote": {"auth": "psk"},
        "children": {child: {"local_ts": [local_ts], "remote_ts": ["10.200.0.0/24"]}},
    }


def _config(gateways: tuple[str, ...], policy: FailoverPolicy) -> DesiredConfig:
    return DesiredConfig(
        source="swanctl.conf",
        connections={name: _body(child, ts, gateways) for name, (child, ts) in CHILDREN.items()},
        policies={name: policy for name in CHILDREN},
    )


class Shared:
    """The daemon's service on fakes, and ini's charon as a script of its events."""

    def __init__(
        self,
        gateways: tuple[str, ...] = (GW1, GW2, GW3),
        policy: FailoverPolicy | None = None,
        charon: CharonStub | None = None,
    ) -> None:
        self.charon = charon if charon is not None else CharonStub()
        self.clock = FakeClock()
        self.publisher = RecordingPublisher()
        self.manager = FailoverManager(self.charon, self.clock, self.publisher, MemoryStateStore())
        config = _config(gateways, policy if policy is not None else FailoverPolicy())
        self.service = DaemonService(
            DaemonOptions(Path("swanctl.conf")),
            self.charon,
            lambda post: NullListener(),
            lambda path: config,
            self.clock,
            self.publisher,
            self.manager,
        )
        self.service.open(lambda item: None)
        self.service.start()

    # --- the loop's part ---------------------------------------------------------------

    def event(self, name: str, message: Mapping[str, Any]) -> None:
        """One of charon's events, as the listener delivers it and the loop hands it on."""
        obs = READER.translate(decode_event(name, message))
        if obs is not None and self.service.wants(obs):
            self.service.handle(obs)

    def advance(self, seconds: float) -> None:
        """Time passes; each deadline on the way is met at its time."""
        target = self.clock.now + seconds
        for _ in range(100):
            wake = self.manager.next_wake()
            if wake is None or wake > target:
                break
            self.clock.now = max(self.clock.now, wake)
            self.manager.tick()
        self.clock.now = target

    def operator(self, conn: str, event: ev.Event) -> None:
        self.manager.handle(conn, event)

    def restart_charon(self) -> None:
        """ini's charon is killed and comes back empty, numbering its IKE_SAs from 1."""
        self.service.handle(ob.CharonLost("connection closed"))
        self.charon.sas.clear()
        self.charon.conns.clear()
        self.charon.next_ike_id = 1
        self.service.handle(ob.CharonBack())

    # --- charon's events (5.9.8's messages) --------------------------------------------

    def initiating(self, ike: str, uid: int, gateway: str) -> None:
        msg = f"initiating IKE_SA {ike}[{uid}] to {gateway}"
        self.event("log", cm.log(msg, level=0, ike_name=ike, ike_id=uid))

    def ike_up(self, ike: str, uid: int, gateway: str) -> None:
        self.event("ike-updown", cm.ike_updown(ike, cm.ike_sa(uid, remote_host=gateway), True))

    def ike_down(self, ike: str, uid: int, gateway: str) -> None:
        sa = cm.ike_sa(uid, "DELETING", remote_host=gateway)
        self.event("ike-updown", cm.ike_updown(ike, sa, False))

    def child_up(self, ike: str, uid: int, gateway: str, child: str, cid: int) -> None:
        sa, kid = cm.ike_sa(uid, remote_host=gateway), cm.child_sa(child, cid)
        self.event("child-updown", cm.child_updown(ike, sa, kid, True))

    def child_down(self, ike: str, uid: int, gateway: str, child: str, cid: int) -> None:
        sa, kid = cm.ike_sa(uid, remote_host=gateway), cm.child_sa(child, cid, "DELETING")
        self.event("child-updown", cm.child_updown(ike, sa, kid, False))

    def child_rekey(self, ike: str, uid: int, gateway: str, child: str, old: int, new: int) -> None:
        sa = cm.ike_sa(uid, remote_host=gateway)
        pair = cm.child_sa(child, old, "REKEYED"), cm.child_sa(child, new, "INSTALLED")
        self.event("child-rekey", cm.child_rekey(ike, sa, *pair))

    def new_tunnel(self, conn: str, uid: int, gateway: str, cid: int) -> None:
        """charon sets up a new IKE_SA with the connection's CHILD_SA."""
        ike = f"{conn}@{gateway}"
        self.initiating(ike, uid, gateway)
        self.ike_up(ike, uid, gateway)
        self.child_up(ike, uid, gateway, CHILDREN[conn][0], cid)

    def both_in_one(self, uid: int = 1, gateway: str = GW1, owner: str = "upa") -> None:
        """Both connections up in one IKE_SA named after `owner` (its CHILD_SA first)."""
        other = "upb" if owner == "upa" else "upa"
        ike = f"{owner}@{gateway}"
        self.new_tunnel(owner, uid, gateway, cid=1)
        self.child_up(ike, uid, gateway, CHILDREN[other][0], 2)

    # --- what to look at ---------------------------------------------------------------

    def status(self, conn: str) -> ConnectionStatus:
        return self.manager.status(conn)[0]

    def where(self, conn: str) -> tuple[str, str | None, int | None]:
        row = self.status(conn)
        return row.phase, row.active_gateway, row.ike_id

    def mark(self) -> int:
        return len(self.charon.calls)

    def terminations(self, since: int = 0) -> list[tuple[Any, ...]]:
        return [c for c in self.charon.calls[since:] if c[0] in ("terminate", "terminate-child")]

    def notices(self, kind: str, conn: str) -> list[dict[str, Any]]:
        return [e for e in self.publisher.of(kind) if e.get("connection") == conn]


def up_in_one(**kwargs: Any) -> Shared:
    w = Shared(**kwargs)
    w.both_in_one()
    assert w.where("upa") == w.where("upb") == ("up", GW1, 1)
    return w


def switched_away(w: Shared, drain_ended: bool = True) -> Shared:
    """upa switched to GW2 (IKE_SA #2, da{3}); the drain of its CHILD_SA in #1 ended, and
    charon deleted that CHILD_SA alone: #1 lives on, carrying upb's db{2}."""
    w.operator("upa", ev.Switch(GW2))
    w.new_tunnel("upa", 2, GW2, cid=3)
    assert w.where("upa") == ("up", GW2, 2)
    if drain_ended:
        mark = w.mark()
        w.advance(1.1)
        assert w.terminations(mark) == [("terminate-child", 1)]
        w.child_down("upa@10.77.1.2", 1, GW1, "da", 1)
        assert w.where("upb") == ("up", GW1, 1)
    return w


# --- 1. after charon restarts, its reused IKE_SA numbers are charon's new IKE_SAs ---------


def test_after_a_charon_restart_the_new_ike_sa_1_carries_both_tunnels() -> None:
    """Seen: `upa@10.77.1.2[1]` came up carrying da{1} and db{2}, extsock logged only upa's
    tunnel and 5 s later failed upb over for connect-timeout. The SA table still held the
    old charon's IKE_SA #1 with both CHILD_SAs, so db{2} of the new #1 was read as upa's."""
    w = up_in_one()
    w.restart_charon()
    assert w.where("upa")[0] == w.where("upb")[0] == "connecting"
    w.both_in_one()
    assert w.where("upa") == w.where("upb") == ("up", GW1, 1)
    mark = w.mark()
    w.advance(6.0)  # past connect_timeout
    assert w.where("upb") == ("up", GW1, 1)
    assert w.notices("failover-started", "upb") == []
    assert w.terminations(mark) == []


def test_after_a_charon_restart_an_old_charon_s_gone_id_is_a_new_ike_sa() -> None:
    """The old charon's IKE_SA #1 was rekeyed into #3 (its id remembered as gone). The new
    charon's #1 is news all the same: its state is published, and its CHILD_SAs are
    known, so the end of a drain ends upa's CHILD_SA alone, not upb's tunnel with it."""
    w = up_in_one()
    old = cm.ike_sa(1, "REKEYED", remote_host=GW1)
    w.event("ike-rekey", cm.ike_rekey("upa@10.77.1.2", old, cm.ike_sa(3, remote_host=GW1)))
    assert w.where("upa") == w.where("upb") == ("up", GW1, 3)
    w.restart_charon()
    states = len(w.publisher.of("ike-state"))
    w.both_in_one()
    fresh = [(e["ike_id"], e["new"]) for e in w.publisher.of("ike-state")[states:]]
    assert (1, "ESTABLISHED") in fresh
    assert w.where("upa") == w.where("upb") == ("up", GW1, 1)
    switched_away(w)  # asserts the drain's end terminated da{1} alone (not IKE_SA #1)


def test_a_charon_restart_ends_the_old_charon_s_ike_sas_in_the_state_stream() -> None:
    w = up_in_one()
    states = len(w.publisher.of("ike-state"))
    w.restart_charon()
    ended = [(e["ike_id"], e["old"], e["new"]) for e in w.publisher.of("ike-state")[states:]]
    assert ended == [(1, "ESTABLISHED", "DESTROYING")]


# --- 2. a switch or failover back into a shared IKE_SA the connection was drained from -----


@pytest.mark.parametrize("owner", ["upa", "upb"])
def test_a_switch_back_into_the_shared_ike_sa_it_was_drained_from(owner: str) -> None:
    """Seen: `switch-failed`, and the CHILD_SA charon put into the IKE_SA stayed installed
    (two for 28 s). The drain's end retired IKE_SA #1 for upa, but #1 lives on for upb
    and charon puts upa's next CHILD_SA towards GW1 into it."""
    w = Shared()
    w.both_in_one(owner=owner)
    assert w.where("upa") == w.where("upb") == ("up", GW1, 1)
    upa_child = 1 if owner == "upa" else 2
    w.operator("upa", ev.Switch(GW2))
    w.new_tunnel("upa", 2, GW2, cid=3)
    mark = w.mark()
    w.advance(1.1)
    assert w.terminations(mark) == [("terminate-child", upa_child)]
    w.child_down(f"{owner}@{GW1}", 1, GW1, "da", upa_child)
    w.advance(5.0)
    w.operator("upa", ev.Switch(GW1))
    w.child_up(f"{owner}@{GW1}", 1, GW1, "da", 4)  # no new IKE_SA: charon reuses #1
    assert w.where("upa") == ("up", GW1, 1)
    assert w.notices("failover", "upa")[-1]["gateway"] == GW1
    mark = w.mark()
    w.advance(6.0)
    assert w.notices("switch-failed", "upa") == []
    assert w.terminations(mark) == [("terminate", None, 2)]  # the drained tunnel on GW2
    assert w.where("upa") == ("up", GW1, 1) and w.where("upb") == ("up", GW1, 1)
    # IKE_SA #1 is upa's tunnel again: its news counts
    w.child_down(f"{owner}@{GW1}", 1, GW1, "da", 4)
    assert w.where("upa")[0] == "connecting"


def test_a_failover_into_the_shared_ike_sa_it_was_drained_from() -> None:
    """The same IKE_SA reached by a failover: GW2 dies, the attempt towards GW1 gets its
    CHILD_SA in #1 at once. Seen as a connect timeout declared although the failover was
    up, and a move on to the next gateway."""
    w = switched_away(up_in_one(gateways=(GW1, GW2)))
    w.ike_down("upa@10.77.2.2", 2, GW2)
    assert w.where("upa")[0] == "connecting"
    w.child_up("upa@10.77.1.2", 1, GW1, "da", 4)
    assert w.where("upa") == ("up", GW1, 1)
    w.advance(6.0)
    assert w.where("upa") == ("up", GW1, 1)
    assert [e["reason"] for e in w.notices("failover", "upa")] == ["operator", "ike-down"]


def test_a_switch_back_that_fails_does_not_end_the_shared_ike_sa_named_after_it() -> None:
    """The switch back towards GW1 gets no CHILD_SA (the gateway does not answer in time):
    its end must not terminate by name the IKE_SA upa@GW1[1], which carries upb's tunnel
    (the code before these fixes sent `terminate ike=upa@10.77.1.2`, the golden
    reuse-switch-back shows it)."""
    w = switched_away(up_in_one())
    mark = w.mark()
    w.operator("upa", ev.Switch(GW1))
    w.advance(6.0)  # past connect_timeout: no CHILD_SA came
    assert [e["gateway"] for e in w.notices("switch-failed", "upa")] == [GW1]
    assert ("terminate", "upa@10.77.1.2", None) not in w.terminations(mark)
    assert w.terminations(mark) == []  # upa has nothing in #1 to end
    assert w.where("upb") == ("up", GW1, 1) and w.where("upa") == ("up", GW2, 2)


def test_a_failed_attempt_ends_its_own_ike_sa_but_not_the_shared_one() -> None:
    """The failover back towards GW1 started a half-open IKE_SA of its own (#5) beside the
    shared one: the connect timeout ends #5 by its id and leaves #1 to upb."""
    w = switched_away(up_in_one(gateways=(GW1, GW2)))
    w.ike_down("upa@10.77.2.2", 2, GW2)
    w.initiating("upa@10.77.1.2", 5, GW1)
    mark = w.mark()
    w.advance(5.5)
    assert ("terminate", None, 5) in w.terminations(mark)
    assert ("terminate", "upa@10.77.1.2", None) not in w.terminations(mark)
    assert w.where("upb") == ("up", GW1, 1)


# --- 3. CHILD_SA rekeys are followed ---------------------------------------------------


def test_the_end_of_a_drain_ends_the_rekeyed_child_sa() -> None:
    """Seen: after a CHILD_SA rekey extsock still held the old CHILD_SA's id; the end of a
    drain terminated an id that no longer existed, and the rekeyed one stayed up 12 s."""
    w = up_in_one()
    w.child_rekey("upa@10.77.1.2", 1, GW1, "da", 1, 5)
    w.operator("upa", ev.Switch(GW2))
    w.new_tunnel("upa", 2, GW2, cid=6)
    mark = w.mark()
    w.advance(1.1)
    assert w.terminations(mark) == [("terminate-child", 5)]


def test_a_rekeyed_child_sa_deleted_by_the_gateway_is_the_tunnel_down() -> None:
    w = up_in_one()
    w.child_rekey("upa@10.77.1.2", 1, GW1, "db", 2, 5)
    w.child_down("upa@10.77.1.2", 1, GW1, "db", 5)
    assert w.where("upb")[0] == "connecting"
    assert w.notices("tunnel-down", "upb")[-1]["reason"] == "child-down"
    assert w.where("upa") == ("up", GW1, 1)


# --- 4. adoption after extsock was killed: one installed CHILD_SA per connection ----------


def test_adoption_ends_the_stray_child_sa_in_a_shared_ike_sa() -> None:
    """extsock killed during upa's drain: #1 carries da{1} (draining) and db{2}, #3 carries
    da{5}. Seen: three CHILD_SAs for 25 s. upa keeps its newest (#3), its CHILD_SA in #1
    goes alone (upb rides there), and the clones follow the adopted tunnels."""
    charon = CharonStub()
    charon.add_sa("upa@10.77.1.2", children=(("da", "INSTALLED"), ("db", "INSTALLED")))
    charon.add_sa("upa@10.77.2.2", children=(("da", "INSTALLED"),))
    charon.conns.update({f"{c}@{g}": {} for c in ("upa", "upb") for g in (GW1, GW2)})
    w = Shared(charon=charon)
    assert w.where("upa") == ("up", GW2, 2) and w.where("upb") == ("up", GW1, 1)
    installed: dict[str, list[int]] = {}
    for sa in charon.list_sas():
        for child in sa.children:
            if child.state == "INSTALLED":
                installed.setdefault(child.name, []).append(child.unique_id)
    assert installed == {"da": [20], "db": [11]}
    assert ("terminate-child", 10) in charon.calls
    assert sorted(charon.conns) == ["upa@10.77.2.2", "upb@10.77.1.2"]
    assert [e["reason"] for e in w.publisher.of("tunnel-up")] == ["adopted", "adopted"]


def test_adoption_of_two_ike_sas_of_one_connection_keeps_the_newest_child() -> None:
    """Both of upa's CHILD_SAs in IKE_SAs of its own, the older carrying upb too."""
    charon = CharonStub()
    charon.add_sa("upa@10.77.2.2", children=(("da", "INSTALLED"),))
    charon.add_sa("upb@10.77.1.2", children=(("db", "INSTALLED"), ("da", "INSTALLED")))
    charon.conns.update({"upa@10.77.2.2": {}, "upb@10.77.1.2": {}, "upa@10.77.1.2": {}})
    w = Shared(charon=charon)
    assert w.where("upa") == ("up", GW1, 2) and w.where("upb") == ("up", GW1, 2)
    assert 1 not in charon.sas  # upa's older IKE_SA carried nothing else: it went whole
    assert [c.name for c in charon.sas[2].children] == ["db", "da"]
    assert sorted(charon.conns) == ["upa@10.77.1.2", "upb@10.77.1.2"]


def test_the_stray_child_sa_ending_after_adoption_is_not_the_riding_connection_s() -> None:
    """The IKE_SA is named after upb (db{10} first) and carries upa's stray da{11}: its
    end (charon's child-updown down after the adoption's terminate) is no failure of upb.
    Seen in the lab: upb failed over for child-down."""
    charon = CharonStub()
    charon.add_sa("upb@10.77.1.2", children=(("db", "INSTALLED"), ("da", "INSTALLED")))
    charon.add_sa("upa@10.77.2.2", children=(("da", "INSTALLED"),))
    charon.conns.update({"upb@10.77.1.2": {}, "upa@10.77.2.2": {}})
    w = Shared(charon=charon)
    assert w.where("upa") == ("up", GW2, 2) and w.where("upb") == ("up", GW1, 1)
    assert ("terminate-child", 11) in charon.calls
    w.child_down("upb@10.77.1.2", 1, GW1, "da", 11)
    assert w.where("upb") == ("up", GW1, 1) and w.where("upa") == ("up", GW2, 2)
    assert w.notices("tunnel-down", "upb") == []


# --- 5. an operator switch to the gateway being drained --------------------------------------


@pytest.mark.parametrize("shared", [True, False])
def test_a_switch_to_the_gateway_being_drained(shared: bool) -> None:
    """Seen: the switch failed after the connect timeout, although the README says another
    switch ends a drain at once. The drain ends (upa's CHILD_SA in #1 alone when #1 is
    shared), and the switch's CHILD_SA comes up in #1 again (shared) or in a new IKE_SA."""
    w = Shared()
    if shared:
        w.both_in_one()
    else:
        w.new_tunnel("upa", 1, GW1, cid=1)
    switched_away(w, drain_ended=False)
    w.advance(0.5)  # the drain of upa's CHILD_SA in #1 runs until 1 s after the switch
    assert w.status("upa").draining_gateway == GW1
    mark = w.mark()
    w.operator("upa", ev.Switch(GW1))
    assert w.status("upa").draining_gateway is None
    if shared:
        assert w.terminations(mark) == [("terminate-child", 1)]
        w.child_down("upa@10.77.1.2", 1, GW1, "da", 1)
        w.child_up("upa@10.77.1.2", 1, GW1, "da", 4)
        assert w.where("upa") == ("up", GW1, 1)
    else:
        assert w.terminations(mark) == [("terminate", None, 1)]
        w.child_down("upa@10.77.1.2", 1, GW1, "da", 1)
        w.ike_down("upa@10.77.1.2", 1, GW1)
        w.new_tunnel("upa", 3, GW1, cid=4)
        assert w.where("upa") == ("up", GW1, 3)
    w.advance(6.0)
    assert w.notices("switch-failed", "upa") == []
    assert [e["gateway"] for e in w.notices("failover", "upa")] == [GW2, GW1]
    if shared:
        assert w.where("upb") == ("up", GW1, 1)


def test_the_safety_net_s_list_sas_forgets_a_child_sa_whose_end_went_unheard() -> None:
    """A child-rekey lost (or charon older than its subscription): the 30 s list-sas shows
    da{5} where da{1} was; a drain's end then names da{5} alone, not the gone da{1}."""
    w = up_in_one()
    kids = (ob.ChildSaInfo("da", 5, "INSTALLED"), ob.ChildSaInfo("db", 2, "INSTALLED"))
    w.service.events.sync([ob.IkeSaInfo("upa@10.77.1.2", 1, "ESTABLISHED", GW1, children=kids)])
    w.operator("upa", ev.Switch(GW2))
    w.new_tunnel("upa", 2, GW2, cid=6)
    mark = w.mark()
    w.advance(1.1)
    assert w.terminations(mark) == [("terminate-child", 5)]
