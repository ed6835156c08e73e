"""The lab's plugin lists against the Debian packages install-deps and the Dockerfile install,
and the check that every plugin of a load list loaded (extsock_py/lab/plugins.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from extsock_py.lab.plugins import (
    DEBIAN_PLUGIN_PACKAGES,
    LAB_LOAD_LIST,
    MissingPlugin,
    PluginsMissing,
    check_loaded,
    failed_in_log,
    missing_plugins,
    parse_load_list,
    parse_loaded,
)
from extsock_py.lab.topology import LabConfig, render_strongswan_conf

REPO = Path(__file__).resolve().parents[2]


def install_deps_packages() -> set[str]:
    """The DEB_PACKAGES=( ... ) array of scripts/install-deps.sh (one package a line)."""
    text = (REPO / "scripts" / "install-deps.sh").read_text()
    match = re.search(r"^DEB_PACKAGES=\((?P<body>.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert match, "scripts/install-deps.sh: no DEB_PACKAGES=( ... ) array"
    words: list[str] = []
    for line in match["body"].splitlines():
        words += line.split("#", 1)[0].split()
    return set(words)


def dockerfile_packages() -> set[str]:
    """Every word of docker/Dockerfile's `apt-get install` command."""
    text = (REPO / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"apt-get install (?P<args>[^&\n]*)", text)
    assert match, "docker/Dockerfile: no apt-get install"
    return {w for w in match["args"].split() if not w.startswith("-")}


def lab_load_lists() -> dict[str, tuple[str, ...]]:
    """The load list of each kind of lab node, as rendered into its strongswan.conf."""
    return {
        node: parse_load_list(
            render_strongswan_conf(node, LabConfig(), vici_socket="/v", log_path="/l")
        )
        for node in ("ini", "segw1")
    }


def test_the_rendered_load_lists_are_the_lab_list() -> None:
    for node, plugins in lab_load_lists().items():
        assert plugins == LAB_LOAD_LIST, node


@pytest.mark.parametrize("source", ["install-deps.sh", "Dockerfile"])
def test_every_lab_plugin_comes_from_an_installed_package(source: str) -> None:
    installed = install_deps_packages() if source == "install-deps.sh" else dockerfile_packages()
    plugins = sorted({p for plugins in lab_load_lists().values() for p in plugins})
    unknown = [p for p in plugins if p not in DEBIAN_PLUGIN_PACKAGES]
    assert not unknown, f"no Debian package known for {unknown}: add it to plugins.py"
    missing = {p: DEBIAN_PLUGIN_PACKAGES[p] for p in plugins}
    missing = {p: pkg for p, pkg in missing.items() if pkg not in installed}
    assert not missing, f"{source} does not install the packages of {missing}"


def test_the_plugin_packages_the_fresh_machine_lacked_are_installed() -> None:
    # Measured on a fresh Debian 12: without these, every lab IKE_SA failed.
    for package in ("libstrongswan-standard-plugins", "libstrongswan-extra-plugins"):
        assert package in install_deps_packages()
        assert package in dockerfile_packages()


def test_parse_load_list_reads_the_first_load_line() -> None:
    conf = "charon {\n    load = random nonce openssl! vici\n    plugins {\n    }\n}\n"
    assert parse_load_list(conf) == ("random", "nonce", "openssl", "vici")
    assert parse_load_list("charon {\n}\n") == ()


def test_parse_loaded_and_failed_from_a_charon_log() -> None:
    log = (
        "00:00:01.001 00[DMN] Starting IKE charon daemon (strongSwan 5.9.8, Linux, x86_64)\n"
        "00:00:01.002 00[LIB] plugin 'openssl': failed to load - openssl_plugin_create not "
        "found and no plugin file available\n"
        "00:00:01.002 00[LIB] plugin 'gcm' failed to load: /usr/lib/ipsec/plugins/libstrongswan-"
        "gcm.so: file too short\n"
        "00:00:01.003 00[LIB] plugin 'openssl': failed to load - again\n"
        "00:00:01.010 00[LIB] loaded plugins: charon random nonce vici\n"
    )
    assert parse_loaded(log) == ("charon", "random", "nonce", "vici")
    assert parse_loaded("nothing yet\n") is None
    assert failed_in_log(log) == ("openssl", "gcm")


def test_check_loaded_passes_when_all_loaded() -> None:
    check_loaded("charon of ini", LAB_LOAD_LIST, ("charon", *LAB_LOAD_LIST))


def test_check_loaded_names_plugin_and_package() -> None:
    loaded = [p for p in LAB_LOAD_LIST if p not in ("openssl", "gcm", "curve25519")]
    with pytest.raises(PluginsMissing) as err:
        check_loaded("charon of segw1", LAB_LOAD_LIST, loaded)
    message = str(err.value)
    assert message.startswith("charon of segw1: charon did not load plugins openssl, curve25519")
    assert "gcm" in message
    assert "apt-get install libstrongswan-extra-plugins libstrongswan-standard-plugins" in message
    assert err.value.missing[0] == MissingPlugin("openssl", "libstrongswan-standard-plugins")


def test_a_plugin_no_package_ships_is_named_as_such() -> None:
    missing = missing_plugins(["random", "bogus!"], ["random"])
    assert missing == (MissingPlugin("bogus", None),)
    with pytest.raises(PluginsMissing, match="no Debian package known for bogus"):
        check_loaded("charon of ini", ["random", "bogus"], ["random"])


def test_the_load_list_is_data_a_strongswan6_list_checks_the_same_way() -> None:
    six = [p for p in LAB_LOAD_LIST if p not in ("sha1", "sha2", "hmac", "aes", "kdf")]
    check_loaded("charon 6.0.1 of ini", six, six)
    with pytest.raises(PluginsMissing, match="plugin sha1 "):
        check_loaded("charon of ini", LAB_LOAD_LIST, [*six, "sha2", "hmac", "aes", "kdf"])


def test_check_plugins_command_against_a_fake_charon(tmp_path: Path) -> None:
    """`extsock lab check-plugins` (docker/entrypoint.sh): the fake charon loaded random,
    nonce and vici only."""
    from click.testing import CliRunner

    from extsock_py.lab.cli import lab
    from tests.fakes.fake_charon import FakeCharon

    good = tmp_path / "good.conf"
    good.write_text("charon {\n    load = random nonce vici\n}\n")
    bad = tmp_path / "bad.conf"
    bad.write_text("charon {\n    load = random nonce openssl vici\n}\n")
    with FakeCharon() as fake:
        args = ["check-plugins", "--vici-socket", fake.path, "--name", "charon of ini"]
        ok = CliRunner().invoke(lab, [*args, "--conf", str(good)])
        assert ok.exit_code == 0, ok.output
        assert "all 3 plugins" in ok.output
        no = CliRunner().invoke(lab, [*args, "--conf", str(bad)])
    assert no.exit_code == 1
    assert "charon of ini: charon did not load plugin openssl" in no.output
    assert "libstrongswan-standard-plugins" in no.output
