"""scripts/install-system.sh with every command it runs on the system replaced (issue 24).

The script runs under bash with PATH holding only stand-ins: text tools pass through to the
real ones, everything that changes the system (rm, groupdel, swanctl, pip, install, ...) is
a fake that records its arguments and the umask it inherited, and answers as scripted. So
nothing is installed or removed even when the script misbehaves (as the old one did with
EXTSOCK_PREFIX=/), and no test needs root. The real thing runs in
tests/integration/test_systemd.py (a systemd container with Debian's strongSwan).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-system.sh"
PASS_THROUGH = ("dirname", "sed", "grep", "sort", "cat", "cp")
FAKES = (
    "id", "rm", "rmdir", "readlink", "getent", "groupdel", "groupadd", "systemctl", "swanctl",
    "sleep", "install", "ln", "python3", "apt-get",
)  # fmt: skip

# A fake swanctl: `--list-conns` and `--list-sas` print $FAKE/conns and $FAKE/sas, as charon
# 5.9.8's swanctl prints them; `--load-all` makes the loaded connections those of
# $FAKE/written (what swanctl does: the file's connections loaded, the others unloaded).
FAKE = r"""#!/bin/bash
name="${0##*/}"
printf '%s\t%s\t%s\n' "$name" "$(umask)" "$*" >> "$FAKE/log"
case "$name" in
  id) echo 0 ;;
  getent) [ -f "$FAKE/group" ] ;;
  groupdel) exit "$(cat "$FAKE/groupdel-rc" 2>/dev/null || echo 0)" ;;
  readlink) cat "$FAKE/link" 2>/dev/null ;;
  python3) exit 0 ;;
  python) case "$*" in *importlib.metadata*) echo 0.1.0 ;; esac ;;
  swanctl)
    case "$1" in
      --stats) [ -f "$FAKE/charon" ] ;;
      --load-all) [ -f "$FAKE/written" ] && cp "$FAKE/written" "$FAKE/conns" ;;
      --list-conns) cat "$FAKE/conns" 2>/dev/null ;;
      --list-sas)
        if [ "${2:-}" = --ike ]; then  # $FAKE/gone: SAs that end after the first listing
          grep -qxF -- "$3" "$FAKE/gone" 2>/dev/null || grep -A1 -F -- "$3: #" "$FAKE/sas" || true
        else
          cat "$FAKE/sas" 2>/dev/null
        fi ;;
    esac ;;
esac
exit $?  # the answer of the branch taken (0 when none is)
"""


@dataclass
class Call:
    command: str
    umask: str
    args: str


class Fakes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir()
        self.state.mkdir()
        fake = self.bin / ".fake"
        fake.write_text(FAKE)
        fake.chmod(0o755)
        for name in FAKES:
            (self.bin / name).symlink_to(fake)
        for name in PASS_THROUGH:
            real = shutil.which(name)
            assert real, name
            (self.bin / name).symlink_to(real)

    def write(self, name: str, text: str) -> None:
        (self.state / name).write_text(text)

    def run(
        self, *args: str, prefix: str | None = None, umask: int = 0o022
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": str(self.bin),
            "FAKE": str(self.state),
            "EXTSOCK_BIN_LINK": str(self.root / "extsock-link"),
            "EXTSOCK_UNIT_DIR": str(self.root / "units"),
        }
        if prefix is not None:
            env["EXTSOCK_PREFIX"] = prefix
        bash = shutil.which("bash")
        assert bash
        # the caller's umask, then the script (bash -c 'umask U && exec bash SCRIPT ARGS...')
        umask_then = f'umask {umask:03o} && exec "$0" "$@"'
        return subprocess.run(
            [bash, "-c", umask_then, bash, str(SCRIPT), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def calls(self, command: str | None = None) -> list[Call]:
        log = self.state / "log"
        lines = log.read_text().splitlines() if log.exists() else []
        found = [Call(*line.split("\t", 2)) for line in lines]
        return [c for c in found if command is None or c.command == command]


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


def venv(root: Path) -> Path:
    """A folder that looks like the virtualenv the script made: pyvenv.cfg, bin/python."""
    prefix = root / "opt" / "extsock"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (prefix / "bin" / "python").symlink_to(root / "bin" / ".fake")
    return prefix


@pytest.mark.parametrize(
    "prefix",
    ["/", "opt/extsock", "/opt", "/opt/", "/opt/extsock/", "/opt/../", "/opt/x/..",
     "/opt/./extsock", "/opt//extsock", "/opt/ext sock", "/opt/extsock\n/", "/opt/$HOME"],
)  # fmt: skip
def test_a_bad_prefix_is_refused_before_anything_is_removed(fakes: Fakes, prefix: str) -> None:
    proc = fakes.run("--uninstall", "--purge", prefix=prefix)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "EXTSOCK_PREFIX=" in proc.stderr and "refused" in proc.stderr
    assert "absolute path of at least two parts" in proc.stderr
    assert fakes.calls("rm") == []
    assert fakes.calls() == []  # nothing at all ran: refused before the root check


def test_a_prefix_that_is_no_virtualenv_is_left_alone(fakes: Fakes, tmp_path: Path) -> None:
    other = tmp_path / "data" / "important"
    other.mkdir(parents=True)
    proc = fakes.run("--uninstall", prefix=str(other))
    assert proc.returncode == 0, proc.stderr
    assert "not a virtualenv (no pyvenv.cfg): left in place" in proc.stderr
    assert not [c for c in fakes.calls("rm") if str(other) in c.args]


def test_uninstall_removes_the_virtualenv(fakes: Fakes, tmp_path: Path) -> None:
    prefix = venv(tmp_path)
    proc = fakes.run("--uninstall", prefix=str(prefix))
    assert proc.returncode == 0, proc.stderr
    assert [c.args for c in fakes.calls("rm") if c.args.startswith("-rf")] == [f"-rf {prefix}"]


def test_a_failed_groupdel_does_not_abort_the_uninstall(fakes: Fakes, tmp_path: Path) -> None:
    prefix = venv(tmp_path)
    fakes.write("group", "")
    fakes.write("groupdel-rc", "8")  # groupdel: the group is some user's primary group
    proc = fakes.run("--uninstall", "--purge", prefix=str(prefix))
    assert proc.returncode == 0, proc.stderr
    assert [c.args for c in fakes.calls("groupdel")] == ["extsock"]
    assert "groupdel extsock failed" in proc.stderr
    assert "extsock uninstalled (state removed)" in proc.stdout
    assert "-rf /var/lib/extsock" in [c.args for c in fakes.calls("rm")]


SAS = """\
uplink@10.99.2.2: #4, ESTABLISHED, IKEv2, 0123456789abcdef_i* fedcba9876543210_r
  local  'client.lab' @ 10.99.2.1[4500]
mail@corp: #2, ESTABLISHED, IKEv2, 1111111111111111_i* 2222222222222222_r
  local  'client.lab' @ 10.99.3.1[4500]
uplink@10.99.1.2~probe: #5, CONNECTING, IKEv2, 3333333333333333_i* 0000000000000000_r
  local  'client.lab' @ 10.99.1.1[500]
"""


def test_uninstall_hands_charon_back_to_swanctl_conf(fakes: Fakes, tmp_path: Path) -> None:
    """swanctl --load-all loads swanctl.conf as written and unloads the clones; the clones'
    IKE_SAs, which keep the clone config, are ended; a connection of the file whose name
    holds '@' is left alone."""
    prefix = venv(tmp_path)
    fakes.write("charon", "")
    fakes.write("conns", "uplink@10.99.2.2: IKEv2, no reauthentication\nmail@corp: IKEv2\n")
    fakes.write("written", "uplink: IKEv2, no reauthentication\nmail@corp: IKEv2\n")
    # the connection as written is up by the time the script looks (its start_action)
    fakes.write("sas", "uplink: #6, ESTABLISHED, IKEv2, 4444444444444444_i* 5_r\n" + SAS)
    proc = fakes.run("--uninstall", prefix=str(prefix))
    assert proc.returncode == 0, proc.stderr
    swanctl = [c.args for c in fakes.calls("swanctl")]
    assert "--load-all --noprompt" in swanctl
    ended = sorted(a.split()[2] for a in swanctl if a.startswith("--terminate"))
    assert ended == ["uplink@10.99.1.2~probe", "uplink@10.99.2.2"]
    assert all("--force" in a for a in swanctl if a.startswith("--terminate"))
    assert swanctl.index("--load-all --noprompt") < min(
        i for i, a in enumerate(swanctl) if a.startswith("--terminate")
    )
    assert fakes.calls("sleep") == []  # `uplink` was up: no wait
    assert "ended the IKE_SA of extsock's clone uplink@10.99.2.2" in proc.stdout


def test_the_wait_for_the_connection_as_written_is_bounded(fakes: Fakes, tmp_path: Path) -> None:
    prefix = venv(tmp_path)
    fakes.write("charon", "")
    fakes.write("conns", "uplink@10.99.2.2: IKEv2\nmail@corp: IKEv2\n")
    fakes.write("written", "uplink: IKEv2\nmail@corp: IKEv2\n")
    fakes.write("sas", SAS)  # `uplink` never comes up (start_action = none, or no gateway)
    proc = fakes.run("--uninstall", prefix=str(prefix))
    assert proc.returncode == 0, proc.stderr
    sleeps = [c.args for c in fakes.calls("sleep")]
    assert sleeps and set(sleeps) == {"0.2"} and len(sleeps) <= 50  # 10 s in all, every clone
    assert len([c for c in fakes.calls("swanctl") if c.args.startswith("--terminate")]) == 2


def test_a_clone_sa_gone_meanwhile_is_not_terminated(fakes: Fakes, tmp_path: Path) -> None:
    """A gateway with unique = replace deletes the clone's IKE_SA once the connection as
    written authenticates: nothing is left to end, and no warning is printed."""
    fakes.write("charon", "")
    fakes.write("conns", "uplink@10.99.2.2: IKEv2\n")
    fakes.write("written", "uplink: IKEv2\nmail@corp: IKEv2\n")
    fakes.write("sas", "uplink: #6, ESTABLISHED, IKEv2, 4444444444444444_i* 5_r\n" + SAS)
    fakes.write("gone", "uplink@10.99.2.2\n")
    proc = fakes.run("--uninstall", prefix=str(venv(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    ended = [c.args.split()[2] for c in fakes.calls("swanctl") if c.args.startswith("--terminate")]
    assert ended == ["uplink@10.99.1.2~probe"]
    assert "warning" not in proc.stderr


def test_uninstall_with_charon_down_touches_no_connection(fakes: Fakes, tmp_path: Path) -> None:
    proc = fakes.run("--uninstall", prefix=str(venv(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert [c.args for c in fakes.calls("swanctl")] == ["--stats"]
    assert "charon is not running" in proc.stdout


def test_install_runs_under_umask_022_and_checks_the_hashes(fakes: Fakes, tmp_path: Path) -> None:
    prefix = venv(tmp_path)
    proc = fakes.run(prefix=str(prefix), umask=0o077)
    assert proc.returncode == 0, proc.stderr
    calls = fakes.calls()
    assert calls and {c.umask for c in calls} == {"0022"}, {(c.command, c.umask) for c in calls}
    pip = [c.args for c in fakes.calls("python") if c.args.startswith("-m pip install")]
    assert pip[0] == f"-m pip install -q --require-hashes -r {REPO}/requirements.lock"
    assert pip[1] == f"-m pip install -q --no-deps --upgrade {REPO}"
    assert "-m pip check -q" in [c.args for c in fakes.calls("python")]


def test_install_from_wheels_checks_the_hashes_too(fakes: Fakes, tmp_path: Path) -> None:
    prefix = venv(tmp_path)
    wheels = tmp_path / "wheels"
    proc = fakes.run("--wheels", str(wheels), prefix=str(prefix))
    assert proc.returncode == 0, proc.stderr
    pip = [c.args for c in fakes.calls("python") if c.args.startswith("-m pip install")]
    offline = f"-m pip install -q --no-index --find-links {wheels}"
    assert pip == [
        f"{offline} --require-hashes -r {REPO}/requirements.lock",
        f"{offline} --no-deps --upgrade extsock_py",
    ]
