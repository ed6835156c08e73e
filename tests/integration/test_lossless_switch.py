"""Lossless switches against real charon daemons (issue 18, part 3): a UDP stream of 200
datagrams/s with sequence numbers goes from ini's protected address to a counting echo
behind each gateway, through 10 operator switches and 10 failbacks; no datagram may be
lost, counted in each direction on its own (ini -> far end, far end -> ini).

The far end answers 50 ms after it received (a host 50 ms behind the gateway): answers
to what reached the old gateway just before a switch come back through the old tunnel,
which is where a switch that drops the old tunnel at once loses them (the baseline test
below shows that the stream sees those losses).

On the kernel's IPsec (``dataplane`` xfrm, in the VM) the lossless switch needs route-based
clones (policy ``clone_if_id_base``, charon's updown with extsock's xfrmi-updown.sh): with
one policy pair shared by all clones, the inbound template follows the newest SA and the
kernel drops what still comes back through the old gateway (``XfrmInTmplMismatch``), drain
or not; the last test shows it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from importlib.resources import files

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.seqstream import SeqStream, StreamResult
from extsock_py.lab.topology import INI
from tests.integration.resilience_support import FAST_POLICY, GW1, GW2, runner_tag

pytestmark = pytest.mark.integration

PERIOD = 0.005  # 200 datagrams/s
FAR_DELAY = 0.05
# Failback as soon as the primary answers a probe, the first probe 1.5 s after a switch
# (past the old tunnel's drain of 1 s: a failback during a drain would end it early).
FAILBACK = """
    failback {
        enabled = yes
        probe_interval = 1500ms
        probe_timeout = 2s
        hold_down = 0s
    }
"""


# On XFRM (emulated): a drain that outlasts charon's updown script under emulation, a failback
# probe after it, and 5 cycles by default (the CI's budget for the VM).
XFRM_TIMING = "    switch_drain = 5s\n" + FAILBACK.replace(
    "probe_interval = 1500ms", "probe_interval = 6s"
)
XFRM_SETTLE = 5.5
XFRM_CYCLES = int(os.environ.get("EXTSOCK_XFRM_SWITCH_CYCLES") or 5)
# The [xfrm] run of the lossless test is not in the default run yet: it passed 3 times in the
# VM (5 + 5 alone, 10 + 10 alone, 5 + 5 in a full [xfrm] session; 0 lost) and failed once in a
# full session (392 out, 1059 back, a gap of 8.5 s: not understood yet).
# EXTSOCK_XFRM_LOSSLESS=1 adds it.
LOSSLESS_PLANES = (
    ("libipsec", "xfrm") if os.environ.get("EXTSOCK_XFRM_LOSSLESS") == "1" else ("libipsec",)
)
# Route-based clones: each clone its own XFRM interface ID, the route moved by charon's updown.
ROUTE_BASED = "    clone_if_id_base = 100\n"
UPDOWN = str(files("extsock_py") / "data" / "xfrmi-updown.sh")


def emulated(policy: str, xfrm: bool) -> str:
    """In the XFRM VM (emulated, 10-30x slower) a connect takes 2-5 s: 5 s is too short."""
    return policy.replace("connect_timeout = 5s", "connect_timeout = 20s") if xfrm else policy


def with_updown(text: str) -> str:
    """ini's swanctl.conf with extsock's updown script on the child `net`."""
    return text.replace("start_action = none", f"start_action = none\n{' ' * 16}updown = {UPDOWN}")


def tmpl_mismatch(lab: Lab) -> int:
    """ini's XfrmInTmplMismatch: inbound ESP dropped because no inbound policy's template
    matched the SA it came through (the kernel's count, /proc/net/xfrm_stat)."""
    text = lab.ns_exec(INI, ["cat", "/proc/net/xfrm_stat"], check=True).stdout
    match = re.search(r"XfrmInTmplMismatch\s+(\d+)", text)
    assert match, text
    return int(match.group(1))


@pytest.fixture
def make_extsock(
    fresh_lab: Lab, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ExtsockRunner]]:
    runners: list[ExtsockRunner] = []

    def make(policy: str, route_based: bool = False) -> ExtsockRunner:
        runner = ExtsockRunner(
            fresh_lab,
            policy + (ROUTE_BASED if route_based else ""),
            name=f"ls-{runner_tag(request)}-{len(runners)}",
            conf_transform=with_updown if route_based else None,
        )
        runner.write_config()
        runner.start()
        runners.append(runner)
        return runner

    try:
        yield make
    finally:
        for runner in runners:
            runner.stop()


def on(extsock: ExtsockRunner, gateway: str, timeout: float = 10.0) -> bool:
    def there() -> bool:
        row = extsock.status()
        return bool(row["phase"] == "up" and row["active_gateway"] == gateway)

    return wait_until(there, timeout, interval=0.02)


def cycles(extsock: ExtsockRunner, n: int, settle: float, wait: float = 20.0) -> None:
    """n times: the operator switches to segw2, the failback brings the tunnel back."""
    for k in range(n):
        assert extsock.request("switch", conn="home", to=GW2)["changed"] is True, k
        assert on(extsock, GW2, wait), extsock.log_tail()
        assert on(extsock, GW1, wait), extsock.log_tail()  # the failback
        time.sleep(settle)  # the failback's drain ends before the next switch


def describe(result: StreamResult) -> str:
    out, back = result.longest_gap("out"), result.longest_gap("back")
    return (
        f"{len(result.sent)} sent, lost ini->far {len(result.lost_out())}, "
        f"far->ini {len(result.lost_back())}, longest gap out {out * 1000:.0f} ms, "
        f"back {back * 1000:.0f} ms"
    )


@pytest.mark.parametrize("dataplane", LOSSLESS_PLANES)
def test_ten_switches_and_ten_failbacks_lose_no_datagram(
    fresh_lab: Lab, make_extsock: Callable[..., ExtsockRunner], dataplane: str
) -> None:
    """On XFRM with route-based clones: each clone its own policies, both take inbound.

    There the route moves when charon's updown script has run, after charon reported the
    new CHILD_SA up; the drain must outlast that script: milliseconds on hardware, up to
    seconds under the VM's emulation, hence its longer drain (and failback probe, which
    must not come during a drain) and fewer cycles (EXTSOCK_XFRM_SWITCH_CYCLES)."""
    xfrm = dataplane == "xfrm"
    n = XFRM_CYCLES if xfrm else 10
    policy = emulated(FAST_POLICY, xfrm) + (XFRM_TIMING if xfrm else FAILBACK)
    extsock = make_extsock(policy, route_based=xfrm)
    assert on(extsock, GW1, 30.0 if xfrm else 10.0), extsock.log_tail()
    mismatch = tmpl_mismatch(fresh_lab) if xfrm else 0
    stream = SeqStream(fresh_lab, PERIOD, duration=40.0 * n, far_delay=FAR_DELAY).start()
    try:
        time.sleep(0.5)
        cycles(extsock, n, settle=XFRM_SETTLE if xfrm else 1.3)
    finally:
        result = stream.stop()
    print(f"\n[{dataplane}] {n} switches + {n} failbacks: {describe(result)}")
    if xfrm:
        print(f"XfrmInTmplMismatch +{tmpl_mismatch(fresh_lab) - mismatch}")
        assert tmpl_mismatch(fresh_lab) == mismatch
    history = extsock.request("history", conn="home")["records"]
    reasons = [r["reason"] for r in history if r.get("result") == "up"]
    assert reasons[-2 * n :] == ["operator", "failback"] * n, reasons
    assert result.carriers() == ["segw1", "segw2"] * n + ["segw1"], result.carriers()
    assert len(result.sent) > 2 * n * 2 / PERIOD * 0.5  # the stream ran through it all
    assert result.lost_out() == [], result.lost_out()
    assert result.lost_back() == [], result.lost_back()


def test_without_a_drain_answers_on_their_way_back_are_lost(
    fresh_lab: Lab, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    """The baseline: switch_drain = 0 (the old tunnel goes as the new one is up)."""
    extsock = make_extsock(FAST_POLICY + FAILBACK + "    switch_drain = 0\n")
    assert on(extsock, GW1), extsock.log_tail()
    stream = SeqStream(fresh_lab, PERIOD, duration=60.0, far_delay=FAR_DELAY).start()
    try:
        time.sleep(0.5)
        cycles(extsock, 3, settle=0.3)
    finally:
        result = stream.stop()
    print(f"\n3 switches + 3 failbacks, switch_drain 0: {describe(result)}")
    assert result.carriers() == ["segw1", "segw2"] * 3 + ["segw1"], result.carriers()
    assert len(result.lost_back()) > 0


def test_the_drain_shows_in_status_while_the_old_tunnel_stays(
    fresh_lab: Lab, make_extsock: Callable[[str], ExtsockRunner]
) -> None:
    extsock = make_extsock(FAST_POLICY + "    switch_drain = 4s\n")
    assert on(extsock, GW1), extsock.log_tail()
    old_ike = extsock.status()["ike_id"]
    assert extsock.request("switch", conn="home", to=GW2)["changed"] is True
    assert on(extsock, GW2), extsock.log_tail()
    drain = extsock.status()["draining"]
    assert isinstance(drain, dict), drain
    assert (drain["gateway"], drain["ike_id"]) == (GW1, old_ike)
    assert 0.0 < drain["in"] <= 4.0 and drain["until"] > time.time()
    assert fresh_lab.child_installed("segw1")  # charon still has the old tunnel
    # At its end the old tunnel goes, and so does the drain from status.
    assert wait_until(lambda: extsock.status()["draining"] is None, 8.0), extsock.log_tail()
    assert wait_until(lambda: not fresh_lab.child_installed("segw1"), 5.0)


@pytest.mark.parametrize("dataplane", ["xfrm"])
def test_on_xfrm_a_shared_policy_drops_what_comes_back_through_the_old_gateway(
    fresh_lab: Lab, make_extsock: Callable[..., ExtsockRunner], dataplane: str
) -> None:
    """The baseline on the kernel's IPsec: without route-based clones (the default), the one
    inbound policy's template names the newest gateway, and the drain does not help."""
    extsock = make_extsock(emulated(FAST_POLICY, True) + FAILBACK)
    assert on(extsock, GW1, 30.0), extsock.log_tail()
    mismatch = tmpl_mismatch(fresh_lab)
    stream = SeqStream(fresh_lab, PERIOD, duration=120.0, far_delay=FAR_DELAY).start()
    try:
        time.sleep(0.5)
        cycles(extsock, 2, settle=1.3)
    finally:
        result = stream.stop()
    dropped = tmpl_mismatch(fresh_lab) - mismatch
    print(f"\n[xfrm, shared policy] 2 switches + 2 failbacks: {describe(result)}")
    print(f"XfrmInTmplMismatch +{dropped}")
    assert result.carriers() == ["segw1", "segw2"] * 2 + ["segw1"], result.carriers()
    assert len(result.lost_back()) > 0 and dropped > 0
