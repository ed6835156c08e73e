"""The extsock policy section: defaults, overrides, every error names file, line and key."""

from __future__ import annotations

import pytest

from extsock_py.adapters.policy_conf import parse_duration, read_policies
from extsock_py.adapters.swanctl.settings import parse_settings
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.policy import FailoverPolicy


def policies(text: str, conns: list[str] | None = None) -> dict[str, FailoverPolicy]:
    root = parse_settings(text, "swanctl.conf")
    return read_policies(root.sections.get("extsock"), conns or ["home"])[1]


def error(text: str, conns: list[str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        policies(text, conns)
    return caught.value


def test_no_section_means_defaults() -> None:
    assert policies("connections {}\n")["home"] == FailoverPolicy()


def test_defaults_and_overrides_merge() -> None:
    got = policies(
        """
extsock {
    connect_timeout = 2s
    backoff { initial = 500ms
              maximum = 1m }
    failback { enabled = yes }
    connections {
        home { dead_after_retransmits = 2
               failback { hold_down = 10s } }
    }
}
""",
        ["home", "work"],
    )
    home, work = got["home"], got["work"]
    assert home.connect_timeout == work.connect_timeout == 2.0
    assert home.backoff.initial == 0.5 and home.backoff.maximum == 60.0
    assert home.dead_after_retransmits == 2 and work.dead_after_retransmits == 1
    assert home.failback.enabled and home.failback.hold_down == 10.0
    assert work.failback.enabled and work.failback.hold_down == 30.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5", 5.0), ("5s", 5.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_unknown_key_names_line_key_and_suggestion() -> None:
    err = error("extsock {\n    conect_timeout = 5s\n}\n")
    assert err.line == 2
    assert err.key == "extsock.conect_timeout"
    assert "did you mean 'connect_timeout'" in str(err)
    assert "connect_timeout" in (err.accepted or "")


def test_bad_duration_is_clear() -> None:
    err = error("extsock {\n  failback {\n    hold_down = soon\n  }\n}\n")
    assert err.line == 3
    assert err.key == "extsock.failback.hold_down"
    assert "500ms" in str(err)


def test_bad_bool_and_range() -> None:
    assert "yes or no" in str(error("extsock {\n failback {\n  enabled = maybe\n }\n}\n"))
    err = error("extsock {\n  attempts_per_gateway = 0\n}\n")
    assert err.key == "extsock.attempts_per_gateway" and err.line == 2


def test_override_for_unknown_connection() -> None:
    err = error("extsock {\n connections {\n  hom {\n  }\n }\n}\n")
    assert err.key == "extsock.connections.hom"
    assert "did you mean 'home'" in str(err)


def test_error_in_override_points_at_override_line() -> None:
    text = (
        "extsock {\n connect_timeout = 1s\n connections {\n"
        "  home {\n   max_cycles = -1\n  }\n }\n}\n"
    )
    err = error(text)
    assert err.line == 5
    assert err.key == "extsock.connections.home.max_cycles"
