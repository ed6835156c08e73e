"""Hostile input that reaches for secrets or for the daemon's start (issue 24, findings 8, 9).

A secret typed with an unquoted '}' (or any mistake inside `secrets`) gives an error that
says where (file, line, key) and never what: no fragment of it reaches the error, the log,
the `reload-failed` event every subscriber gets, or the answer to `reload`. A corrupt row
in the state store (JSON nested past Python's recursion limit, bad JSON, the wrong shape)
is skipped and reported by name, and the daemon starts.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from extsock_py.adapters.config_reader import read_desired_config
from extsock_py.adapters.control.client import ControlClient, ControlError
from extsock_py.adapters.control.server import ControlServer
from extsock_py.adapters.state_store import SqliteStateStore
from extsock_py.app import AppSettings, build_app
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.persisted import SavedConnection
from tests.fakes.fake_charon import FakeCharon
from tests.unit.test_control_support import Harness, running_daemon, short_dir, wait_until
from tests.unit.test_daemon_resilience import CONF

SECRET = "Qx7}Zq9Vw2JtK"  # the '}' cuts it short where it is not quoted


def _fragments(secret: str) -> set[str]:
    """Every piece of the secret of 4 characters or more, braces aside."""
    parts = secret.replace("}", " ").split()
    return {p[i : i + 4] for p in parts for i in range(len(p) - 3)}


def _shows_nothing_of(text: str, secret: str = SECRET) -> bool:
    return not any(f in text for f in _fragments(secret))


@pytest.mark.parametrize(
    "secrets",
    [
        f"secrets {{\n    ike-home {{\n        secret = {SECRET}\n    }}\n}}\n",
        f"secrets {{\n    ike-home {{\n        secret = {SECRET.replace('}', '}}')}\n    }}\n}}\n",
        f"secrets {{\n    ike-home {{\n        secret = {SECRET.replace('}', '} ')}\n    }}\n}}\n",
        f"secrets {{\n    ike-home {{\n        secret = {SECRET}.x {{\n    }}\n}}\n",
        f"secrets {{\n    ike-home {{\n        secret = {SECRET}: a.b {{\n    }}\n}}\n",
        f"secrets {{\n    ike-home {{\n        secret = {SECRET} = x\n    }}\n}}\n",
        f"secrets {{\n    ike-home {{\n        {SECRET.replace('}', '')}\n    }}\n}}\n",
    ],
    ids=["glued", "two-braces", "brace-space", "dotted", "reference", "as-a-key", "no-key"],
)
def test_a_mistyped_secret_is_located_never_shown(tmp_path: Path, secrets: str) -> None:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF.split("secrets {")[0] + secrets)
    with pytest.raises(ConfigError) as caught:
        read_desired_config(conf)
    text = str(caught.value)
    assert _shows_nothing_of(text), text
    assert text.startswith(f"{conf}:") and caught.value.line is not None  # where, though


def test_a_cut_secret_names_its_key_and_how_to_write_it(tmp_path: Path) -> None:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF.split("secrets {")[0] + f"secrets {{ ike-home {{ secret = {SECRET} }} }}")
    with pytest.raises(ConfigError) as caught:
        read_desired_config(conf)
    assert caught.value.key == "secrets.ike-home.secret"
    assert 'double quotes: secret = "..."' in str(caught.value)


def test_a_quoted_secret_with_a_brace_and_one_line_sections_still_load(tmp_path: Path) -> None:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(
        CONF.split("secrets {")[0]
        + f'secrets {{ ike-a {{ secret = "{SECRET}" }} ike-b {{ secret = other-one }} }}\n'
    )
    loaded = read_desired_config(conf)
    secrets = {s.data.reveal() for s in loaded.credentials.shared}
    assert secrets == {SECRET.encode(), b"other-one"}


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running_daemon() as h:
        yield h


def test_the_reload_failed_event_and_answer_carry_no_part_of_the_secret(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reproduction of finding 8: the error went out in `reload-failed` to every
    subscriber, and in the answer to `reload`, naming `after 'S3cretTail'`."""
    caplog.set_level(logging.DEBUG)
    conf = tmp_path / "swanctl.conf"
    conf.write_text(
        CONF.split("secrets {")[0] + f"secrets {{\n ike-home {{\n  secret = {SECRET}\n }}\n}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        read_desired_config(conf)
    harness.config.append(caught.value)  # what the daemon reads on its next reload
    with short_dir() as d:
        srv = ControlServer(harness.operator, harness.publisher, d / "s")
        srv.start()
        try:
            with (
                ControlClient(srv.path, timeout=5) as subscriber,
                ControlClient(srv.path, timeout=5) as root,
            ):
                subscriber.subscribe(["reload-failed"])
                with pytest.raises(ControlError) as refused:
                    root.request("reload")
                event = subscriber.next_event()
        finally:
            srv.close()
    assert event["event"] == "reload-failed"
    assert "swanctl.conf:22: key 'secrets.ike-home.secret'" in event["error"]
    for text in (event["error"], str(refused.value), *(r.getMessage() for r in caplog.records)):
        assert _shows_nothing_of(text), text


# --- a corrupt state row ---------------------------------------------------------------------


def _corrupt_rows(state: Path) -> None:
    with SqliteStateStore(state) as store:
        store.save_connection("home", SavedConnection(phase="up", gateway="10.99.1.2", held=True))
    db = sqlite3.connect(state / "state.db")
    with db:
        rows = [
            ("deep", "[" * 5_000 + "]" * 5_000),  # RecursionError in json.loads
            ("bad", "{not json"),
            ("list", "[1, 2]"),
            ("huge", '{"phase": "' + "u" * 100_000 + '"}'),
            (b"\xffbytes", "{}"),
        ]
        db.executemany("INSERT INTO connections (name, fields, updated_at) VALUES (?, ?, 0)", rows)
    db.close()


def test_corrupt_state_rows_are_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _corrupt_rows(tmp_path)
    caplog.set_level(logging.WARNING, logger="extsock.state")
    with SqliteStateStore(tmp_path) as store:
        loaded = store.load_connections()
        assert list(loaded) == ["home"] and loaded["home"].held is True
        assert store.skipped_rows == 5
    reported = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("'deep'", "'bad'", "'list'", "'huge'", "<a bytes>"):
        assert f"state of connection {name} skipped" in reported, reported
    assert "not json" not in reported and "uuuu" not in reported
    assert "nested too deep" in reported


def test_the_daemon_starts_over_corrupt_state_rows(tmp_path: Path) -> None:
    """The daemon as `build_app` builds it, on the fake charon: it starts, restores the
    readable row (home's hold) and brings its connections up."""
    _corrupt_rows(tmp_path / "state")
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF)
    with short_dir() as d, FakeCharon() as fake:
        app = build_app(
            AppSettings(
                uri=fake.uri, config_file=conf, state_dir=tmp_path / "state", control_socket=d / "s"
            )
        )
        errors: list[BaseException] = []

        def run() -> None:
            try:
                app.run()
            except BaseException as exc:  # the test fails on any
                errors.append(exc)

        thread = threading.Thread(target=run, name="daemon-under-test", daemon=True)
        thread.start()
        try:
            assert app.loop.ready.wait(10.0), errors
            row = app.operator.status("home").connections[0]
            assert row.held is True  # the readable row was restored
            wait_until(lambda: "plain" in fake.conns, 5.0)
        finally:
            app.loop.request_stop()
            thread.join(10.0)
        assert not thread.is_alive() and not errors, errors
