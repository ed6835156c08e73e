"""A QEMU VM with Debian's kernel, for the lab on the kernel's IPsec (XFRM).

One VM (``Vm``) serves a whole test session or one ``extsock lab up --kernel xfrm``. It runs
under software emulation (``-accel tcg -cpu max``: the machines this was built on cannot use
KVM for it), has no network, and shares directories of the host over 9p, each mounted in the
guest at the same path as on the host: the repository (extsock runs from the working tree),
the Python packages of the host's environment, and a control directory.

The control directory is the whole protocol, files only, every wait bounded:

- the host writes ``init.sh`` before boot; the image's PID 1 runs it;
- the guest writes ``ready`` once its shares are mounted and its modules loaded;
- a command is a shell script the host renames into ``req/ID.sh``; the guest's agent (a
  shell loop, no Python start per poll) moves it to ``run/``, runs it in the background and
  writes its output to ``out/ID.txt`` and then its exit status to ``out/ID.rc``;
- ``stop`` asks the agent to sync and power off (sysrq), after which qemu exits.

Python in the guest is Debian's ``/usr/bin/python3`` (3.11, as on the host) with the
repository and the host environment's site-packages on ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from extsock_py.lab import vmimage

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT_ENV = "EXTSOCK_VM_BOOT_TIMEOUT"
DEFAULT_BOOT_TIMEOUT = 300.0  # 14-17 s measured; nested in a container under load: far more
STOP_TIMEOUT = 30.0
MEMORY_MB = 1024
GUEST_PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[2]
STATE_FILE = "vm.json"
GUEST_CTL = vmimage.CTL_MOUNT  # where the guest mounts the control directory
POLL = 0.1
# Modules the lab needs beyond what autoloads: ESP, the XFRM user API, XFRM interfaces.
MODULES = (
    "xfrm_user", "esp4", "esp6", "xfrm4_tunnel", "xfrm6_tunnel", "tunnel4", "tunnel6",
    "xfrm_interface", "tun", "veth", "nf_tables", "nft_chain_nat", "nf_conntrack",
)  # fmt: skip

TOOL_PLUGINS = (
    "random", "nonce", "openssl", "pem", "pkcs1", "pkcs8", "x509", "pubkey", "curve25519",
    "sha1", "sha2", "hmac", "aes", "gcm", "constraints", "revocation",
)  # fmt: skip

_AGENT = """\
set -u
CTL={ctl}
mkdir -p $CTL/req $CTL/run $CTL/out
{mounts}
for m in {modules}; do modprobe $m 2>/dev/null; done
# The first ESP SA of an algorithm loads its crypto modules and runs the kernel's self-tests:
# seconds under emulation, during which charon holds the IKE_SA and its vici list-sas waits.
# Once here, with throwaway all-zero keys in the VM's own namespace, before `ready`.
ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode tunnel \
  auth-trunc 'hmac(sha256)' 0x$(printf '%064d' 0) 128 enc 'cbc(aes)' 0x$(printf '%032d' 0)
ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x101 mode tunnel \
  aead 'rfc4106(gcm(aes))' 0x$(printf '%040d' 0) 128
ip xfrm state flush
ip link set lo up
sysctl -qw kernel.sysrq=1
# swanctl and pki load every installed plugin by default: 10-16 s each under emulation.
cat > /etc/strongswan.d/zz-extsock-vm.conf <<EOF
swanctl {{
  load = {tool_plugins}
}}
pki {{
  load = {tool_plugins}
}}
EOF
echo "$(cut -d' ' -f1 /proc/uptime)" > $CTL/ready.tmp && mv $CTL/ready.tmp $CTL/ready
while [ ! -e $CTL/stop ]; do
  for f in $CTL/req/*.sh; do
    [ -e "$f" ] || continue
    id=${{f##*/}}; id=${{id%.sh}}
    mv "$f" "$CTL/run/$id.sh" || continue
    ( sh "$CTL/run/$id.sh" > "$CTL/out/$id.txt" 2>&1 < /dev/null
      echo $? > "$CTL/out/$id.rc.tmp"; mv "$CTL/out/$id.rc.tmp" "$CTL/out/$id.rc" ) &
  done
  sleep 0.2
done
sync
echo o > /proc/sysrq-trigger
sleep 30
"""


class VmError(RuntimeError):
    """The VM could not be started or did not answer."""


@dataclass(frozen=True)
class VmResult:
    rc: int
    output: str
    seconds: float


def boot_timeout() -> float:
    try:
        return float(os.environ.get(BOOT_TIMEOUT_ENV) or DEFAULT_BOOT_TIMEOUT)
    except ValueError:
        return DEFAULT_BOOT_TIMEOUT


def preflight() -> str | None:
    """None when a VM can run here, else why not (what to install, or what is missing)."""
    if os.geteuid() != 0:
        return "the XFRM lab needs root (mmdebstrap, then network namespaces in the VM)"
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found: apt-get install qemu-system-x86 (scripts/install-deps.sh)"
    if not vmimage.is_ready(vmimage.cache_dir()):
        missing = vmimage.missing_tools()
        if missing:
            return f"the VM image is not built and building it needs {', '.join(missing)}"
    return None


def site_packages() -> list[Path]:
    """The host environment's package directories the guest's Python needs."""
    paths = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    return sorted(p for p in paths if p.is_dir())


def guest_env() -> dict[str, str]:
    """The environment of Python in the guest: the repository and the host's packages."""
    path = [str(REPO), *(str(p) for p in site_packages())]
    return {
        "PYTHONPATH": ":".join(path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
    }


def qemu_argv(image: Path, ctl: Path, shares: list[Path], console: Path) -> list[str]:
    argv = [
        QEMU, "-accel", "tcg", "-cpu", "max", "-m", str(MEMORY_MB), "-smp", "1",
        "-display", "none", "-monitor", "none", "-serial", f"file:{console}",
        "-no-reboot", "-nic", "none", "-device", "virtio-rng-pci",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        "-append", f"console=ttyS0 root=/dev/vda rw init={vmimage.INIT_PATH} quiet panic=1",
        "-drive", f"file={image / 'root.img'},if=virtio,format=raw,snapshot=on",
        "-virtfs", f"local,path={ctl},mount_tag={vmimage.CTL_TAG},security_model=none",
    ]  # fmt: skip
    for k, share in enumerate(shares):
        argv += ["-virtfs", f"local,path={share},mount_tag=share{k},security_model=none"]
    return argv


def agent_script(shares: list[Path]) -> str:
    opts = "trans=virtio,version=9p2000.L,msize=262144,cache=loose"
    mounts = "\n".join(
        f"mkdir -p {shlex.quote(str(p))} && mount -t 9p -o {opts} share{k} {shlex.quote(str(p))}"
        for k, p in enumerate(shares)
    )
    return _AGENT.format(
        ctl=vmimage.CTL_MOUNT,
        mounts=mounts,
        modules=" ".join(MODULES),
        tool_plugins=" ".join(TOOL_PLUGINS),
    )


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths with none inside another (one 9p share covers what lies below it)."""
    ordered = sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in ordered:
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


class Vm:
    """One VM: ``start`` boots it and waits for its agent, ``run`` runs a shell command in it,
    ``stop`` powers it off (and kills qemu if it does not exit)."""

    def __init__(self, workdir: Path, *, image: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.ctl = self.workdir / "ctl"
        self.console = self.workdir / "console.log"
        self._image = image
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._ids = itertools.count(1)
        self.boot_seconds: float | None = None

    # ------------------------------------------------------------------ state

    def save(self) -> None:
        data = {"pid": self._pid, "ctl": str(self.ctl), "boot_seconds": self.boot_seconds}
        (self.workdir / STATE_FILE).write_text(json.dumps(data) + "\n")

    @classmethod
    def attach(cls, workdir: Path) -> Vm | None:
        """The VM whose state is in ``workdir``, if its qemu still runs; else None."""
        try:
            data = json.loads((Path(workdir) / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        vm = cls(Path(workdir))
        vm._pid = int(data["pid"])
        vm.boot_seconds = data.get("boot_seconds")
        vm._ids = itertools.count(int(time.time() * 1000) % 10**9)
        return vm if vm.alive() else None

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        if self._pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{self._pid}/cmdline").read_bytes()
        except OSError:
            return False
        return QEMU.encode() in cmdline and str(self.ctl).encode() in cmdline

    # ------------------------------------------------------------------ boot

    def start(self, timeout: float | None = None, *, detach: bool = False) -> None:
        why = preflight()
        if why:
            raise VmError(why)
        try:
            image = self._image or vmimage.ensure_image()
        except vmimage.ImageError as exc:
            raise VmError(f"the VM image: {exc}") from exc
        timeout = boot_timeout() if timeout is None else timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.ctl, ignore_errors=True)
        self.ctl.mkdir(parents=True)
        shares = _outermost([REPO, *site_packages()])
        (self.ctl / "init.sh").write_text(agent_script(shares))
        self.console.write_bytes(b"")
        argv = qemu_argv(image, self.ctl, shares, self.console)
        began = time.monotonic()
        try:
            with open(self.workdir / "qemu.err", "wb") as err:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=detach,
                )
        except OSError as exc:
            raise VmError(f"{QEMU} could not start: {exc}") from exc
        self._pid = self._proc.pid
        self.save()
        deadline = began + timeout
        while time.monotonic() < deadline:
            if (self.ctl / "ready").exists():
                self.boot_seconds = round(time.monotonic() - began, 1)
                self.save()
                return
            if self._proc.poll() is not None:
                raise VmError(
                    f"{QEMU} exited ({self._proc.returncode}) before the guest was ready: "
                    f"{self._tail()}"
                )
            time.sleep(POLL * 5)
        self.kill()
        raise VmError(f"the VM was not ready {timeout:.0f} s after qemu started: {self._tail()}")

    def _tail(self, lines: int = 6) -> str:
        text = ""
        for name in ("qemu.err", "console.log"):
            with contextlib.suppress(OSError):
                text += (self.workdir / name).read_text(errors="replace")
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    # ------------------------------------------------------------------ commands

    def run(self, script: str, timeout: float) -> VmResult:
        """Run a shell script in the guest; its exit status and output (stdout+stderr).

        The guest kills it ``timeout`` s after it started; the host gives up 30 s later."""
        if not self.alive():
            raise VmError(f"the VM is not running: {self._tail()}")
        ident = f"{os.getpid()}-{next(self._ids)}"
        body = f"exec timeout -k 5 {int(timeout) + 1} sh -c {shlex.quote(script)}\n"
        tmp = self.ctl / f".{ident}.sh"
        tmp.write_text(body)
        tmp.rename(self.ctl / "req" / f"{ident}.sh")
        began = time.monotonic()
        rc_file = self.ctl / "out" / f"{ident}.rc"
        deadline = began + timeout + 30.0
        while time.monotonic() < deadline:
            if rc_file.exists():
                out = self.ctl / "out" / f"{ident}.txt"
                result = VmResult(
                    int(rc_file.read_text().strip() or "255"),
                    out.read_text(errors="replace"),
                    time.monotonic() - began,
                )
                for done in (rc_file, out, self.ctl / "run" / f"{ident}.sh"):
                    done.unlink(missing_ok=True)
                return result
            if not self.alive():
                raise VmError(f"the VM stopped during a command: {self._tail()}")
            time.sleep(POLL)
        raise VmError(f"no answer from the VM {timeout + 30.0:.0f} s after a command")

    def python(
        self, args: list[str], timeout: float, env: dict[str, str] | None = None
    ) -> VmResult:
        """``python3 ARGS`` in the guest, in the repository, with extsock importable."""
        full = {**guest_env(), **(env or {})}
        assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(full.items()))
        argv = " ".join(shlex.quote(a) for a in args)
        script = f"cd {shlex.quote(str(REPO))} && exec env {assigns} {GUEST_PYTHON} {argv}"
        return self.run(script, timeout)

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Power the guest off; kill qemu if it has not exited ``timeout`` s later."""
        if self._pid is None:
            return
        with contextlib.suppress(OSError):
            (self.ctl / "stop").write_text("")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            time.sleep(POLL * 2)
        self.kill()

    def kill(self) -> None:
        if self._pid is not None and self.alive():
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            (self.workdir / STATE_FILE).unlink()
        self._pid = None


def main() -> int:
    """``python -m extsock_py.lab.vm WORKDIR CMD...``: boot, run one command, power off."""
    if len(sys.argv) < 3:
        print("usage: python -m extsock_py.lab.vm WORKDIR SHELL-COMMAND", file=sys.stderr)
        return 2
    vm = Vm(Path(sys.argv[1]))
    try:
        vm.start()
        print(f"boot: {vm.boot_seconds} s", file=sys.stderr)
        result = vm.run(" ".join(sys.argv[2:]), timeout=600)
        print(result.output, end="")
        print(f"rc {result.rc} in {result.seconds:.1f} s", file=sys.stderr)
        return result.rc
    finally:
        vm.stop()


if __name__ == "__main__":
    raise SystemExit(main())
