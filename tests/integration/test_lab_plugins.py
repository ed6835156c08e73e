"""A charon that did not load a plugin of its load list stops `lab up` at once, naming the
plugin and the Debian package that ships it (real charon daemons; needs root).

The fresh machine's failure is reproduced faithfully: each lab charon runs in its own mount
namespace, and there the plugin's .so is hidden under /dev/null, so charon logs
`plugin 'openssl': failed to load` exactly as where the package is not installed."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import extsock_py.lab.lab as lab_module
from extsock_py.lab import netns
from extsock_py.lab.lab import Lab, LabError
from extsock_py.lab.topology import swanctl_templates_dir

from .conftest import PREFIX, lab_config

pytestmark = pytest.mark.integration

PLUGIN_DIR = Path("/usr/lib/ipsec/plugins")
# A prefix of its own (derived from the session's), so the module's labs never meet another's.
OWN_PREFIX = PREFIX[:-1][:5] + "p-"
UP_TIMEOUT = 20.0


def _assert_gone(lab: Lab) -> None:
    assert not any(netns.ns_exists(lab.namespace(n)) for n in lab.nodes)
    assert not lab.state_dir.exists()


def test_a_hidden_plugin_stops_lab_up_naming_its_package(
    lab_preflight: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide = " ".join(
        f"mount --bind /dev/null {PLUGIN_DIR}/libstrongswan-{p}.so;" for p in ("openssl", "gcm")
    )
    monkeypatch.setattr(lab_module, "_CHARON_SCRIPT", f"{hide} {lab_module._CHARON_SCRIPT}")
    lab = Lab(lab_config(prefix=OWN_PREFIX), state_dir=tmp_path / "lab")
    started = time.monotonic()
    with pytest.raises(LabError) as err:
        lab.up(timeout=UP_TIMEOUT)
    elapsed = time.monotonic() - started
    message = str(err.value)
    assert "charon of ini: charon did not load plugins openssl, gcm" in message
    assert "apt-get install libstrongswan-standard-plugins" in message
    assert elapsed < 10.0, f"took {elapsed:.1f} s"
    _assert_gone(lab)


def test_a_plugin_no_package_ships_is_named(lab_preflight: None, tmp_path: Path) -> None:
    templates = tmp_path / "swanctl"
    shutil.copytree(swanctl_templates_dir(), templates)
    conf = templates / "segw" / "strongswan.conf"
    conf.write_text(conf.read_text().replace("load = $plugins", "load = $plugins nosuchplugin"))
    lab = Lab(lab_config(prefix=OWN_PREFIX), state_dir=tmp_path / "lab", templates=templates)
    with pytest.raises(LabError, match=r"charon of segw1: charon did not load plugin nosuchplugin"):
        lab.up(timeout=UP_TIMEOUT)
    _assert_gone(lab)
