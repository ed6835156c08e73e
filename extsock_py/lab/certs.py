"""A throw-away CA and node certificates for the lab, made with strongSwan's ``pki``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from extsock_py.lab.netns import run
from extsock_py.lab.topology import ID_DOMAIN, LabConfig, node_id

PKI_TIMEOUT = 20.0
KEY_ARGS = ("--type", "ecdsa", "--size", "256")


def _write(path: Path, data: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(data)


def _pki(args: Sequence[str]) -> str:
    return run(["pki", *args], timeout=PKI_TIMEOUT).stdout


def _gen_key(path: Path) -> None:
    _write(path, _pki(["--gen", *KEY_ARGS, "--outform", "pem"]), 0o600)


def node_sans(node: str, cfg: LabConfig) -> list[str]:
    """SubjectAltNames of a node's certificate: its id and its link addresses."""
    sans = [node_id(node)]
    if node == "ini":
        for link in cfg.links:
            sans += [link.ini_v4, link.ini_v6]
    else:
        link = cfg.link(node)
        sans += [link.gw_v4, link.gw_v6]
    return sans


def make_pki(cfg: LabConfig, ca_dir: Path, node_dirs: dict[str, Path]) -> None:
    """Create a CA in ``ca_dir`` and a cert per node, placed as swanctl expects.

    Each node dir gets ``x509ca/ca.pem``, ``x509/<node>.pem`` and ``private/<node>.pem``.
    """
    ca_key, ca_cert = ca_dir / "ca.key", ca_dir / "ca.pem"
    _gen_key(ca_key)
    _write(
        ca_cert,
        _pki(["--self", "--ca", "--lifetime", "30", "--in", str(ca_key), "--type", "ecdsa",
              "--dn", f"O=extsock lab, CN=CA {ID_DOMAIN}", "--outform", "pem"]),
        0o644,
    )  # fmt: skip
    for node, node_dir in node_dirs.items():
        key = ca_dir / f"{node}.key"
        _gen_key(key)
        args = ["--issue", "--cacert", str(ca_cert), "--cakey", str(ca_key), "--in", str(key),
                "--type", "priv", "--lifetime", "30", "--dn", f"O=extsock lab, CN={node_id(node)}",
                "--outform", "pem"]  # fmt: skip
        for san in node_sans(node, cfg):
            args += ["--san", san]
        if node != "ini":
            args += ["--flag", "serverAuth"]
        cert = _pki(args)
        _write(node_dir / "x509ca" / "ca.pem", ca_cert.read_text(encoding="ascii"), 0o644)
        _write(node_dir / "x509" / f"{node}.pem", cert, 0o644)
        key_text = key.read_text(encoding="ascii")
        if cfg.key_passphrase is not None:
            key_text = _encrypted(key_text, cfg.key_passphrase)
        _write(node_dir / "private" / f"{node}.pem", key_text, 0o600)


def _encrypted(key_pem: str, passphrase: str) -> str:
    """The key as an encrypted PKCS#8 PEM, as `openssl pkcs8 -topk8 -v2 aes256` writes it."""
    key = serialization.load_pem_private_key(key_pem.encode("ascii"), None)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    return data.decode("ascii")
