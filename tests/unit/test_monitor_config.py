"""The `monitor` policy: validated when the file is read, every error names file, line, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from extsock_py.adapters.config_reader import read_desired_config
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.policy import MonitorPolicy
from tests.unit.test_policy_conf import error, policies


def test_off_by_default() -> None:
    assert policies("extsock {}\n")["home"].monitor == MonitorPolicy()
    assert not MonitorPolicy().enabled


def test_a_full_monitor_section() -> None:
    got = policies(
        """
extsock {
    monitor {
        enabled = yes
        local = 10.100.0.1
        remote = 10.200.0.1
        port = 40000
        interval = 200ms
        misses = 5
        netns = ex8-ini
    }
}
"""
    )["home"].monitor
    assert got == MonitorPolicy(True, "10.100.0.1", "10.200.0.1", 40000, 0.2, 5, "ex8-ini")


def test_defaults_may_enable_and_each_connection_give_its_addresses() -> None:
    got = policies(
        """
extsock {
    monitor { enabled = yes }
    connections {
        home { monitor { local = 10.1.0.1
                         remote = 10.2.0.1 } }
    }
}
"""
    )
    assert got["home"].monitor.enabled and got["home"].monitor.local == "10.1.0.1"


def test_enabled_without_local_names_the_key() -> None:
    err = error("extsock {\n  monitor {\n    enabled = yes\n    remote = 10.2.0.1\n  }\n}\n")
    assert err.key == "extsock.monitor.local" and err.line == 3
    assert "enabled without it" in str(err)


def test_a_connection_left_without_remote_names_its_override() -> None:
    text = (
        "extsock {\n  monitor { enabled = yes }\n  connections {\n"
        "    home {\n      monitor { local = 10.1.0.1 }\n    }\n  }\n}\n"
    )
    err = error(text)
    assert err.key == "extsock.connections.home.monitor.remote"


def test_bad_address_and_family_mismatch() -> None:
    err = error("extsock {\n  monitor {\n    local = 10.1.0.300\n  }\n}\n")
    assert err.key == "extsock.monitor.local" and err.line == 3
    assert "invalid address" in err.message
    err = error(
        "extsock {\n  monitor {\n    enabled = yes\n    local = 10.1.0.1\n"
        "    remote = fd00::1\n  }\n}\n"
    )
    assert err.key == "extsock.monitor.remote" and err.line == 5


def test_bad_netns_name() -> None:
    err = error("extsock {\n  monitor {\n    netns = ../etc\n  }\n}\n")
    assert err.key == "extsock.monitor.netns"


CONF = """\
connections {
    home {
        remote_addrs = 192.0.2.1, 192.0.2.2
        local { auth = psk }
        remote { auth = psk }
        children { net { local_ts = 10.1.0.0/24 } }
    }
}
extsock {
    monitor {
        enabled = yes
        local = %s
        remote = 10.2.0.1
    }
}
"""


def test_a_local_address_present_on_the_host_is_accepted(tmp_path: Path) -> None:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF % "127.0.0.1")
    assert read_desired_config(conf).policies["home"].monitor.local == "127.0.0.1"


def test_a_local_address_absent_from_the_host_is_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF % "192.0.2.123")
    with pytest.raises(ConfigError) as caught:
        read_desired_config(conf)
    err = caught.value
    assert err.file == str(conf) and err.line == 12 and err.key == "extsock.monitor.local"
    assert str(err).startswith(f"{conf}:12: key 'extsock.monitor.local': address 192.0.2.123")
    assert "not an address of this host" in str(err)


def test_the_monitor_interval_goes_down_to_20ms_and_no_lower() -> None:
    """Issue 28: BFD-class probing (3 x 30 ms) needs intervals below the 100 ms of the other
    durations; 20 ms is the floor, and the error names it."""
    text = "extsock {\n  monitor {\n    interval = %s\n  }\n}\n"
    assert policies(text % "20ms")["home"].monitor.interval == pytest.approx(0.02)
    assert policies(text % "30ms")["home"].monitor.interval == pytest.approx(0.03)
    err = error(text % "19ms")
    assert err.key == "extsock.monitor.interval" and err.line == 3
    assert "19ms is too short: at least 20ms" in str(err) and "20ms to 1m" in str(err)


def test_the_other_durations_keep_their_100ms_floor() -> None:
    err = error("extsock {\n  failback {\n    probe_interval = 30ms\n  }\n}\n")
    assert err.key == "extsock.failback.probe_interval" and "at least 100ms" in str(err)
