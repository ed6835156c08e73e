"""No secret leaves charon's side: grep every output of a real run for the PSK and the key.

Outputs: extsock's log (debug level), the state directory (SQLite files), the metrics
text, `/health`, the control socket's status/history/events, and the `--json` and human
outputs of the CLI commands.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from extsock_py.adapters.control.client import ControlClient
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import DEFAULT_PSK, INI

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secrets(lab: Lab) -> list[bytes]:
    """The PSK in its forms, and fragments of every private key beside ini's config."""
    found = [DEFAULT_PSK.encode(), base64.b64encode(DEFAULT_PSK.encode())]
    for key in (lab.node_dir(INI) / "private").glob("*.pem"):
        body = [line for line in key.read_text().splitlines() if not line.startswith("-----")]
        found += [line.encode() for line in body if len(line) >= 32]
        der = base64.b64decode("".join(body))
        found.append(der[16:48])
        found.append(der[16:48].hex().encode())
    return found


def _cli(lab: Lab, runner: ExtsockRunner, *args: str) -> bytes:
    cmd = [sys.executable, "-m", "extsock_py", "-u", lab.vici_uri(INI),
           "--control-socket", str(runner.control_socket), *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    return done.stdout + done.stderr


@pytest.mark.parametrize("lab", [{"auth": "psk"}, {"auth": "cert"}], indirect=True)
def test_no_output_holds_a_secret(fresh_lab: Lab) -> None:
    port = _free_port()
    runner = ExtsockRunner(fresh_lab, "", extra_args=("--metrics", f"127.0.0.1:{port}"))
    runner.write_config()
    events: list[bytes] = []
    try:
        runner.start()
        watcher = ControlClient(runner.control_socket, timeout=10.0)
        watcher.subscribe()

        def watch() -> None:
            for _ in range(200):  # bounded; ends when the daemon closes the stream
                try:
                    events.append(json.dumps(watcher.next_event()).encode())
                except Exception:
                    return

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), runner.log_tail()
        fresh_lab.fail("segw1", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), runner.log_tail()
        outputs: dict[str, bytes] = {"events": b""}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            outputs["metrics"] = reply.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                outputs["health"] = reply.read()
        except urllib.error.HTTPError as exc:  # 503 is an answer too
            outputs["health"] = exc.read()
        outputs["status"] = json.dumps(runner.request("status")).encode()
        outputs["history"] = json.dumps(runner.request("history")).encode()
        for args in (
            ("failover", "status", "--json"),
            ("failover", "history"),
            ("list-sas", "--json"),
            ("list-sas",),
            ("list-conns", "--json"),
            ("list-conns",),
            ("load-creds", "--file", str(runner.conf)),
            ("check-config", "--file", str(runner.conf)),
        ):
            outputs[" ".join(args)] = _cli(fresh_lab, runner, *args)
        runner.stop()
        watcher.close()
        thread.join(5.0)
        outputs["events"] = b"\n".join(events)
        outputs["log"] = runner.log_path.read_bytes()
        for path in Path(runner.state_dir).rglob("*"):
            if path.is_file():
                outputs[f"state:{path.name}"] = path.read_bytes()
        assert b"failover" in outputs["events"], "the event stream saw no failover"
        assert b"home@" in outputs["list-sas --json"]
        secrets = _secrets(fresh_lab)
        if fresh_lab.config.auth == "psk":  # the needle is real: the input holds it
            assert DEFAULT_PSK.encode() in runner.conf.read_bytes()
        else:
            assert len(secrets) > 2, "no private key found to look for"
        for secret in secrets:
            for where, data in outputs.items():
                assert secret not in data, f"a secret appears in {where}"
    finally:
        runner.stop()
