"""charon's dialects: per strongSwan release, its events and the wording of its log lines.

The listener reads charon's version when it connects, picks a dialect (`choose`), registers
the events the dialect names, and has its reader turn raw `log` and `alert` events into the
typed `IkeSignal` observations the event usecase takes. Nothing outside this package knows
how charon words a line.
"""

from extsock_py.adapters.vici.dialects.releases import (
    BASE_EVENTS,
    DIALECTS,
    NEWEST_KNOWN,
    Choice,
    Dialect,
    DialectReader,
    choose,
    parse_version,
)

__all__ = [
    "BASE_EVENTS",
    "DIALECTS",
    "NEWEST_KNOWN",
    "Choice",
    "Dialect",
    "DialectReader",
    "choose",
    "parse_version",
]
