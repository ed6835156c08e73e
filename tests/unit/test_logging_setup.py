"""Log lines on the journal: a syslog priority prefix, no time stamp of our own."""

from __future__ import annotations

import logging
import os
import tempfile

from extsock_py.adapters.logging_setup import JournalFormatter, on_journal


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("extsock.daemon", level, __file__, 1, message, None, None)


def test_journal_lines_carry_the_priority_and_no_time() -> None:
    fmt = JournalFormatter()
    assert fmt.format(record(logging.ERROR, "reload refused")) == (
        "<3>ERROR   extsock.daemon: reload refused"
    )
    assert fmt.format(record(logging.WARNING, "w")).startswith("<4>WARNING")
    assert fmt.format(record(logging.DEBUG, "d")).startswith("<7>")
    assert fmt.format(record(logging.INFO, "a\nb")) == "<6>INFO    extsock.daemon: a\n  b"


def test_the_journal_is_recognised_by_device_and_inode_only() -> None:
    with tempfile.TemporaryFile("w") as stream:
        info = os.fstat(stream.fileno())
        assert on_journal(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        assert not on_journal(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
        assert not on_journal(stream, {})
        assert not on_journal(stream, {"JOURNAL_STREAM": "garbage"})
