"""extsock reads traffic selectors as the real charon does (issue 24, finding 1).

A connection is loaded straight into the lab's ini charon over VICI with each selector
text, and charon's own `list-conns` says what it made of it; `selectors.charon_reading`
must say the same (None where charon refuses the text), and the strict reading used for
pushed connections must refuse every text where charon and Python's `ipaddress` differ.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from extsock_py.domain.selectors import SelectorError, charon_reading, strict_reading
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import INI

pytestmark = pytest.mark.integration

TEXTS = [
    "0.0.0.0/0x",
    "10.0.0.0/8abc",
    "0.0.0.0/+0",
    "0.0.0.0/ 0",
    "10.0.0.0/264",
    "10.0.0.0/",
    "10.1.2.3/-1",
    "%any",
    "10.0.0.0 - 10.0.0.3",
    "10.0.0.0/24[tcp/80]",
    "10.50.1.0/24",
    "2001:db8::/32",
    "::ffff:1.2.3.4",
    "host.example",
]


def _charon_says(lab: Lab, text: str) -> list[str] | None:
    """charon's local-ts for a connection loaded with `text` (None: charon refused it)."""
    name = "ps-ts-probe"
    body: dict[str, Any] = {
        "remote_addrs": ["192.0.2.1"],
        "local": {"auth": "psk", "id": "probe.example"},
        "remote": {"auth": "psk"},
        "children": {"c": {"local_ts": [text], "remote_ts": ["10.9.0.0/16"]}},
    }
    with lab.vici_session(INI) as session:
        try:
            session.load_conn({name: body})
        except Exception:  # vici raises CommandException on a refused config
            return None
        try:
            conns = list(session.list_conns({"conn": name}))
            child = conns[0][name]["children"]["c"]
            return [v.decode() for v in child["local-ts"]]
        finally:
            session.unload_conn({"name": name})


def _as_networks(shown: list[str]) -> list[str]:
    """charon prints a subnet as NET/BITS and other ranges as FROM..TO: as networks."""
    out: list[str] = []
    for item in shown:
        item = item.split("[", 1)[0]
        if ".." in item:
            low, high = item.split("..")
            nets = ipaddress.summarize_address_range(
                ipaddress.ip_address(low), ipaddress.ip_address(high)
            )
            out.extend(str(n) for n in nets)
        else:
            out.append(str(ipaddress.ip_network(item, strict=False)))
    return out


def test_selectors_read_as_charon_reads_them(lab: Lab) -> None:
    for text in TEXTS:
        shown = _charon_says(lab, text)
        mine = charon_reading(text)
        if shown is None:
            assert mine is None, (text, mine)
            continue
        assert mine is not None, (text, shown)
        assert _as_networks(shown) == [str(n) for n in mine.networks], (text, shown)
        try:
            strict = strict_reading(text)
        except SelectorError:
            continue
        # what the strict reading accepts, Python's ipaddress and charon read alike
        assert strict == mine, text
