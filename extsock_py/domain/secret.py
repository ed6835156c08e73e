"""A holder for secret bytes that never shows them in repr, str, format or logs."""

from __future__ import annotations

import hmac
from typing import final


@final
class Secret:
    """Secret bytes (a PSK, a private key). Only `reveal()` gives them out."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError("Secret holds bytes")
        self._data = data

    def reveal(self) -> bytes:
        """The secret bytes, for the one place that must send them (a VICI message)."""
        return self._data

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._data, other._data)

    def __hash__(self) -> int:
        return hash((Secret, self._data))

    def __reduce__(self) -> tuple[type[Secret], tuple[bytes]]:
        return (Secret, (self._data,))
