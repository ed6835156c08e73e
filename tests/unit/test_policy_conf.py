"""The extsock policy section: defaults, overrides, every error names file, line and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import pytest
from pydantic import TypeAdapter, ValidationError

from extsock_py.adapters.policy_conf import DomainSchema, parse_duration, read_policies
from extsock_py.adapters.swanctl.settings import parse_settings
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.policy import Accepts, FailoverPolicy, Form


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


def test_one_schema_the_domain_dataclasses_with_their_own_defaults() -> None:
    """Each default lives once, in domain/policy.py: the reader validates those dataclasses
    (pydantic's TypeAdapter), it keeps no model of its own, and the domain needs no pydantic."""
    from pathlib import Path

    from pydantic import BaseModel

    import extsock_py.adapters.policy_conf as conf
    import extsock_py.domain

    assert conf.validate_policy({}) == FailoverPolicy()
    assert not [
        name
        for name, value in vars(conf).items()
        if isinstance(value, type) and issubclass(value, BaseModel)
    ]
    root = Path(extsock_py.domain.__file__).parent
    assert [p.name for p in root.rglob("*.py") if "pydantic" in p.read_text()] == []


@dataclass(frozen=True)
class Inner:
    on: Annotated[bool, Accepts(Form.FLAG)] = True


@dataclass(frozen=True)
class Outer:
    wait: Annotated[float, Accepts(Form.DURATION, gt=0, le=60.0)] = 7.0
    count: Annotated[int, Accepts(ge=1, le=3)] = 2
    inner: Inner = field(default_factory=Inner)


def test_a_new_key_is_one_field_of_a_domain_dataclass() -> None:
    """What the reader accepts, and each default, comes from the dataclass and its Accepts."""
    check = TypeAdapter[Outer](Annotated[Outer, DomainSchema()])
    assert check.validate_python({}) == Outer(7.0, 2, Inner(True))
    assert check.validate_python({"wait": "500ms", "inner": {"on": "no"}}) == Outer(
        0.5, 2, Inner(False)
    )
    for bad, where in (
        ({"wait": "2m"}, ("wait",)),
        ({"count": "4"}, ("count",)),
        ({"inner": {"of": "yes"}}, ("inner", "of")),
    ):
        with pytest.raises(ValidationError) as caught:
            check.validate_python(bad)
        assert caught.value.errors()[0]["loc"] == where


def test_switch_drain_defaults_to_a_second_and_reads_as_a_duration() -> None:
    assert FailoverPolicy().switch_drain == 1.0
    text = (
        "extsock {\n  switch_drain = 0\n"
        "  connections {\n    home { switch_drain = 250ms }\n  }\n}\n"
    )
    assert policies(text, ["home", "office"])["home"].switch_drain == 0.25
    assert policies(text, ["home", "office"])["office"].switch_drain == 0.0
    err = error("extsock {\n  switch_drain = 11m\n}\n")
    assert (err.key, err.line) == ("extsock.switch_drain", 2)
    assert "at most 10m" in str(err)


def test_standby_is_off_by_default_and_set_per_connection() -> None:
    got = policies(
        "extsock {\n connections {\n  work {\n   standby = yes\n  }\n }\n}\n", ["home", "work"]
    )
    assert not got["home"].standby and got["work"].standby
    assert not FailoverPolicy().standby
    bad = error("extsock {\n standby = maybe\n}\n")
    assert bad.key == "extsock.standby" and bad.line == 2 and "yes or no" in str(bad)


def test_remote_id_is_configured_or_address_per_connection() -> None:
    got = policies(
        "extsock {\n  connections {\n    cloud {\n      remote_id = Address\n    }\n  }\n}\n",
        ["home", "cloud"],
    )
    assert (got["home"].remote_id, got["cloud"].remote_id) == ("configured", "address")
    err = error("extsock {\n  remote_id = peer\n}\n")
    assert (err.line, err.key) == (2, "extsock.remote_id")
    assert "invalid remote_id 'peer': expected configured or address" in err.message


def test_clone_if_id_base_is_off_by_default_and_reads_as_a_number() -> None:
    assert FailoverPolicy().clone_if_id_base == 0
    text = "extsock {\n  connections {\n    home { clone_if_id_base = 100 }\n  }\n}\n"
    assert policies(text, ["home", "office"])["home"].clone_if_id_base == 100
    assert policies(text, ["home", "office"])["office"].clone_if_id_base == 0
    err = error("extsock {\n  clone_if_id_base = -1\n}\n")
    assert (err.key, err.line) == ("extsock.clone_if_id_base", 2)
