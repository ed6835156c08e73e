"""The failover policy against real charon daemons: connect timeout, dead-peer detection by
retransmits, revertive failback with probes and make-before-break, hold/release and switch.

extsock runs as a process next to the lab's ini (as in test_failover.py). What charon does is
observed directly on ini's VICI event stream (`Recorder`), timestamped as it arrives, so the
figures printed here (run with `-s` to see them) are measured, not inferred from extsock's
own account.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from extsock_py.adapters.vici.listener import ViciEventListener
from extsock_py.domain import observations as ob
from extsock_py.lab import netns
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI
from extsock_py.lab.traffic import EchoStream

pytestmark = pytest.mark.integration

GW1, GW2 = "10.99.1.2", "10.99.2.2"
CLONE1, CLONE2 = f"home@{GW1}", f"home@{GW2}"
PROBE1 = f"{CLONE1}~probe"
FAST = """
    connect_timeout = 5s
    dead_after_retransmits = 1
    max_cycles = 3
    backoff {
        initial = 500ms
        maximum = 1s
    }
"""


# --- what ini's charon says, as it says it ------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    at: float
    obs: ob.Observation


class Recorder:
    """ini's charon events (ike-updown, child-updown, log...), each with its arrival time."""

    def __init__(self, lab: Lab) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._listener = ViciEventListener(self._deliver, lab.vici_uri(INI))

    def _deliver(self, obs: ob.Observation) -> None:
        with self._lock:
            self._seen.append(Seen(time.monotonic(), obs))

    def start(self) -> None:
        self._listener.start()
        assert self._listener.wait_ready(5.0), "could not subscribe to ini's events"

    def stop(self) -> None:
        self._listener.stop()

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def child_ups(self, ike: str, since: float = 0.0) -> list[float]:
        return [
            s.at
            for s in self.seen()
            if s.at >= since
            and isinstance(s.obs, ob.ChildUpdown)
            and s.obs.up
            and s.obs.sa.name == ike
        ]

    def child_downs(self, ike: str, since: float = 0.0) -> list[float]:
        return [
            s.at
            for s in self.seen()
            if s.at >= since
            and isinstance(s.obs, ob.ChildUpdown)
            and not s.obs.up
            and s.obs.sa.name == ike
        ]

    def ike_ups(self, ike: str, since: float = 0.0) -> list[float]:
        return [
            s.at
            for s in self.seen()
            if s.at >= since
            and isinstance(s.obs, ob.IkeUpdown)
            and s.obs.up
            and s.obs.sa.name == ike
        ]

    def logs(self, ike: str, starts: str, since: float = 0.0) -> list[float]:
        return [
            s.at
            for s in self.seen()
            if s.at >= since
            and isinstance(s.obs, ob.LogLine)
            and s.obs.ike_name == ike
            and s.obs.message.startswith(starts)
        ]

    def wait_child_up(self, ike: str, since: float, timeout: float) -> float | None:
        """When the first CHILD_SA of `ike` came up after `since` (None: not in `timeout`)."""
        if wait_until(lambda: bool(self.child_ups(ike, since)), timeout, 0.01):
            return self.child_ups(ike, since)[0]
        return None

    def wait_child_down(self, ike: str, since: float, timeout: float) -> float | None:
        if wait_until(lambda: bool(self.child_downs(ike, since)), timeout, 0.01):
            return self.child_downs(ike, since)[0]
        return None


# --- helpers ------------------------------------------------------------------------------------


def ini_sas(lab: Lab) -> dict[str, str]:
    """ini's IKE_SAs: `name#id` -> state."""
    out = {}
    for entry in lab.list_sas(INI):
        for name, sa in entry.items():
            out[f"{name}#{sa.get('uniqueid')}"] = str(sa.get("state"))
    return out


def ini_conns(lab: Lab) -> list[str]:
    with lab.vici_session(INI) as session:
        return [name for conn in session.list_conns() for name in conn]


def only_conn(lab: Lab, name: str) -> Callable[[], bool]:
    return lambda: ini_conns(lab) == [name]


def sas_towards(lab: Lab, ike: str) -> list[str]:
    return [key for key in ini_sas(lab) if key.split("#")[0] == ike]


@pytest.fixture
def recorder(fresh_lab: Lab) -> Iterator[Recorder]:
    rec = Recorder(fresh_lab)
    rec.start()
    yield rec
    rec.stop()


@pytest.fixture
def make_extsock(fresh_lab: Lab) -> Iterator[Callable[[str], ExtsockRunner]]:
    runners: list[ExtsockRunner] = []

    def make(policy: str) -> ExtsockRunner:
        runner = ExtsockRunner(fresh_lab, policy)
        shutil.rmtree(runner.dir, ignore_errors=True)  # no state or log of an earlier test
        runner.write_config()
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


# --- 1. connect timeout -------------------------------------------------------------------------


def test_connect_timeout_terminates_the_half_open_sa_and_moves_on(
    fresh_lab: Lab, recorder: Recorder, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    """segw1 drops IKE; retransmit counting is off: only connect_timeout (2 s) moves on."""
    extsock = make_extsock(
        """
        connect_timeout = 2s
        dead_after_retransmits = 0
        max_cycles = 2
        """
    )
    fresh_lab.fail("segw1", "drop")
    since = time.monotonic()
    extsock.start()
    up = recorder.wait_child_up(CLONE2, since, 8.0)
    assert up is not None, extsock.log_tail()
    initiated = recorder.logs(CLONE1, "initiating IKE_SA", since)
    assert initiated, "no IKE_SA was initiated towards segw1"
    took = up - initiated[0]
    print(f"\nconnect timeout 2s: initiate towards segw1 -> CHILD_SA up on segw2: {took:.3f} s")
    assert 1.9 <= took <= 3.0, took
    # The half-open IKE_SA towards segw1 was force-terminated, and its clone unloaded.
    assert sas_towards(fresh_lab, CLONE1) == [], ini_sas(fresh_lab)
    assert ini_conns(fresh_lab) == [CLONE2]
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    history = extsock.request("history", conn="home")["records"]
    assert history[-1]["from"] == GW1 and history[-1]["to"] == GW2
    assert history[-1]["reason"] == "connect-timeout"
    # Nothing of it comes back later: charon retransmits nothing more towards segw1
    # (its first retransmit would be 4 s after the initiate).
    time.sleep(max(0.0, initiated[0] + 4.5 - time.monotonic()))
    assert recorder.logs(CLONE1, "retransmit", since) == []
    assert sas_towards(fresh_lab, CLONE1) == []
    assert extsock.status()["active_gateway"] == GW2


# --- 2. dead peer by retransmits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lab", "target"),
    [({}, 6.0), ({"retransmit_timeout": 1}, 2.0)],
    indirect=["lab"],
    ids=["charon-defaults", "retransmit-timeout-1s"],
)
def test_dead_peer_by_retransmits_within_the_target(
    fresh_lab: Lab,
    recorder: Recorder,
    make_extsock: Callable[[str], ExtsockRunner],
    target: float,
) -> None:
    """Established on segw1, segw1 fails: CHILD_SA up on segw2 within `target` seconds.

    The fault is placed just after a DPD exchange, the worst moment for an idle tunnel:
    the next DPD leaves a full dpd_delay (1 s) later and its first retransmit one
    retransmit_timeout after that; extsock decides on that retransmit. (With traffic
    flowing, charon sends DPD only after dpd_delay without inbound traffic: measured up to
    ~2.7 s with retransmit_timeout = 1 and ~5.7 s with charon's defaults.)
    """
    conf = (fresh_lab.node_dir(INI) / "strongswan.conf").read_text()
    timeout = fresh_lab.config.retransmit_timeout
    if timeout is None:
        assert "retransmit_timeout" not in conf
    else:
        assert f"retransmit_timeout = {timeout:g}" in conf
    extsock = make_extsock(FAST)
    extsock.start()
    assert recorder.wait_child_up(CLONE1, 0.0, 10.0) is not None, extsock.log_tail()
    settled = time.monotonic() + 1.2  # DPD exchanges going (dpd_delay = 1s)
    assert wait_until(lambda: bool(recorder.logs(CLONE1, "sending DPD", settled)), 5.0, 0.002)
    time.sleep(0.02)  # its answer is in
    fault = time.monotonic()
    fresh_lab.fail("segw1", "link")
    up = recorder.wait_child_up(CLONE2, fault, target + 10.0)
    assert up is not None, extsock.log_tail()
    took = up - fault
    dpd = recorder.logs(CLONE1, "sending DPD request", fault)
    retransmit = recorder.logs(CLONE1, "retransmit 1 of request", fault)
    assert dpd and retransmit, extsock.log_tail()
    what = "charon defaults" if timeout is None else f"retransmit_timeout={timeout:g}"
    print(f"\ndead peer ({what}, dpd_delay=1s): fault -> CHILD_SA up on segw2: {took:.3f} s")
    print(
        f"  (fault 20 ms after a DPD exchange; next DPD at +{dpd[0] - fault:.3f} s, "
        f"its first retransmit at +{retransmit[0] - fault:.3f} s)"
    )
    assert retransmit[0] - fault < target  # the dead-peer decision, within the target
    assert took < target + 0.1, f"{took:.3f} s"  # plus the new IKE_SA (~10 ms)
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    history = extsock.request("history", conn="home")["records"]
    assert history[-1]["reason"] == "retransmit"
    assert sas_towards(fresh_lab, CLONE1) == []


# --- 3. failback to the healed primary -----------------------------------------------------------

FAILBACK = (
    FAST
    + """
    failback {
        enabled = yes
        probe_interval = 1s
        hold_down = 3s
    }
"""
)


def test_failback_probes_then_switches_back_make_before_break(
    fresh_lab: Lab, recorder: Recorder, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    extsock = make_extsock(FAILBACK)
    extsock.start()
    assert recorder.wait_child_up(CLONE1, 0.0, 10.0) is not None, extsock.log_tail()
    fresh_lab.fail("segw1", "link")
    assert recorder.wait_child_up(CLONE2, 0.0, 10.0) is not None, extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    # Probes towards the dead primary fail and leave nothing behind.
    time.sleep(3.0)
    assert extsock.status()["active_gateway"] == GW2
    healed = time.monotonic()
    fresh_lab.heal("segw1")
    # The first probe that answers: a childless IKE_SA, no CHILD_SA anywhere.
    assert wait_until(lambda: bool(recorder.ike_ups(PROBE1, healed)), 10.0), extsock.log_tail()
    first_probe = recorder.ike_ups(PROBE1, healed)[0]
    stream = EchoStream(fresh_lab, period=0.02, duration=7.0).start()
    try:
        back = recorder.wait_child_up(CLONE1, healed, 10.0)
        assert back is not None, extsock.log_tail()
        result = stream.wait()
    finally:
        stream.stop()
    assert recorder.child_ups(PROBE1) == [], "a probe installed a CHILD_SA"
    probes = recorder.ike_ups(PROBE1, healed)
    # Make-before-break: the CHILD_SA via segw1 is up before the one via segw2 goes.
    gone = recorder.wait_child_down(CLONE2, healed, 5.0)
    assert gone is not None, extsock.log_tail()
    gap, gap_at = result.longest_gap()
    print(
        f"\nfailback: first probe answered {first_probe - healed:.3f} s after heal, "
        f"{len(probes)} probes, switch {back - first_probe:.3f} s after the first probe "
        f"(hold_down 3s); CHILD_SA via segw1 up {gone - back:.3f} s before the one via segw2 "
        f"went; traffic every 20 ms: {result.sent} sent, {result.lost()} lost, "
        f"longest gap {gap * 1000:.0f} ms at {gap_at - back:+.3f} s from the switch"
    )
    assert back < gone
    assert 3.0 <= back - first_probe < 6.0
    assert result.tags() == ["segw2", "segw1"], result.tags()
    assert gap < 1.0, gap
    assert extsock.status()["active_gateway"] == GW1
    history = extsock.request("history", conn="home")["records"]
    assert history[-1]["from"] == GW2 and history[-1]["to"] == GW1
    assert history[-1]["reason"] == "failback"
    # The probe is torn down: no `~probe` conn or SA is left in ini; only the clone remains.
    assert wait_until(only_conn(fresh_lab, CLONE1), 3.0), ini_conns(fresh_lab)
    assert not [sa for sa in ini_sas(fresh_lab) if "~probe" in sa], ini_sas(fresh_lab)
    assert sas_towards(fresh_lab, CLONE2) == []
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"


# --- 4. the operator: hold, release, switch -------------------------------------------------------


def test_hold_keeps_a_dead_gateway_until_release(
    fresh_lab: Lab, recorder: Recorder, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    extsock = make_extsock(FAST)
    extsock.start()
    assert recorder.wait_child_up(CLONE1, 0.0, 10.0) is not None, extsock.log_tail()
    assert extsock.request("hold", conn="home")["changed"] is True
    assert extsock.status()["held"] is True
    fault = time.monotonic()
    fresh_lab.fail("segw1", "link")
    # segw1 is declared dead (first retransmit, ~4-5 s with charon's defaults) but not left.
    assert extsock.wait_phase("down", 10.0), extsock.log_tail()
    status = extsock.status()
    assert status["held"] is True and status["active_gateway"] is None
    assert status["failures_total"] == 1
    assert not wait_until(lambda: bool(recorder.logs(CLONE2, "initiating", fault)), 3.0)
    assert extsock.status()["phase"] == "down"
    assert CLONE2 not in ini_conns(fresh_lab)
    assert sas_towards(fresh_lab, CLONE1) == []  # the dead SA was cleared all the same
    released = time.monotonic()
    assert extsock.request("release", conn="home")["changed"] is True
    up = recorder.wait_child_up(CLONE2, released, 5.0)
    assert up is not None, extsock.log_tail()
    print(f"\nhold: no failover while held; release -> CHILD_SA up on segw2: {up - released:.3f} s")
    assert extsock.wait_phase("up", 2.0)
    assert extsock.status()["active_gateway"] == GW2
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    assert ini_conns(fresh_lab) == [CLONE2]


def test_operator_switch_and_back_is_make_before_break(
    fresh_lab: Lab, recorder: Recorder, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    extsock = make_extsock(FAST)
    extsock.start()
    assert recorder.wait_child_up(CLONE1, 0.0, 10.0) is not None, extsock.log_tail()
    figures = []
    for to, new, old, tag in ((GW2, CLONE2, CLONE1, "segw2"), (None, CLONE1, CLONE2, "segw1")):
        stream = EchoStream(fresh_lab, period=0.02, duration=2.0).start()
        try:
            time.sleep(0.5)
            asked = time.monotonic()
            fields = {"to": to} if to is not None else {}
            assert extsock.request("switch", conn="home", **fields)["changed"] is True
            up = recorder.wait_child_up(new, asked, 5.0)
            assert up is not None, extsock.log_tail()
            gone = recorder.wait_child_down(old, asked, 5.0)
            assert gone is not None, extsock.log_tail()
            result = stream.wait()
        finally:
            stream.stop()
        assert up < gone  # the new CHILD_SA is installed before the old one goes
        gap, _ = result.longest_gap()
        figures.append(
            f"-> {tag}: up in {up - asked:.3f} s, old went {gone - up:.3f} s later, "
            f"{result.lost()}/{result.sent} lost, longest gap {gap * 1000:.0f} ms"
        )
        assert result.tags()[-1] == tag, result.tags()
        assert gap < 1.0, gap
        assert wait_until(only_conn(fresh_lab, new), 3.0), ini_conns(fresh_lab)
    print("\noperator switch: " + "; ".join(figures))
    history = extsock.request("history", conn="home")["records"]
    assert [(r["to"], r["reason"]) for r in history[-2:]] == [(GW2, "operator"), (GW1, "operator")]


# --- MOBIKE: charon's own reaction to a lost local path ----------------------------------------


def test_local_link_loss_is_a_failure_though_mobike_defers(
    fresh_lab: Lab, recorder: Recorder, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    """ini's own link towards segw1 goes down: with MOBIKE, charon finds no route, logs
    `no route found to reach ..., MOBIKE update deferred` and then sends nothing at all
    (no DPD, no retransmit) and keeps the SA indefinitely: extsock must move on that line."""
    extsock = make_extsock(FAST)
    extsock.start()
    assert recorder.wait_child_up(CLONE1, 0.0, 10.0) is not None, extsock.log_tail()
    fault = time.monotonic()
    netns.set_link(fresh_lab.namespace(INI), fresh_lab.config.link("segw1").ini_if, up=False)
    up = recorder.wait_child_up(CLONE2, fault, 10.0)
    assert up is not None, extsock.log_tail()
    assert recorder.logs(CLONE1, "no route found to reach", fault)
    print(
        f"\nini's link to segw1 down (MOBIKE deferred): CHILD_SA up on segw2 in {up - fault:.3f}s"
    )
    assert up - fault < 2.0
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    assert sas_towards(fresh_lab, CLONE1) == []
    assert extsock.request("history", conn="home")["records"][-1]["reason"] == "no-route"


def test_mobike_path_probing_to_a_dead_gateway_counts_as_retransmits(
    fresh_lab: Lab, recorder: Recorder, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    """ini's link towards segw1 goes down but another route to segw1 exists (through the link
    to segw2, where nothing answers for segw1): charon roams and probes the new path every 2.5 s
    (`path probing attempt N`, no `retransmit` lines) and gives up only after ~25 s."""
    ini_ns = fresh_lab.namespace(INI)
    detour = ["10.99.1.0/24", "dev", fresh_lab.config.link("segw2").ini_if, "metric", "500"]
    netns.run(netns.ns_argv(ini_ns, ["ip", "route", "add", *detour]))
    try:
        _probe_a_dead_path(fresh_lab, recorder, make_extsock)
    finally:
        fresh_lab.heal(INI)
        netns.run(netns.ns_argv(ini_ns, ["ip", "route", "del", *detour]), check=False)


def _probe_a_dead_path(
    fresh_lab: Lab, recorder: Recorder, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    ini_ns = fresh_lab.namespace(INI)
    extsock = make_extsock(FAST)
    extsock.start()
    assert recorder.wait_child_up(CLONE1, 0.0, 10.0) is not None, extsock.log_tail()
    fault = time.monotonic()
    netns.set_link(ini_ns, fresh_lab.config.link("segw1").ini_if, up=False)
    up = recorder.wait_child_up(CLONE2, fault, 15.0)
    assert up is not None, extsock.log_tail()
    probing = recorder.logs(CLONE1, "path probing attempt", fault)
    print(
        f"\nini's link to segw1 down, MOBIKE path probing via segw2's link: CHILD_SA up on "
        f"segw2 in {up - fault:.3f} s"
    )
    assert probing, "charon did not probe a new path"
    assert up - fault < 5.0
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    assert sas_towards(fresh_lab, CLONE1) == []
