"""Lab nodes on other strongSwan releases: config, per-release plugin lists, the root cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from extsock_py.lab import roots
from extsock_py.lab.plugins import LAB_LOAD_LIST
from extsock_py.lab.releases import LOAD_LIST_6, RELEASES, release
from extsock_py.lab.topology import LabConfig, render_strongswan_conf


def test_every_node_defaults_to_the_hosts_charon() -> None:
    cfg = LabConfig()
    assert [cfg.charon_of(n) for n in cfg.nodes] == ["bookworm"] * 3
    assert RELEASES["bookworm"].host


def test_a_node_can_run_another_release() -> None:
    cfg = LabConfig(charon="trixie", node_charon=("ini=sid",))
    assert [cfg.charon_of(n) for n in cfg.nodes] == ["sid", "trixie", "trixie"]
    assert LabConfig.from_dict(cfg.to_dict()) == cfg  # JSON gives a list back


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"charon": "buster"}, "unknown charon release 'buster'; accepted: bookworm, trixie, sid"),
        ({"node_charon": ("segw3=sid",)}, "expected NODE=RELEASE with NODE one of ini, segw1"),
        ({"node_charon": ("ini",)}, "expected NODE=RELEASE"),
        ({"node_charon": ("ini=jessie",)}, "unknown charon release 'jessie'"),
    ],
)
def test_bad_releases_are_named(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        LabConfig(**kwargs)  # type: ignore[arg-type]


def test_strongswan_6_gets_its_own_load_list(tmp_path: Path) -> None:
    gone = {"sha1", "sha2", "hmac", "aes", "kdf"}
    assert gone <= set(LAB_LOAD_LIST) and not gone & set(LOAD_LIST_6)
    assert set(LOAD_LIST_6) == set(LAB_LOAD_LIST) - gone
    cfg = LabConfig(node_charon=("ini=sid",))
    text = {
        node: render_strongswan_conf(node, cfg, vici_socket="/x", log_path="/y")
        for node in cfg.nodes
    }
    assert f"load = {' '.join(LOAD_LIST_6)}\n" in text["ini"]
    assert f"load = {' '.join(LAB_LOAD_LIST)}\n" in text["segw1"]
    with pytest.raises(ValueError):
        release("stretch")


def test_mmdebstrap_is_asked_for_charon_and_its_plugins() -> None:
    argv = roots.mmdebstrap_argv(RELEASES["sid"], Path("/cache/.sid.build-1"))
    assert argv[0] == "mmdebstrap" and argv[-2:] == ["sid", "/cache/.sid.build-1"]
    include = next(a for a in argv if a.startswith("--include="))
    for package in ("strongswan-charon", "strongswan-swanctl", "libcharon-extra-plugins"):
        assert package in include
    assert not any("http" in a for a in argv)  # Debian's default mirror, as the host's apt


def _fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "sid"
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "libstrongswan.list").write_text(
        "/usr/lib/ipsec/plugins\n/usr/lib/ipsec/plugins/libstrongswan-openssl.so\n"
    )
    (info / "libcharon-extra-plugins:amd64.list").write_text(
        "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so\n"
    )
    (root / "var/lib/dpkg/status").write_text(
        "Package: strongswan-swanctl\nVersion: 6.1.0-1\n\n"
        "Package: strongswan-charon\nStatus: install ok installed\nVersion: 6.1.0-2\n"
    )
    return root


def test_a_roots_packages_and_version_come_from_its_dpkg_database(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    assert roots.plugin_packages(root) == {
        "openssl": "libstrongswan",
        "kernel-libipsec": "libcharon-extra-plugins",
    }
    assert roots.charon_version(root) == "6.1.0"
    assert roots.charon_version(tmp_path / "nothing") is None
    assert not roots.is_ready(root)  # no charon, no ready mark


def test_a_ready_root_is_not_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_root(tmp_path)
    (root / "usr/lib/ipsec").mkdir(parents=True)
    (root / "usr/lib/ipsec/charon").write_text("")
    (root / ".extsock-root-ready").write_text("6.1.0\n")
    monkeypatch.setattr("shutil.which", lambda _: pytest.fail("would build"))
    assert roots.ensure_root(RELEASES["sid"], cache=tmp_path) == root
    with pytest.raises(roots.RootError, match="host's own charon"):
        roots.ensure_root(RELEASES["bookworm"], cache=tmp_path)


def test_without_mmdebstrap_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda _: None)
    with pytest.raises(roots.RootError, match="apt-get install mmdebstrap"):
        roots.ensure_root(RELEASES["trixie"], cache=tmp_path)


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
97 22 0:5 / /var/cache/extsock/charon-root/.sid.build-7/dev rw - devtmpfs udev rw
98 97 0:6 / /var/cache/extsock/charon-root/.sid.build-7/dev/pts rw - devpts devpts rw
99 22 0:7 / /var/cache/extsock/charon-root-other/x rw - proc proc rw
"""


def test_leftover_mounts_below_the_cache_deepest_first() -> None:
    cache = Path("/var/cache/extsock/charon-root")
    assert roots.leftover_mounts(cache, MOUNTINFO) == [
        "/var/cache/extsock/charon-root/.sid.build-7/dev/pts",
        "/var/cache/extsock/charon-root/.sid.build-7/dev",
    ]
