"""A real daemon (main loop and service) running in a thread, on fakes: shared by the
control, metrics and CLI tests (this module holds no tests of its own)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from extsock_py.adapters.publisher import Broadcast
from extsock_py.domain import observations as ob
from extsock_py.domain.config import DesiredConfig
from extsock_py.domain.credentials import Credentials, SharedLoad
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.notices import Notice
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import clone_name
from extsock_py.domain.secret import Secret
from extsock_py.mainloop import MainLoop
from extsock_py.usecases.daemon_service import DaemonOptions, DaemonService
from extsock_py.usecases.operator import OperatorUsecase
from tests.fakes.ports import FakeCharonPort, FakeClock, MemoryStateStore

T = TypeVar("T")

SECRET = "s3cr3t-psk-never-in-metrics"
HOME = ("10.0.0.1", "10.0.0.2")
OFFICE = ("192.0.2.1", "192.0.2.2", "192.0.2.3")


class CharonStub(FakeCharonPort):
    """The fake charon port, with the connect/close the daemon needs."""

    def __init__(self) -> None:
        super().__init__()
        self.connects = 0

    def connect(self) -> None:
        self.connects += 1

    def close(self) -> None:
        pass


class NullListener:
    def start(self) -> None:
        pass

    def wait_ready(self, timeout: float) -> bool:
        return True

    def stop(self) -> None:
        pass


# A credential whose bytes must never show up outside the VICI message.
PSK = SharedLoad("ike-home", "ike", Secret(SECRET.encode()), ("home",))


def _body(gateways: tuple[str, ...]) -> dict[str, Any]:
    return {
        "remote_addrs": list(gateways),
        "version": "2",
        "local": {"auth": "psk", "id": "me"},
        "remote": {"auth": "psk"},
        "children": {"net": {"remote_ts": ["10.1.0.0/16"], "start_action": "start"}},
    }


def sample_config(with_office: bool = True) -> DesiredConfig:
    connections: dict[str, Mapping[str, Any]] = {"home": _body(HOME)}
    if with_office:
        connections["office"] = _body(OFFICE)
    connections["plain"] = _body(("198.51.100.1",))
    return DesiredConfig(
        source="/etc/swanctl/swanctl.conf",
        connections=connections,
        policies={"home": FailoverPolicy(max_cycles=2)},
        credentials=Credentials(shared=(PSK,)),
    )


@dataclass
class Harness:
    daemon: MainLoop[DaemonService]
    operator: OperatorUsecase
    charon: CharonStub
    clock: FakeClock
    publisher: Broadcast
    store: MemoryStateStore
    config: list[DesiredConfig | ConfigError]
    thread: threading.Thread | None = None
    errors: list[BaseException] = field(default_factory=list)

    def on_loop(self, work: Callable[[], T], timeout: float = 5.0) -> T:
        return self.daemon.submit(work).result(timeout=timeout)

    def phase(self, conn: str) -> str:
        return str(self.on_loop(lambda: self.daemon.service.manager.status(conn)[0].phase))

    def bring_up(self, conn: str, gateway: str | None = None, ike_id: int = 7) -> None:
        """Have charon report the tunnel up on `gateway` (the one being tried by default)."""
        gw = gateway or str(
            self.on_loop(lambda: self.daemon.service.manager.status(conn)[0].target_gateway)
        )
        sa = ob.IkeSaInfo(name=clone_name(conn, gw), unique_id=ike_id, state="ESTABLISHED")
        child = ob.ChildSaInfo("net", ike_id * 10, "INSTALLED")
        self.daemon.post(ob.ChildUpdown(sa, child, True))
        wait_until(lambda: self.phase(conn) == "up")

    def publish(self, notice: Notice) -> None:
        """Publish on the main loop, as the daemon does."""
        self.on_loop(lambda: self.publisher.publish(notice))


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def make_harness(config: DesiredConfig | None = None) -> Harness:
    from extsock_py.usecases.failover_manager import FailoverManager

    charon = CharonStub()
    clock = FakeClock()
    publisher = Broadcast()
    store = MemoryStateStore()
    configs: list[DesiredConfig | ConfigError] = [config or sample_config()]

    def read_config(path: Path) -> DesiredConfig:
        current = configs[-1]
        if isinstance(current, ConfigError):
            raise current
        return current

    manager = FailoverManager(charon, clock, publisher, store)
    service = DaemonService(
        DaemonOptions(Path("/etc/swanctl/swanctl.conf")),
        charon,
        lambda post: NullListener(),
        read_config,
        clock,
        publisher,
        manager,
    )
    daemon = MainLoop(service, clock.monotonic)
    operator = OperatorUsecase(daemon, service, store)
    return Harness(daemon, operator, charon, clock, publisher, store, configs)


@contextmanager
def running_daemon(config: DesiredConfig | None = None) -> Iterator[Harness]:
    harness = make_harness(config)

    def run() -> None:
        try:
            harness.daemon.run()
        except BaseException as exc:  # surfaced by the test through harness.errors
            harness.errors.append(exc)

    harness.thread = threading.Thread(target=run, name="daemon-loop", daemon=True)
    harness.thread.start()
    assert harness.daemon.ready.wait(5), f"daemon not ready: {harness.errors}"
    try:
        yield harness
    finally:
        harness.daemon.request_stop()
        harness.thread.join(timeout=5)
        assert not harness.thread.is_alive()
    assert not harness.errors, harness.errors


@contextmanager
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="xs", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_safety_net_asks_charon_for_its_sas_once_a_round() -> None:
    """The 30 s reconcile and the takeover scan read one list-sas answer: with hundreds of
    SAs, each answer costs tens of ms to decode (idle CPU, bench figure 5a)."""
    harness = make_harness()
    service = harness.daemon.service
    service.open(lambda item: None)
    service.start()
    before = len(harness.charon.commands("list_sas"))
    harness.clock.advance(31.0)
    for work in service.due_work():
        work()
    assert len(harness.charon.commands("list_sas")) == before + 1
    assert harness.charon.commands("list_conn_names")  # the scan ran
