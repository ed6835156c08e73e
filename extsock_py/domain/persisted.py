"""What extsock keeps of a connection across its own restart (the state store's row)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SavedConnection:
    """The last known state of one managed connection: gateways, phase, hold and counts,
    never a secret. None is "not known" (a row of an older extsock may lack a field)."""

    gateway: str | None = None
    phase: str | None = None
    held: bool | None = None
    failures_total: int | None = None
    cycles_failed: int | None = None
    attempts_on_gateway: int | None = None
    last_up: str | None = None  # the gateway it was last up on
