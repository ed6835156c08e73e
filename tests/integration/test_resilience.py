"""Restarts, signals and bad files against real charon daemons; extsock runs as a process.

- charon restarts (SIGKILL, then started again): extsock keeps running, reports charon
  unreachable, reconnects, reloads connections and secrets and brings the tunnel back.
- extsock restarts (SIGKILL): the new process adopts the tunnel (same IKE_SA, no lost
  datagram at 20 ms), unloads stale clones, and reads its persisted state back.
- SIGTERM/SIGINT, --down-on-exit, SIGHUP with a good and a bad file, a bad file at start.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections.abc import Iterator

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI
from extsock_py.lab.traffic import EchoStream
from tests.integration.resilience_support import (
    FAST_POLICY,
    GW1,
    GW2,
    SocketWatch,
    charon_requests,
    conn_names,
    ike_sas,
    installed_on_ini,
)

pytestmark = pytest.mark.integration

POLICY = FAST_POLICY
CHARON_BACK_TARGET = 3.0  # s from ini's VICI socket back to the CHILD_SA installed


def new_runner(lab: Lab, *extra_args: str, name: str = "extsock") -> ExtsockRunner:
    """A runner with no state left by an earlier test (the lab's state dir is per module)."""
    runner = ExtsockRunner(lab, POLICY, name=name, extra_args=extra_args)
    shutil.rmtree(runner.dir, ignore_errors=True)
    runner.write_config()
    return runner


@pytest.fixture
def extsock(fresh_lab: Lab) -> Iterator[ExtsockRunner]:
    runner = new_runner(fresh_lab)
    yield runner
    runner.stop()


def reachable(runner: ExtsockRunner) -> bool:
    return bool(runner.request("status")["charon_reachable"])


# --- charon restarts ------------------------------------------------------------------------


def restart_ini_and_time_the_tunnel(lab: Lab, runner: ExtsockRunner) -> float:
    """Start ini's charon; seconds from its VICI socket accepting to the CHILD_SA installed."""
    watch = SocketWatch(lab.vici_path(INI))
    lab.start(INI)
    back_at = watch.wait()
    assert back_at is not None
    assert wait_until(lambda: installed_on_ini(lab, "home") is not None, 10.0, 0.01), (
        runner.log_tail()
    )
    return time.monotonic() - back_at


def test_charon_restart_brings_the_tunnel_back(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    extsock.start()
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0)
    before = installed_on_ini(fresh_lab, "home")
    assert before is not None and before[1] == GW1

    fresh_lab.kill(INI)
    assert wait_until(lambda: not reachable(extsock), 5.0), extsock.log_tail()
    assert extsock.alive()
    assert "charon unreachable" in extsock.log_text()

    took = restart_ini_and_time_the_tunnel(fresh_lab, extsock)
    print(f"\ncharon restart: VICI socket back -> CHILD_SA installed in {took:.3f} s")
    assert took <= CHARON_BACK_TARGET, extsock.log_tail()
    for n in range(2, 4):  # more samples: the listener's backoff phase varies
        fresh_lab.kill(INI)
        assert wait_until(lambda: not reachable(extsock), 5.0), extsock.log_tail()
        time.sleep(0.5 * n)
        took = restart_ini_and_time_the_tunnel(fresh_lab, extsock)
        print(f"charon restart {n} (away {0.5 * n:.1f} s): back -> installed in {took:.3f} s")
        assert took <= CHARON_BACK_TARGET, extsock.log_tail()

    assert extsock.alive()
    assert wait_until(lambda: reachable(extsock), 5.0)
    assert extsock.wait_phase("up", 5.0)
    # The new charon knows nothing: secrets and the clone were loaded again.
    assert charon_requests(fresh_lab, INI, "load-shared") >= 1
    assert conn_names(fresh_lab) == [f"home@{GW1}"]
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw1"
    assert "charon is back" in extsock.log_text()


def test_charon_restart_twice_and_a_long_outage(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    """charon away for 4 s (the listener backs off), then a quick second restart."""
    extsock.start()
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0)
    fresh_lab.kill(INI)
    time.sleep(4.0)
    assert extsock.alive() and not reachable(extsock)
    fresh_lab.start(INI)
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 5.0), (
        extsock.log_tail()
    )
    fresh_lab.kill(INI)
    fresh_lab.start(INI)
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 5.0), (
        extsock.log_tail()
    )
    assert extsock.wait_phase("up", 5.0)
    assert conn_names(fresh_lab) == [f"home@{GW1}"]
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw1"
    assert extsock.log_text().count("charon is back") >= 2


# --- extsock restarts -----------------------------------------------------------------------


def test_kill9_of_extsock_adopts_the_tunnel_without_loss(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    extsock.start()
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0)
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
    assert extsock.wait_phase("up", 5.0)
    extsock.request("hold", conn="home")
    history = extsock.request("history", conn="home")["records"]
    assert history and history[-1]["to"] == GW2
    failures = extsock.status()["failures_total"]
    up = installed_on_ini(fresh_lab, "home")
    assert up is not None and up[1] == GW2
    # A stale clone with no SA, as a crash in the middle of a switch could leave.
    with fresh_lab.vici_session(INI) as session:
        session.load_conn(
            {
                f"home@{GW1}": {
                    "version": "2",
                    "remote_addrs": [GW1],
                    "local": {"auth": "psk"},
                    "remote": {"auth": "psk"},
                    "children": {"net": {"local_ts": ["10.100.0.0/24"]}},
                }
            }
        )
    assert conn_names(fresh_lab) == sorted([f"home@{GW1}", f"home@{GW2}"])
    terminates = charon_requests(fresh_lab, INI, "terminate")
    initiates = charon_requests(fresh_lab, INI, "initiate")

    traffic = EchoStream(fresh_lab, period=0.02, duration=4.0).start()
    try:
        time.sleep(1.0)
        extsock.kill9()
        began = time.monotonic()
        extsock.start()
        print(f"\nextsock restart: new process answering in {time.monotonic() - began:.3f} s")
        result = traffic.wait()
    finally:
        traffic.stop()
    print(f"traffic across the restart: sent={result.sent} lost={result.lost()}")

    assert result.lost() == 0 and result.sent >= 150, result
    assert {answer.gateway for answer in result.answers} == {"segw2"}
    assert installed_on_ini(fresh_lab, "home") == up  # same IKE_SA unique id
    assert charon_requests(fresh_lab, INI, "terminate") == terminates
    assert charon_requests(fresh_lab, INI, "initiate") == initiates
    assert conn_names(fresh_lab) == [f"home@{GW2}"]  # the stale clone is gone
    status = extsock.status()
    assert status["phase"] == "up" and status["active_gateway"] == GW2
    assert status["ike_id"] == up[0]
    assert status["held"] is True  # held before the restart: still held
    assert status["failures_total"] == failures
    assert extsock.request("history", conn="home")["records"] == history
    assert "adopted the tunnel up on 10.99.2.2" in extsock.log_text()


# --- signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_leaves_the_tunnel_up(
    fresh_lab: Lab, extsock: ExtsockRunner, signum: int
) -> None:
    extsock.start()
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0)
    up = installed_on_ini(fresh_lab, "home")
    assert extsock.process is not None
    began = time.monotonic()
    extsock.process.send_signal(signum)
    code = extsock.process.wait(5.0)
    took = time.monotonic() - began
    print(f"\n{signal.Signals(signum).name}: exited {code} in {took:.3f} s")
    assert code == 0 and took < 2.0
    assert installed_on_ini(fresh_lab, "home") == up
    assert conn_names(fresh_lab) == [f"home@{GW1}"]
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"


def test_down_on_exit_brings_tunnels_down(fresh_lab: Lab) -> None:
    runner = new_runner(fresh_lab, "--down-on-exit")
    runner.start()
    try:
        assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0)
        assert runner.process is not None
        began = time.monotonic()
        runner.process.send_signal(signal.SIGTERM)
        code = runner.process.wait(5.0)
        took = time.monotonic() - began
        print(f"\nSIGTERM with --down-on-exit: exited {code} in {took:.3f} s")
        assert code == 0 and took < 2.0
        assert wait_until(lambda: ike_sas(fresh_lab) == [], 3.0), ike_sas(fresh_lab)
        assert conn_names(fresh_lab) == []
        assert wait_until(lambda: not fresh_lab.child_installed("segw1"), 3.0)
    finally:
        runner.stop()


def test_sighup_reloads_policy_and_new_connection(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    extsock.start()
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0)
    up = installed_on_ini(fresh_lab, "home")
    text = extsock.conf.read_text()
    text = text.replace("connect_timeout = 5s", "connect_timeout = 7s")
    text = text.replace("max_cycles = 2", "max_cycles = 3")
    # A second managed connection (towards the same gateways, other traffic selectors).
    second = re.sub(r"\bhome\b", "work", _connection_block(text)).replace(
        "10.100.0.0/24", "10.101.0.0/24"
    )
    text = text.replace("connections {", "connections {\n" + second, 1)
    extsock.conf.write_text(text)
    assert extsock.process is not None
    extsock.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reloaded" in extsock.log_text(), 5.0), extsock.log_tail()
    rows = {r["connection"]: r for r in extsock.request("status")["connections"]}
    assert set(rows) == {"home", "work"}
    assert wait_until(lambda: f"work@{GW1}" in conn_names(fresh_lab), 5.0)
    assert installed_on_ini(fresh_lab, "home") == up  # untouched by the reload
    log = extsock.log_text()
    assert "home: policy changed: connect_timeout 5.0 -> 7.0, max_cycles 2 -> 3" in log, log


def test_sighup_with_a_bad_file_keeps_config_and_tunnel(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    extsock.start()
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0)
    up = installed_on_ini(fresh_lab, "home")
    lines = extsock.conf.read_text().splitlines()
    lines.insert(5, "        = broken")
    extsock.conf.write_text("\n".join(lines) + "\n")
    assert extsock.process is not None
    extsock.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload refused" in extsock.log_text(), 5.0), extsock.log_tail()
    refused = next(ln for ln in extsock.log_text().splitlines() if "reload refused" in ln)
    assert f"{extsock.conf}:" in refused  # file and line
    assert re.search(rf"{re.escape(str(extsock.conf))}:\d+", refused), refused
    assert extsock.alive()
    assert extsock.status()["phase"] == "up"
    assert installed_on_ini(fresh_lab, "home") == up
    assert conn_names(fresh_lab) == [f"home@{GW1}"]


def test_run_with_a_bad_file_fails_before_touching_charon(fresh_lab: Lab) -> None:
    runner = new_runner(fresh_lab, name="badfile")
    runner.conf.write_text(runner.conf.read_text().replace("connections {", "connections {{", 1))
    before = {c: charon_requests(fresh_lab, INI, c) for c in ("load-conn", "load-shared")}
    with pytest.raises(RuntimeError, match="exited with 1"):
        runner.start(timeout=10.0)
    assert runner.process is not None and runner.process.returncode == 1
    assert str(runner.conf) in runner.log_text()
    after = {c: charon_requests(fresh_lab, INI, c) for c in ("load-conn", "load-shared")}
    assert after == before
    assert conn_names(fresh_lab) == []
    # The same check sees a good start's commands (it is not blind).
    runner.write_config()
    runner.start()
    try:
        assert wait_until(lambda: charon_requests(fresh_lab, INI, "load-conn") > 0, 5.0)
        assert charon_requests(fresh_lab, INI, "load-shared") > before["load-shared"]
    finally:
        runner.stop()


def _connection_block(text: str) -> str:
    """The `home { ... }` block of the connections section."""
    start = text.index("    home {")
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1] + "\n"
    raise AssertionError("no home block")
