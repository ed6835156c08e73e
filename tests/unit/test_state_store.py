"""SqliteStateStore: every method, pruning, recovery, threads, and a real SIGKILL test."""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from extsock_py.adapters.reports_json import record_json
from extsock_py.adapters.state_store import (
    CONNECTION_FIELDS,
    DB_NAME,
    SCHEMA_VERSION,
    Scalar,
    SqliteStateStore,
    connection_fields,
    history_record,
    saved_connection,
)
from extsock_py.domain.persisted import SavedConnection
from extsock_py.interfaces.ports import StateStore

REPO = Path(__file__).resolve().parents[2]

CONN = {
    "gateway": "gw2.example.net",
    "phase": "up",
    "held": False,
    "failures_total": 3,
    "cycles_failed": 1,
    "attempts_on_gateway": 2,
    "last_up": "gw2.example.net",
}


def record(n: int, connection: str = "office", when: float | None = None) -> dict[str, object]:
    return {
        "time": 1_700_000_000.0 + n if when is None else when,
        "connection": connection,
        "from": "gw1",
        "to": "gw2",
        "reason": "dpd",
        "result": "up",
        "duration": 0.5 + n,
        "outage": 1.5 + n,
    }


def save(s: StateStore, name: str, fields: Mapping[str, object]) -> None:
    """Save a connection's state given as the store's fields (maybe hostile), decoded first."""
    s.save_connection(name, saved_connection(fields))


def loaded(s: StateStore) -> dict[str, dict[str, Scalar]]:
    """The stored connections, each under the store's keys (the unknown, None, left out)."""
    return {
        name: {k: v for k, v in connection_fields(state).items() if v is not None}
        for name, state in s.load_connections().items()
    }


def add(s: StateStore, fields: Mapping[str, object]) -> None:
    """Append a record given as the store's fields (maybe hostile), as its decoding reads them."""
    s.append_history(history_record(fields))


def rows(
    s: StateStore, connection: str | None = None, since: float | None = None, limit: int = 100
) -> list[dict[str, Scalar]]:
    """The stored history, each record under the store's keys."""
    return [record_json(r) for r in s.history(connection=connection, since=since, limit=limit)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    s = SqliteStateStore(tmp_path / "state")
    s.open()
    yield s
    s.close()


def test_is_a_state_store() -> None:
    s: StateStore = SqliteStateStore(Path("/nonexistent"))
    assert s is not None


def test_constructor_has_no_side_effects(tmp_path: Path) -> None:
    SqliteStateStore(tmp_path / "state")
    assert not (tmp_path / "state").exists()


def test_default_directory() -> None:
    assert SqliteStateStore().directory == Path("/var/lib/extsock")


def test_open_creates_private_directory_wal_and_schema(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with SqliteStateStore(tmp_path / "a" / "state"):
            pass
    finally:
        os.umask(old)
    directory = tmp_path / "a" / "state"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / DB_NAME).stat().st_mode) == 0o600
    db = sqlite3.connect(directory / DB_NAME)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert {"connections", "history", "history_connection_time"} <= tables
    finally:
        db.close()


def test_open_twice_and_close_twice_are_harmless(tmp_path: Path) -> None:
    s = SqliteStateStore(tmp_path)
    s.open()
    s.open()
    s.close()
    s.close()


def test_save_and_load_connections(store: SqliteStateStore) -> None:
    assert loaded(store) == {}
    save(store, "office", CONN)
    save(store, "lab", {**CONN, "gateway": "gw9", "held": True})
    assert loaded(store) == {
        "lab": {**CONN, "gateway": "gw9", "held": True},
        "office": CONN,
    }


def test_save_replaces_all_fields(store: SqliteStateStore) -> None:
    save(store, "office", CONN)
    save(store, "office", {"gateway": "gw3", "phase": "connecting"})
    assert loaded(store) == {"office": {"gateway": "gw3", "phase": "connecting"}}


def test_state_survives_reopen(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path) as s:
        save(s, "office", CONN)
        add(s, record(1))
    with SqliteStateStore(tmp_path) as s:
        assert loaded(s) == {"office": CONN}
        assert [r["reason"] for r in rows(s)] == ["dpd"]


def test_forget_connection(store: SqliteStateStore) -> None:
    save(store, "office", CONN)
    store.forget_connection("office")
    store.forget_connection("never-was")
    assert loaded(store) == {}


def test_unknown_fields_are_dropped_and_never_written(
    store: SqliteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "0sFpZAZqEN6Ti9sqt4ZP5EWcqx"
    with caplog.at_level(logging.WARNING, "extsock.state"):
        save(store, "office", {**CONN, "psk": secret, "private_key": secret})
        add(store, {**record(1), "secret": secret})
    assert set(loaded(store)["office"]) == CONNECTION_FIELDS
    assert "secret" not in rows(store)[0]
    assert "psk" in caplog.text and "private_key" in caplog.text
    assert secret not in caplog.text  # keys are logged, values never
    store.close()
    for path in store.directory.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_structured_values_are_not_stored(store: SqliteStateStore) -> None:
    save(
        store,
        "office",
        {"gateway": {"secret": "x"}, "phase": ["a"], "failures_total": float("nan")},
    )
    assert loaded(store) == {"office": {}}


def test_long_text_is_capped(store: SqliteStateStore) -> None:
    save(store, "office", {"gateway": "g" * 10_000})
    assert len(store.load_connections()["office"].gateway or "") == 256


def test_history_roundtrip(store: SqliteStateStore) -> None:
    add(store, record(1))
    add(store, {"time": 5.0, "connection": "lab", "from": None, "to": "gw1", "result": "gave-up"})
    got = rows(store, limit=10)
    assert [dict(r) for r in got] == [
        {
            "id": 2,
            "time": 5.0,
            "connection": "lab",
            "from": None,
            "to": "gw1",
            "reason": None,
            "result": "gave-up",
            "duration": None,
            "outage": None,
        },
        {"id": 1, **record(1)},
    ]


def test_history_without_time_gets_now(store: SqliteStateStore) -> None:
    before = time.time()
    add(store, {"connection": "office", "time": "yesterday"})
    (got,) = store.history()
    assert before <= got.time <= time.time()


def test_history_filters_and_limit(store: SqliteStateStore) -> None:
    for n in range(10):
        add(store, record(n, connection="office" if n % 2 else "lab"))
    office = rows(store, connection="office")
    assert [r["duration"] for r in office] == [1.5, 3.5, 5.5, 7.5, 9.5]
    newest = rows(store, limit=3)
    assert [r["duration"] for r in newest] == [7.5, 8.5, 9.5]  # newest three, oldest first
    since = rows(store, since=1_700_000_006.0)
    assert [r["duration"] for r in since] == [6.5, 7.5, 8.5, 9.5]
    both = rows(store, connection="lab", since=1_700_000_004.0, limit=2)
    assert [r["duration"] for r in both] == [6.5, 8.5]
    assert rows(store, limit=0) == []
    assert rows(store, connection="nobody") == []


def test_history_is_pruned_to_the_newest(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path, max_history=5) as s:
        for n in range(12):
            add(s, record(n))
        got = rows(s, limit=100)
        assert [r["duration"] for r in got] == [n + 0.5 for n in range(7, 12)]
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert db.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 5
    finally:
        db.close()


def test_max_history_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SqliteStateStore(Path("x"), max_history=0)


def test_use_while_closed_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = SqliteStateStore(tmp_path)
    save(s, "office", CONN)
    add(s, record(1))
    assert loaded(s) == {}
    assert rows(s) == []
    assert "closed" in caplog.text


def test_corrupt_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    garbage = b"this is not an sqlite database" * 100
    (tmp_path / DB_NAME).write_bytes(garbage)
    with caplog.at_level(logging.WARNING, "extsock.state"), SqliteStateStore(tmp_path) as s:
        assert not s.in_memory
        save(s, "office", CONN)
        assert loaded(s) == {"office": CONN}
    (aside,) = tmp_path.glob(f"{DB_NAME}.corrupt-*")
    assert aside.read_bytes() == garbage
    assert "moving it aside" in caplog.text


def test_damaged_pages_are_moved_aside(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path) as s:
        for n in range(300):
            add(s, record(n))
    raw = bytearray((tmp_path / DB_NAME).read_bytes())
    assert len(raw) > 3 * 4096
    raw[4096 : 3 * 4096] = b"\xa5" * (2 * 4096)  # smash pages after the header page
    (tmp_path / DB_NAME).write_bytes(bytes(raw))
    with SqliteStateStore(tmp_path) as s:
        assert rows(s) == []
        add(s, record(1))
        assert len(rows(s)) == 1
    assert list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))


def test_newer_schema_is_moved_aside(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with SqliteStateStore(tmp_path) as s:
        assert not s.in_memory
    assert list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))


def test_unusable_directory_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    with SqliteStateStore(tmp_path / "file" / "state") as s:
        assert s.in_memory
        save(s, "office", CONN)
        assert loaded(s) == {"office": CONN}
    assert "in memory" in caplog.text


class _Malformed:
    """Stands in for a connection whose file turned out corrupt while running."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    def execute(self, *args: object) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    def close(self) -> None:
        self.real.close()


def test_corruption_found_while_running_starts_fresh(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path) as s:
        save(s, "office", CONN)
        s._db = _Malformed(s._db)  # type: ignore[arg-type,assignment]
        add(s, record(1))  # logged and dropped, the file moved aside
        assert list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))
        assert not s.in_memory
        assert loaded(s) == {}
        save(s, "office", CONN)
        assert loaded(s) == {"office": CONN}


def test_busy_errors_do_not_move_the_file(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path) as s:
        save(s, "office", CONN)
        other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        try:
            s._db.execute("PRAGMA busy_timeout=50")  # type: ignore[union-attr]
            save(s, "office", {"gateway": "gw9"})  # times out: logged, dropped
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert not list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))
        assert loaded(s) == {"office": CONN}


def test_concurrent_writer_and_readers(tmp_path: Path) -> None:
    s = SqliteStateStore(tmp_path, max_history=50)
    s.open()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for n in range(400):
                save(s, "office", {**CONN, "failures_total": n})
                add(s, record(n))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            last = -1
            while not done.is_set():
                conns = s.load_connections()
                if conns:
                    seen = conns["office"].failures_total
                    assert seen is not None and seen >= last  # never goes back
                    last = seen
                found = s.history(limit=1000)
                assert len(found) <= 50
                times = [r.time for r in found]
                assert times == sorted(times)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    s.close()
    assert not errors, errors
    with SqliteStateStore(tmp_path) as again:
        assert again.load_connections()["office"].failures_total == 399
        assert len(rows(again, limit=1000)) == 50


# --- durability against SIGKILL ---------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from extsock_py.adapters.state_store import SqliteStateStore
    from extsock_py.domain.persisted import SavedConnection
    from extsock_py.domain.reports import HistoryRecord

    store = SqliteStateStore(Path(sys.argv[1]), max_history=10_000_000)
    store.open()
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        store.append_history(HistoryRecord(time=float(n), connection="kill", reason=str(n)))
        store.save_connection("kill", SavedConnection(failures_total=n))
        print(n, flush=True)
    """
)


def _kill_run(directory: Path, rng: random.Random) -> list[int]:
    """Start a writer, SIGKILL it 0.1-0.5 s after it is ready; return what it reported."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(directory)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.1, 0.5))
        child.send_signal(signal.SIGKILL)
        out = child.stdout.read()
    finally:
        child.kill()
        child.wait(timeout=5)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    # Only whole lines: a number is reported after its commit returned.
    return [int(line) for line in out.split(b"\n")[:-1]]


def test_committed_records_survive_sigkill(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    for run in range(4):
        directory = tmp_path / f"run{run}"
        reported = _kill_run(directory, rng)
        assert reported, f"seed {seed}: the child committed nothing"
        assert reported == list(range(1, len(reported) + 1))
        db = sqlite3.connect(directory / DB_NAME)  # replays the WAL the child left
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            stored = {int(r[0]) for r in db.execute("SELECT reason FROM history")}
        finally:
            db.close()
        missing = set(reported) - stored
        assert not missing, f"seed {seed}: committed but lost: {sorted(missing)[:10]}"
        # At most the one record after the last report (committed, killed before printing).
        assert max(stored) <= reported[-1] + 1
        with SqliteStateStore(directory) as s:
            assert not s.in_memory
            assert (s.load_connections()["kill"].failures_total or 0) >= reported[-1]
            assert len(rows(s, connection="kill", limit=10**9)) == len(stored)


def test_every_state_file_is_0600_from_creation(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with SqliteStateStore(tmp_path / "state") as s:
            save(s, "home", {"phase": "up"})  # the WAL and its index exist now
            files = sorted(p.name for p in (tmp_path / "state").iterdir())
            assert files == [DB_NAME, f"{DB_NAME}-shm", f"{DB_NAME}-wal"]
            for name in files:
                mode = stat.S_IMODE((tmp_path / "state" / name).stat().st_mode)
                assert mode == 0o600, (name, oct(mode))
    finally:
        os.umask(old)


def test_a_truncated_database_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with SqliteStateStore(tmp_path) as s:
        for i in range(300):
            add(s, {"time": float(i), "connection": "home", "reason": "x" * 200})
    path = tmp_path / DB_NAME
    size = path.stat().st_size
    assert size > 8 * 4096
    with path.open("r+b") as f:
        f.truncate(size // 2 // 4096 * 4096)
    with caplog.at_level(logging.WARNING, "extsock.state"), SqliteStateStore(tmp_path):
        pass
    assert "looks truncated" in caplog.text
    assert "of the" in caplog.text and "pages its header states" in caplog.text


def test_an_intact_database_is_not_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SqliteStateStore(tmp_path) as s:
        add(s, {"time": 1.0, "connection": "home"})
    with caplog.at_level(logging.WARNING, "extsock.state"), SqliteStateStore(tmp_path):
        pass
    assert "truncated" not in caplog.text


def test_a_schema_1_database_gets_the_outage_column(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(
        "CREATE TABLE history (id INTEGER PRIMARY KEY, time REAL NOT NULL, connection TEXT "
        "NOT NULL, from_gw TEXT, to_gw TEXT, reason TEXT, result TEXT, duration REAL)"
    )
    db.execute("INSERT INTO history (time, connection, duration) VALUES (1.0, 'old', 2.0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with SqliteStateStore(tmp_path) as s:
        add(s, {**record(1), "connection": "new"})
        got = {r["connection"]: (r["duration"], r["outage"]) for r in rows(s)}
    assert got == {"old": (2.0, None), "new": (1.5, 2.5)}


def test_hostile_stored_rows_decode_to_safe_records(store: SqliteStateStore) -> None:
    """A row written by hand (SQLite keeps any type in any column) decodes without raising:
    a value of the wrong type reads as None, long text is capped."""
    store.close()
    with sqlite3.connect(store.path) as db:
        db.execute(
            "INSERT INTO history (time, connection, from_gw, to_gw, reason, result, duration,"
            " outage) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (7.0, "office", b"\x00blob", 42, "r" * 10_000, None, "soon", float("inf")),
        )
    db.close()
    store.open()
    (got,) = store.history()
    assert got.time == 7.0 and got.connection == "office"
    assert got.from_gateway is None and got.to_gateway == "42"
    assert got.reason is not None and len(got.reason) == 256
    assert (got.result, got.duration, got.outage) == (None, None, None)
    assert got.id == 1


def test_rows_of_an_older_or_hostile_writer_load(store: SqliteStateStore) -> None:
    """A connection row as JSON written before the state was typed (some keys only) or by
    hand (wrong types, unknown keys, not an object) loads what it can and never raises."""
    store.close()
    rows_ = [
        ("old", '{"gateway": "gw1", "phase": "up", "held": true, "failures_total": 2}'),
        ("bad", '{"gateway": {"x": 1}, "held": "yes", "failures_total": true, "psk": "s3"}'),
        ("list", "[1, 2]"),
        ("junk", "{not json"),
    ]
    with sqlite3.connect(store.path) as db:
        for name, payload in rows_:
            db.execute(
                "INSERT INTO connections (name, fields, updated_at) VALUES (?, ?, 0)",
                (name, payload),
            )
    db.close()
    store.open()
    assert store.load_connections() == {
        "old": SavedConnection(gateway="gw1", phase="up", held=True, failures_total=2),
        "bad": SavedConnection(),
    }
