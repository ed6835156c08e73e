"""Record the golden scenarios from the lab (root; real charon daemons, real extsock).

    EXTSOCK_LAB_PREFIX=xyz- python -m tests.golden.record [--charon RELEASE] [SCENARIO ...]

For each scenario: a lab of three gateways, extsock running as users run it, an independent
listener on ini's VICI socket keeping every event with its arrival time; the scenario's
steps; then the events extsock reacts to (charon's ike/child events, alerts where the release
has them, and the log lines its dialect reads) are written as input lines, and the replay
writes the transcript. Review the diff before committing it.

`--charon` names the Debian release ini's charon comes from (extsock_py/lab/releases.py;
the gateways keep the host's): `bookworm` (the host's 5.9.8, the default) writes
`tests/golden/<scenario>.ci`, another writes `<scenario>-<version>.ci`. The transcript's
`charon VERSION` line is what ini's charon answered to `version`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extsock_py.adapters.vici.decode import decode_event
from extsock_py.adapters.vici.dialects import DialectReader, choose
from extsock_py.bench.watch import EventWatch
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.releases import DEFAULT_RELEASE, RELEASES, release
from extsock_py.lab.topology import INI, LabConfig
from extsock_py.usecases.event_usecase import EventUsecase
from tests.golden.replay import HERE, replay
from tests.integration.test_topologies import (
    GW1,
    GW2,
    GW3,
    POLICY,
    UPB_SRC,
    two_connections,
    two_gateways,
)

EVENTS = ("ike-updown", "child-updown", "ike-rekey", "ike-update", "child-rekey", "log")


@dataclass
class Run:
    lab: Lab
    runner: ExtsockRunner
    marks: list[tuple[float, str]] = field(default_factory=list)

    def operator(self, command: str, conn: str, to: str | None = None) -> None:
        self.marks.append((time.monotonic(), f"{command} {conn}" + (f" {to}" if to else "")))
        self.runner.request(command, conn=conn, **({"to": to} if to else {}))

    def up(self, gateway: str, conn: str = "home", timeout: float = 20.0) -> None:
        def there() -> bool:
            row = self.runner.status(conn)
            return bool(row["phase"] == "up" and row["active_gateway"] == gateway)

        if not wait_until(there, timeout):
            raise RuntimeError(f"{conn} not up on {gateway}:\n{self.runner.log_tail()}")


def s_failover(run: Run) -> None:
    run.up(GW1)
    run.lab.fail("segw1", "link")
    run.up(GW2)


def s_switch(run: Run) -> None:
    run.up(GW1)
    run.operator("switch", "home", GW2)
    run.up(GW2)
    wait_until(lambda: not run.lab.child_installed("segw1"), 5.0)


def _standby_up_on(run: Run, gateway: str) -> bool:
    return bool(run.runner.status().get("hot_standby") == {"gateway": gateway, "phase": "up"})


def s_standby_delete(run: Run) -> None:
    run.up(GW1)
    if not wait_until(lambda: _standby_up_on(run, GW2), 10.0):
        raise RuntimeError(f"no standby on segw2:\n{run.runner.log_tail()}")
    name = next(iter(run.lab.list_sas("segw1")[0]))
    run.lab.swanctl("segw1", "--terminate", "--ike", name, "--timeout", "5")
    run.up(GW2)
    wait_until(lambda: _standby_up_on(run, GW3), 10.0)


def s_standby_silent(run: Run) -> None:
    run.up(GW1)
    if not wait_until(lambda: _standby_up_on(run, GW2), 10.0):
        raise RuntimeError(f"no standby on segw2:\n{run.runner.log_tail()}")
    run.lab.fail("segw1", "link")
    run.up(GW2)
    wait_until(lambda: _standby_up_on(run, GW3), 10.0)


def s_rekey(run: Run) -> None:
    run.up(GW1)
    ike_id = run.runner.status()["ike_id"]
    run.lab.swanctl(INI, "--rekey", "--ike-id", str(ike_id))
    wait_until(lambda: run.runner.status()["ike_id"] != ike_id, 5.0)


def s_redirect(run: Run) -> None:
    run.up(GW1)
    run.lab.swanctl("segw1", "--redirect", "--ike", "lab-ini", "--gateway", GW3)
    run.up(GW3)
    wait_until(lambda: not run.lab.child_installed("segw1"), 5.0)


def s_reuse(run: Run) -> None:
    run.up(GW1)
    run.up(GW1, "upb")
    time.sleep(6.0)  # past connect_timeout: nothing may move
    run.lab.fail("segw1", "link")
    run.up(GW2)
    run.up(GW2, "upb")


def _installed_ids(run: Run, child: str) -> list[int]:
    return [
        int(kid["uniqueid"])
        for entry in run.lab.list_sas(INI)
        for ike in entry.values()
        for kid in (ike.get("child-sas") or {}).values()
        if kid.get("name") == child and kid.get("state") == "INSTALLED"
    ]


def _children_on(run: Run, node: str) -> int:
    return sum(
        kid.get("state") == "INSTALLED"
        for entry in run.lab.list_sas(node)
        for ike in entry.values()
        for kid in (ike.get("child-sas") or {}).values()
    )


def s_reuse_child_rekey(run: Run) -> None:
    run.up(GW1)
    run.up(GW1, "upb")
    (old,) = _installed_ids(run, "net")
    run.lab.swanctl(INI, "--rekey", "--child-id", str(old))
    if not wait_until(lambda: _installed_ids(run, "net") not in ([], [old]), 5.0):
        raise RuntimeError(f"home's CHILD_SA {old} not rekeyed: {run.lab.list_sas(INI)}")
    run.operator("switch", "home", GW2)
    run.up(GW2)
    wait_until(lambda: _children_on(run, "segw1") == 1, 5.0)  # upb's alone, after the drain


def s_reuse_switch_back(run: Run) -> None:
    run.up(GW1)
    run.up(GW1, "upb")
    run.operator("switch", "home", GW2)
    run.up(GW2)
    wait_until(lambda: _children_on(run, "segw1") == 1, 5.0)  # upb's alone, after the drain
    run.operator("switch", "home", GW1)
    run.up(GW1)
    wait_until(lambda: _children_on(run, "segw2") == 0, 5.0)  # after the drain at segw2


@dataclass(frozen=True)
class Scenario:
    about: str
    conns: tuple[tuple[str, str, tuple[str, ...]], ...]
    transform: Callable[[str], str]
    steps: Callable[[Run], None]
    # Policy keys on top of the lab's (extsock.conf text, and the conn lines' options).
    options: tuple[tuple[str, str], ...] = ()


THREE = (GW1, GW2, GW3)
SCENARIOS: dict[str, Scenario] = {
    "failover": Scenario(
        "segw1 goes silent (link down): retransmit, failover to segw2",
        (("home", "net", THREE),),
        lambda text: text,
        s_failover,
    ),
    "switch": Scenario(
        "operator switch to segw2 while up: make-before-break, the old tunnel drained 1 s",
        (("home", "net", THREE),),
        lambda text: text,
        s_switch,
    ),
    "rekey": Scenario(
        "IKE_SA rekeyed on ini (swanctl --rekey): the tunnel stays, the id moves",
        (("home", "net", THREE),),
        lambda text: text,
        s_rekey,
    ),
    "redirect": Scenario(
        "segw1 redirects the IKE_SA to segw3 (not in remote_addrs): followed, no failure",
        (("home", "net", (GW1, GW2)),),
        two_gateways,
        s_redirect,
    ),
    "reuse": Scenario(
        "two connections in one IKE_SA (reuse_ikesa): both up, then segw1 dies, both move",
        (("home", "net", THREE), ("upb", "net2", THREE)),
        two_connections,
        s_reuse,
    ),
    "reuse-child-rekey": Scenario(
        "two connections in one IKE_SA; home's CHILD_SA rekeyed, then home switched to segw2:"
        " the drain's end ends the rekeyed CHILD_SA alone (issue 26)",
        (("home", "net", THREE), ("upb", "net2", THREE)),
        two_connections,
        s_reuse_child_rekey,
    ),
    "reuse-switch-back": Scenario(
        "two connections in one IKE_SA; home switched to segw2 and, after the drain, back:"
        " its CHILD_SA comes up in the IKE_SA the drain left (issue 26)",
        (("home", "net", THREE), ("upb", "net2", THREE)),
        two_connections,
        s_reuse_switch_back,
    ),
    "standby-delete": Scenario(
        "standby up on segw2, segw1 DELETEs the IKE_SA: the child in the standby, standby on",
        (("home", "net", THREE),),
        lambda text: text,
        s_standby_delete,
        (("standby", "yes"),),
    ),
    "standby-silent": Scenario(
        "standby up on segw2, segw1 goes silent: retransmit, the child in the standby, standby on",
        (("home", "net", THREE),),
        lambda text: text,
        s_standby_silent,
        (("standby", "yes"),),
    ),
}


def _kept(event: dict[str, Any], reader: DialectReader) -> bool:
    kind = str(event["event"])
    if kind not in (*EVENTS, *reader.dialect.optional_events):
        return False
    if kind not in ("log", "alert"):
        return True
    obs = reader.translate(decode_event(kind, event["message"]))
    return obs is not None and EventUsecase.wants(obs)


def _ini_version(lab: Lab) -> str:
    with lab.vici_session(INI) as session:
        version = session.version().get("version")
    return version.decode() if isinstance(version, bytes) else str(version)


def record(name: str, scenario: Scenario, prefix: str, charon: str = DEFAULT_RELEASE) -> Path:
    rel = release(charon)
    node_charon = () if rel.host else (f"{INI}={rel.name}",)
    config = LabConfig(gateways=3, prefix=prefix, node_charon=node_charon)
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        lab = Lab(config, state_dir=Path(tmp) / "lab")
        try:
            lab.up(timeout=30.0)
            version = _ini_version(lab)
            # As the daemon's listener: the dialect of the version charon reports, with
            # alerts where the dialect has them (a charon of that release confirms them).
            dialect = choose(version).dialect
            reader = dialect.reader(alerts="alert" in dialect.optional_events)
            lab.ns_exec(INI, ["ip", "addr", "replace", f"{UPB_SRC}/32", "dev", "lo"], check=True)
            policy = POLICY + "".join(f"    {key} = {value}\n" for key, value in scenario.options)
            runner = ExtsockRunner(lab, policy, name="golden", conf_transform=scenario.transform)
            runner.write_config()
            marks: list[tuple[float, str]] = []
            events = (*EVENTS, *dialect.optional_events)
            with EventWatch(str(lab.vici_path(INI)), events, raw=True) as watch:
                started = time.monotonic()
                runner.start()
                try:
                    scenario.steps(Run(lab, runner, marks))
                    time.sleep(1.0)  # what follows the last step
                finally:
                    runner.stop()
                raw = [e for e in list(watch.raw) if _kept(e, reader)]
        finally:
            lab.down()
    timed: list[tuple[float, str]] = [
        (float(e["at"]), f"< {e['event']} {json.dumps(e['message'], separators=(',', ':'))}")
        for e in raw
    ]
    timed += [(at, f"@ {what}") for at, what in marks]
    timed.sort(key=lambda item: item[0])
    lines = [
        f"# {name}: {scenario.about}",
        f"# recorded from the lab, strongSwan {version}"
        + ("" if rel.host else f" on ini ({rel.name}), the host's on the gateways"),
        f"charon {version}",
    ]
    opts = "".join(f" {key}={value}" for key, value in scenario.options)
    lines += [f"conn {conn} {child} {' '.join(gws)}{opts}" for conn, child, gws in scenario.conns]
    lines.append("start")
    last = started
    for at, line in timed:
        head, rest = line.split(" ", 1)
        lines.append(f"{head} +{max(0.0, at - last):.3f} {rest}")
        last = at
    out = HERE / (f"{name}.ci" if rel.host else f"{name}-{version}.ci")
    out.write_text(replay("\n".join(lines) + "\n"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.golden.record")
    parser.add_argument(
        "--charon",
        default=DEFAULT_RELEASE,
        choices=sorted(RELEASES),
        help="the Debian release ini's charon comes from (default: %(default)s, the host's)",
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    args = parser.parse_args()
    if unknown := [n for n in args.scenarios if n not in SCENARIOS]:
        parser.error(f"unknown scenario(s) {unknown}; accepted: {', '.join(SCENARIOS)}")
    prefix = os.environ.get("EXTSOCK_LAB_PREFIX", "gld-")
    for name in args.scenarios or list(SCENARIOS):
        path = record(name, SCENARIOS[name], prefix, args.charon)
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
