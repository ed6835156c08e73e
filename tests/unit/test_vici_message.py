"""message.deserialize reads what the vici package's Message.deserialize reads, the same."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vici.exception import DeserializationException
from vici.protocol import FiniteStream, Message

from extsock_py.adapters.vici.message import deserialize

names = st.text(min_size=1, max_size=12)
values = st.binary(max_size=300)
messages: st.SearchStrategy[dict[str, Any]] = st.recursive(
    st.dictionaries(names, values | st.lists(values, max_size=4), max_size=5),
    lambda inner: st.dictionaries(names, values | st.lists(values, max_size=4) | inner, max_size=5),
    max_leaves=30,
)


def _vici(data: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = Message.deserialize(FiniteStream(data))
    return decoded


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@settings(max_examples=100, deadline=None)
@given(messages)
def test_any_message_reads_as_the_vici_package_reads_it(message: dict[str, Any]) -> None:
    data = Message.serialize(message)
    ours = deserialize(data)
    assert ours == _plain(_vici(data))
    assert list(ours) == list(_vici(data))  # in order


def test_a_list_sa_event_as_charon_sends_it() -> None:
    sa = {
        "home@10.0.0.1": {
            "uniqueid": b"7",
            "state": b"ESTABLISHED",
            "local-vips": [b"10.3.0.5", b"fd00::5"],
            "child-sas": {"net-9": {"name": b"net", "uniqueid": b"9", "state": b"INSTALLED"}},
        }
    }
    assert deserialize(Message.serialize(sa)) == sa


@pytest.mark.parametrize(
    "data",
    [
        b"\x02",  # end of a section never started
        b"\x01\x04home",  # section never ended
        b"\x03\x03key\x00\x05ab",  # value shorter than its length
        b"\x03\x09key",  # name shorter than its length
        b"\x04\x04list\x05\x00\x01a\x03",  # list not ended
        b"\x04\x04list\x05\x00\x01a",  # list cut off
        b"\x03\x02\xff\xfe\x00\x00",  # name not UTF-8
    ],
)
def test_malformed_messages_raise_deserialization_exception(data: bytes) -> None:
    with pytest.raises(DeserializationException):
        deserialize(data)
