"""The StateStore on SQLite: per-connection state and the failover history, across restarts.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A transaction is
committed once its frames are written (``write()``) to ``state.db-wal``; the data is then
in the kernel's page cache, so a killed process (SIGKILL, OOM kill, a crash of extsock
itself) loses nothing it has committed, and the next open replays the WAL. Only an OS
crash or a power loss before the next checkpoint's fsync can lose the last transactions,
and even then the file is not corrupted (WAL frames are checksummed). That is the right
trade here: the state is advisory (charon is the truth and resync adopts what runs), and
``synchronous=FULL`` would put an fsync on the daemon's main loop for every state change.

Secrets never reach the disk: only the known field names are stored (`CONNECTION_FIELDS`,
`HISTORY_FIELDS`), and only scalar values (str, int, float, bool, None; strings capped at
`MAX_TEXT`). Unknown keys are dropped and logged by name, never by value; a value of the
wrong type is stored as NULL. The store never raises into the daemon on a write: a failed
write is logged and dropped (persistence is best effort, the tunnels matter more).

A database file that is corrupt or unreadable is moved aside (``state.db.corrupt-<time>``,
with its -wal and -shm files), a warning is logged and a fresh database is started; if even
that fails, the store keeps its state in memory for this run.

Thread safety: one connection (``check_same_thread=False``) behind one lock for the daemon's
main loop, which writes; history is read on a second, read-only connection behind a lock of
its own (WAL lets it read while the loop writes), so a long read never holds the loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from extsock_py.domain.persisted import SavedConnection
from extsock_py.domain.reports import HistoryRecord

log = logging.getLogger("extsock.state")

DEFAULT_DIRECTORY: Final = Path("/var/lib/extsock")
DB_NAME: Final = "state.db"
SCHEMA_VERSION: Final = 2  # 2: history.outage
DEFAULT_MAX_HISTORY: Final = 10_000
MAX_TEXT: Final = 256

#: The only keys `save_connection` stores (what the failover manager persists).
CONNECTION_FIELDS: Final = frozenset(
    {
        "gateway",
        "phase",
        "held",
        "failures_total",
        "cycles_failed",
        "attempts_on_gateway",
        "last_up",
    }
)
#: The only keys `append_history` stores; "from" and "to" are gateways.
HISTORY_FIELDS: Final = frozenset(
    {"time", "connection", "from", "to", "reason", "result", "duration", "outage"}
)

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS connections (
        name TEXT PRIMARY KEY NOT NULL,
        fields TEXT NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS history (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        connection TEXT NOT NULL,
        from_gw TEXT,
        to_gw TEXT,
        reason TEXT,
        result TEXT,
        duration REAL,
        outage REAL
    )""",
    "CREATE INDEX IF NOT EXISTS history_connection_time ON history (connection, time)",
    "CREATE INDEX IF NOT EXISTS history_time ON history (time)",
)

Scalar = str | int | float | bool | None
#: The history columns as `history_record` reads them.
_ROW_KEYS: Final = (
    "id",
    "time",
    "connection",
    "from",
    "to",
    "reason",
    "result",
    "duration",
    "outage",
)


class SqliteStateStore:
    """StateStore in ``<directory>/state.db``; call `open` before use and `close` after."""

    def __init__(
        self, directory: Path = DEFAULT_DIRECTORY, *, max_history: int = DEFAULT_MAX_HISTORY
    ) -> None:
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.max_history = max_history
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None  # history's, opened on first use
        #: True when the disk could not be used and the state lives in memory only.
        self.in_memory = False
        #: Rows the last `load_connections` skipped as unreadable.
        self.skipped_rows = 0

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory (0700) and the schema if missing; never raises on a bad file."""
        with self._lock:
            if self._db is not None:
                return
            try:
                self._ensure_directory()
                self._db = self._connect_file()
            except (sqlite3.DatabaseError, OSError) as exc:
                log.warning("state database %s unusable (%s); moving it aside", self.path, exc)
                self._move_aside()
                try:
                    self._db = self._connect_file()
                except (sqlite3.DatabaseError, OSError) as again:
                    log.error(
                        "cannot keep state in %s (%s); state is kept in memory for this run",
                        self.directory,
                        again,
                    )
                    self._db = self._connect(":memory:")
                    self.in_memory = True

    def close(self) -> None:
        self._drop_reader()
        with self._lock:
            db, self._db = self._db, None
            if db is None:
                return
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()

    def __enter__(self) -> SqliteStateStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- StateStore -----------------------------------------------------------------------

    def save_connection(self, name: str, state: SavedConnection) -> None:
        """Replace `name`'s stored state."""
        clean = _clean(connection_fields(state), CONNECTION_FIELDS, f"connection {name!r}")
        payload = json.dumps(clean, sort_keys=True, allow_nan=False)
        self._write(
            "save_connection",
            lambda db: db.execute(
                "INSERT INTO connections (name, fields, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET "
                "fields = excluded.fields, updated_at = excluded.updated_at",
                (str(name), payload, time.time()),
            ),
        )

    def load_connections(self) -> dict[str, SavedConnection]:
        """Every stored connection's state. A row that is not what this store writes (bad
        JSON, JSON nested too deep to read, not an object, a name that is no text) is
        skipped and reported by its name, never by its content: the daemon starts."""
        out: dict[str, SavedConnection] = {}
        self.skipped_rows = 0
        rows = self._read("SELECT name, fields FROM connections ORDER BY name", ())
        for name, payload in rows:
            shown = _row_name(name)
            value = _decoded(name, payload)
            why = value if isinstance(value, str) else None
            if not isinstance(value, str):
                try:
                    out[str(name)] = saved_connection(value, f"connection {shown}")
                    continue
                except Exception as exc:  # whatever else a hand-edited row holds
                    why = type(exc).__name__
            self.skipped_rows += 1
            log.warning("state of connection %s skipped: %s; it starts afresh", shown, why)
        return out

    def forget_connection(self, name: str) -> None:
        """Drop `name`'s stored state (its history stays)."""
        self._write(
            "forget_connection",
            lambda db: db.execute("DELETE FROM connections WHERE name = ?", (name,)),
        )

    def append_history(self, record: HistoryRecord) -> None:
        """Append one failover record; the oldest rows beyond `max_history` are pruned."""
        when = _as_seconds(record.time)
        row = (
            time.time() if when is None else when,
            _as_str(_scalar(record.connection)) or "",
            _as_str(_scalar(record.from_gateway)),
            _as_str(_scalar(record.to_gateway)),
            _as_str(_scalar(record.reason)),
            _as_str(_scalar(record.result)),
            _as_seconds(record.duration),
            _as_seconds(record.outage),
        )

        def insert(db: sqlite3.Connection) -> None:
            cursor = db.execute(
                "INSERT INTO history"
                " (time, connection, from_gw, to_gw, reason, result, duration, outage)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            newest = cursor.lastrowid
            if newest is not None and newest > self.max_history:
                # ids only grow (only the oldest rows are ever deleted), so this keeps the
                # newest `max_history` records and costs one index range per append.
                db.execute("DELETE FROM history WHERE id <= ?", (newest - self.max_history,))

        self._write("append_history", insert)

    def history(
        self, connection: str | None = None, since: float | None = None, limit: int = 100
    ) -> Sequence[HistoryRecord]:
        """The newest `limit` records (of `connection`, from wall time `since` on), oldest first,
        each with its row id."""
        if limit <= 0:
            return []
        where: list[str] = []
        args: list[Any] = []
        if connection is not None:
            where.append("connection = ?")
            args.append(connection)
        if since is not None:
            where.append("time >= ?")
            args.append(float(since))
        sql = (
            "SELECT id, time, connection, from_gw, to_gw, reason, result, duration, outage"
            " FROM history"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, id DESC LIMIT ?"
        args.append(int(limit))
        rows = self._read_beside(sql, tuple(args))
        return [history_record(dict(zip(_ROW_KEYS, row, strict=True))) for row in reversed(rows)]

    # --- internals ------------------------------------------------------------------------

    def _ensure_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)  # mkdir's mode is filtered by the umask

    def _connect(self, target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version} is newer than this extsock's {SCHEMA_VERSION}"
                )
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(history)")}
            if "outage" not in columns:  # a schema 1 database: the column comes empty
                db.execute("ALTER TABLE history ADD COLUMN outage REAL")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _connect_file(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        if fresh:
            # Created 0600 before SQLite opens it: SQLite gives -wal and -shm the mode of
            # the database file, so no state file is ever readable by others, even briefly.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        else:
            truncated = _truncation(self.path)
            if truncated:
                log.warning(
                    "state database %s looks truncated (%s): state or history may be missing",
                    self.path,
                    truncated,
                )
        db = self._connect(str(self.path))
        try:
            if not fresh:
                result = db.execute("PRAGMA quick_check").fetchone()
                if result is None or result[0] != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {result and result[0]}")
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("state database %s is not in WAL mode (%s)", self.path, mode)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.chmod(f"{self.path}{suffix}", 0o600)
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if not source.exists():
                continue
            target = Path(f"{self.path}.corrupt-{stamp}{suffix}")
            n = 1
            while target.exists():
                target = Path(f"{self.path}.corrupt-{stamp}.{n}{suffix}")
                n += 1
            try:
                source.rename(target)
                log.warning("moved %s aside to %s", source, target)
            except OSError as exc:
                log.error("could not move %s aside: %s", source, exc)

    def _write(self, what: str, work: Callable[[sqlite3.Connection], object]) -> None:
        """Run `work` in one write transaction under the lock; errors are logged, not raised."""
        with self._lock:
            db = self._db
            if db is None:
                log.error("state store used while closed; %s dropped", what)
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    work(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                log.error("state store: %s failed: %s", what, exc)
                self._recover_if_corrupt(exc)

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            if self._db is None:
                log.error("state store read while closed")
                return []
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                log.error("state store: read failed: %s", exc)
                self._recover_if_corrupt(exc)
                return []

    def _read_beside(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """A read on the reader's connection: the writer's lock is never taken, so the main
        loop's writes do not wait for it. In memory (no file to share), the writer's."""
        if self.in_memory or self._db is None:  # closed: `_read` says so
            return self._read(sql, args)
        with self._read_lock:
            try:
                if self._reader is None:
                    uri = f"{self.path.absolute().as_uri()}?mode=ro"
                    self._reader = sqlite3.connect(
                        uri, uri=True, timeout=5.0, isolation_level=None, check_same_thread=False
                    )
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                log.warning("state store: history read failed (%s); reading on the writer's", exc)
                self._close_reader()
        return self._read(sql, args)

    def _close_reader(self) -> None:
        """Called with the read lock held."""
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.close()

    def _drop_reader(self) -> None:
        with self._read_lock:
            self._close_reader()

    def _recover_if_corrupt(self, exc: sqlite3.Error) -> None:
        """Called with the lock held: a corrupt file found at run time is replaced."""
        text = str(exc).lower()
        if not any(s in text for s in ("malformed", "not a database", "corrupt")):
            return  # busy, full, read-only...: not the file's fault, keep it
        if self._db is None or self.in_memory:
            return
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._read_lock.acquire(timeout=1.0):  # the reader's file is moved aside too
            try:
                self._close_reader()
            finally:
                self._read_lock.release()
        self._db = None
        self._move_aside()
        try:
            self._db = self._connect_file()
        except (sqlite3.DatabaseError, OSError) as again:
            log.error("cannot start a fresh state database (%s); keeping state in memory", again)
            self._db = self._connect(":memory:")
            self.in_memory = True


_MAX_ROW = 16384  # characters: what save_connection writes is a few hundred


def _row_name(name: object) -> str:
    return repr(name[:MAX_TEXT]) if isinstance(name, str) else f"<a {type(name).__name__}>"


def _decoded(name: object, payload: object) -> dict[str, object] | str:
    """A connections row's fields, or why the row cannot be what save_connection wrote."""
    if not isinstance(name, str):
        return "its name is not text"
    if not isinstance(payload, str):
        return "its fields are not text"
    if len(payload) > _MAX_ROW:
        return f"its fields are {len(payload)} characters, more than {_MAX_ROW}"
    try:
        value = json.loads(payload)
    except RecursionError:
        return "its fields are JSON nested too deep"
    except ValueError:
        return "its fields are not JSON"
    if not isinstance(value, dict):
        return f"its fields are a JSON {type(value).__name__}, not an object"
    return value


def saved_connection(fields: Mapping[str, object], what: str = "connection") -> SavedConnection:
    """A connection's state from untrusted fields (a stored row, of this or an older
    extsock): the keys of `CONNECTION_FIELDS`; unknown keys are dropped and logged by name,
    a value of the wrong type reads as None."""
    clean = _clean(fields, CONNECTION_FIELDS, what)
    held = clean.get("held")
    return SavedConnection(
        gateway=_as_str(clean.get("gateway")),
        phase=_as_str(clean.get("phase")),
        held=held if isinstance(held, bool) else None,
        failures_total=_as_count(clean.get("failures_total")),
        cycles_failed=_as_count(clean.get("cycles_failed")),
        attempts_on_gateway=_as_count(clean.get("attempts_on_gateway")),
        last_up=_as_str(clean.get("last_up")),
    )


def connection_fields(state: SavedConnection) -> dict[str, Scalar]:
    """`state` under the store's keys (the JSON object of its row)."""
    return {
        "gateway": state.gateway,
        "phase": state.phase,
        "held": state.held,
        "failures_total": state.failures_total,
        "cycles_failed": state.cycles_failed,
        "attempts_on_gateway": state.attempts_on_gateway,
        "last_up": state.last_up,
    }


def history_record(fields: Mapping[str, object]) -> HistoryRecord:
    """A history record from untrusted fields (a stored row, or an older caller's mapping):
    the keys of `HISTORY_FIELDS` plus "id"; unknown keys are dropped and logged by name, a
    value of the wrong type becomes None (a time that is no number becomes now)."""
    clean = _clean(fields, HISTORY_FIELDS | {"id"}, "history record")
    when = _as_seconds(clean.get("time"))
    record_id = clean.get("id")
    return HistoryRecord(
        time=time.time() if when is None else when,
        connection=_as_str(clean.get("connection")) or "",
        from_gateway=_as_str(clean.get("from")),
        to_gateway=_as_str(clean.get("to")),
        reason=_as_str(clean.get("reason")),
        result=_as_str(clean.get("result")),
        duration=_as_seconds(clean.get("duration")),
        outage=_as_seconds(clean.get("outage")),
        id=record_id if isinstance(record_id, int) and not isinstance(record_id, bool) else None,
    )


def _clean(fields: Mapping[str, Any], allowed: frozenset[str], what: str) -> dict[str, Scalar]:
    unknown = sorted(str(k) for k in fields if k not in allowed)
    if unknown:
        log.warning("%s: unknown fields not stored: %s", what, ", ".join(unknown))
    return {k: _scalar(v) for k, v in fields.items() if k in allowed}


def _scalar(value: Any) -> Scalar:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _text(value)
    return None  # anything structured could carry anything: not stored


def _text(value: str) -> str:
    return value[:MAX_TEXT]


def _as_str(value: Scalar) -> str | None:
    return None if value is None else _text(str(value))


def _truncation(path: Path) -> str:
    """Why the database file looks cut short ('' when it does not): shorter than the page
    count its own header states, not a whole number of pages, or empty."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            header = file.read(100)
    except OSError:
        return ""
    if size == 0:
        return "the file is empty"
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return ""  # not a database at all: quick_check says so and the file is moved aside
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the header's page count is current
    if page_size and size % page_size:
        return f"{size} bytes, not a whole number of {page_size}-byte pages"
    if valid and pages and size < pages * page_size:
        return f"{size // page_size} of the {pages} pages its header states"
    return ""


def _as_count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_seconds(value: object) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
