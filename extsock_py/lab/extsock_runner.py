"""Runs a real `extsock run` process against a lab's initiator: for tests, the demo and benches.

The process is the installed command line (`python -m extsock_py`), not an in-process
object, so what is exercised is what a user runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from extsock_py.adapters.control.client import ControlClient
from extsock_py.lab.lab import SLOWDOWN, Lab, wait_until
from extsock_py.lab.topology import INI

_EXTSOCK_SECTION = re.compile(r"^extsock \{.*?^\}\n?", re.S | re.M)


class ExtsockRunner:
    """One `extsock run` process with its own config copy, control socket, state and log."""

    def __init__(
        self,
        lab: Lab,
        policy: str = "",
        name: str = "extsock",
        extra_args: tuple[str, ...] = (),
        conf_transform: Callable[[str], str] | None = None,
    ) -> None:
        self.lab = lab
        self.policy = policy
        self.dir = lab.state_dir / name
        self.conf = lab.node_dir(INI) / f"{name}-swanctl.conf"  # beside x509/, private/
        self.control_socket = self.dir / "extsock.sock"
        self.state_dir = self.dir / "state"
        self.log_path = self.dir / "extsock.log"
        self.extra_args = extra_args
        self.conf_transform = conf_transform
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        text = self.lab.ini_conf.read_text()
        section = "extsock {\n" + self.policy + "\n}\n"
        text = (
            _EXTSOCK_SECTION.sub(lambda _: section, text)
            if _EXTSOCK_SECTION.search(text)
            else text + "\n" + section
        )
        if self.conf_transform is not None:
            text = self.conf_transform(text)
        self.conf.write_text(text)
        return self.conf

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "extsock_py",
            "-u", self.lab.vici_uri(INI),
            "--control-socket", str(self.control_socket),
            "--log-level", "debug",
            "run", "--file", str(self.conf), "--state-dir", str(self.state_dir),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 15.0 * SLOWDOWN) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.conf.exists():
            self.write_config()
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()
        if not wait_until(self._answers, timeout, interval=0.05):
            self.stop()
            raise RuntimeError(f"extsock did not come up in {timeout}s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"extsock exited with {self.process.returncode}:\n" + self.log_tail()
            )
        try:
            self.request("status")
        except Exception:
            return False
        return True

    def request(self, cmd: str, **fields: Any) -> Any:
        client = ControlClient(self.control_socket, timeout=10.0)
        try:
            return client.request(cmd, **fields)
        finally:
            client.close()

    def status(self, conn: str = "home") -> dict[str, Any]:
        result = self.request("status", conn=conn)
        rows = result if isinstance(result, list) else result.get("connections", [])
        for row in rows:
            if row.get("connection") == conn:
                return dict(row)
        raise KeyError(conn)

    def wait_phase(self, phase: str, timeout: float, conn: str = "home") -> bool:
        return wait_until(lambda: self.status(conn).get("phase") == phase, timeout, 0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@contextmanager
def running_extsock(lab: Lab, policy: str = "", **kwargs: Any) -> Iterator[ExtsockRunner]:
    runner = ExtsockRunner(lab, policy, **kwargs)
    runner.write_config()
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def elapsed(since: float) -> float:
    return time.monotonic() - since
