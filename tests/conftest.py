"""Options and collection rules shared by every test directory.

- ``--soak-cycles=N``: failover cycles of the soak test (``make soak``; default 1000).
- Tests marked ``soak`` run only when selected with ``-m soak`` (or a marker expression
  naming soak); a plain ``pytest tests`` skips them.
"""

from __future__ import annotations

import pytest

DEFAULT_SOAK_CYCLES = 1000


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-cycles",
        type=int,
        default=DEFAULT_SOAK_CYCLES,
        help=f"failover cycles of the soak test (default {DEFAULT_SOAK_CYCLES})",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="soak test: run with -m soak (make soak)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@pytest.fixture
def soak_cycles(request: pytest.FixtureRequest) -> int:
    return max(1, int(request.config.getoption("--soak-cycles")))
