"""VICI messages decoded from bytes by index: what `vici.protocol.Message.deserialize` returns.

The `vici` package reads a message through a BytesIO whose length it takes, at every
element, from a copy of the whole buffer: decoding `list-sas` with 200 IKE_SAs cost ~30 ms
on the main loop every 30 s while idle. This reads the same encoding in place.

A message is a sequence of elements, each a type byte: SECTION_START (1) and LIST_START (4)
with a name (one length byte, UTF-8), SECTION_END (2), KEY_VALUE (3) with a name and a value
(two length bytes, big-endian), LIST_ITEM (5) with a value, LIST_END (6).
"""

from __future__ import annotations

from typing import Any

from vici.exception import DeserializationException

SECTION_START, SECTION_END, KEY_VALUE, LIST_START, LIST_ITEM, LIST_END = 1, 2, 3, 4, 5, 6


def _truncated(pos: int) -> DeserializationException:
    return DeserializationException(f"message truncated at {pos}")


def deserialize(data: bytes) -> dict[str, Any]:
    """Sections as dicts, lists as lists of bytes, values as bytes, names as str (as the
    `vici` package returns them, in order). DeserializationException when malformed."""
    size = len(data)
    root: dict[str, Any] = {}
    section = root
    stack: list[dict[str, Any]] = []
    pos = 0
    try:
        while pos < size:
            kind = data[pos]
            pos += 1
            if kind == SECTION_END:
                if not stack:
                    raise DeserializationException(f"Unexpected end of section at {pos}")
                section = stack.pop()
                continue
            if kind not in (SECTION_START, KEY_VALUE, LIST_START):
                continue  # as the vici package: an unknown element type is skipped
            end = pos + 1 + data[pos]
            if end > size:
                raise _truncated(pos)
            name = data[pos + 1 : end].decode("utf-8")
            pos = end
            if kind == KEY_VALUE:
                end = pos + 2 + (data[pos] << 8 | data[pos + 1])
                if end > size:
                    raise _truncated(pos)
                section[name] = data[pos + 2 : end]
                pos = end
            elif kind == SECTION_START:
                child: dict[str, Any] = {}
                section[name] = child
                stack.append(section)
                section = child
            else:
                items: list[bytes] = []
                while data[pos] == LIST_ITEM:
                    end = pos + 3 + (data[pos + 1] << 8 | data[pos + 2])
                    if end > size:
                        raise _truncated(pos)
                    items.append(data[pos + 3 : end])
                    pos = end
                if data[pos] != LIST_END:
                    raise DeserializationException(f"Expected end of list at {pos}")
                pos += 1
                section[name] = items
    except IndexError as exc:
        raise _truncated(pos) from exc
    except UnicodeDecodeError as exc:
        raise DeserializationException(f"name not UTF-8 at {pos}: {exc}") from exc
    if stack:
        raise DeserializationException("Expected end of section")
    return root
