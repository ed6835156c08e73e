"""A corpus of valid swanctl.conf files, and mutation fuzzing of the reader and the policy.

The corpus (tests/unit/data/corpus/*.conf) is written in the styles of strongSwan's own
testing/tests/*/hosts/*/etc/swanctl/swanctl.conf: three-space or tab indents, blank lines
inside sections, net2net, roadwarrior, EAP and multi-round auth, IKEv1 and XAuth,
transport mode, pools and authorities, includes and section references, IPv6, marks and
protoport selectors, and extsock policy sections. Every file must load.

Fuzzing mutates those files (bytes, tokens, lines, the policy section) and asks one thing:
every input either loads or raises ConfigError. Anything else (a KeyError, a TypeError,
a RecursionError, a hang) is a bug in the reader.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vici.protocol import Message

from extsock_py.adapters.config_reader import read_desired_config
from extsock_py.adapters.vici.commands import to_vici
from extsock_py.domain.config import DesiredConfig, split_managed
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.policy import backoff_delay
from extsock_py.domain.profile import clone_body, clone_name

CORPUS = Path(__file__).parent / "data" / "corpus"
FILES = sorted(CORPUS.glob("*.conf"))

_FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def _exercise(desired: DesiredConfig) -> None:
    """What the daemon does with a config it read: split it, render clones, serialise."""
    managed, plain = split_managed(desired)
    for name, profile in managed.items():
        for gateway in profile.gateways:
            Message.serialize({clone_name(name, gateway): to_vici(clone_body(profile, gateway))})
    for name, body in plain.items():
        Message.serialize({name: to_vici(body)})
    for secret in desired.credentials.shared:
        Message.serialize(to_vici({"id": secret.id, "data": secret.data.reveal()}))
    for key in desired.credentials.keys:
        Message.serialize(to_vici({"type": key.type, "data": key.data.reveal()}))


def _loads_or_config_error(path: Path) -> DesiredConfig | None:
    try:
        desired = read_desired_config(path)
    except ConfigError as exc:
        assert str(exc)  # an error a user can read
        return None
    _exercise(desired)
    return desired


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A copy of the corpus (certs, keys, includes) where mutated files are written."""
    base = Path(tempfile.mkdtemp(prefix="extsock-corpus-"))
    target = base / "corpus"
    shutil.copytree(CORPUS, target)
    try:
        yield target
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- the corpus loads -----------------------------------------------------------------------


def test_a_reference_to_an_enclosing_section_is_a_config_error(workdir: Path) -> None:
    """Found by the fuzzing below: `a { b : a { } }` recursed until RecursionError."""
    target = workdir / "cycle.conf"
    for text in ("a {\n b : a {\n x = 1\n }\n}\n", "a {\n b {\n c : a.b {\n }\n }\n}\n"):
        target.write_text(text)
        with pytest.raises(ConfigError, match="cycle"):
            read_desired_config(target)


def test_the_corpus_is_big_enough() -> None:
    assert len(FILES) >= 15


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_corpus_file_loads(path: Path) -> None:
    desired = read_desired_config(path)
    assert desired.connections, path
    _exercise(desired)


def test_corpus_covers_managed_and_plain_and_policies() -> None:
    managed_total = plain_total = overrides = 0
    for path in FILES:
        desired = read_desired_config(path)
        managed, plain = split_managed(desired)
        managed_total += len(managed)
        plain_total += len(plain)
        overrides += sum(1 for p in managed.values() if p.policy != type(p.policy)())
    assert managed_total >= 8 and plain_total >= 8 and overrides >= 5


# --- deterministic mutations: every line dropped, every brace doubled -----------------------


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_dropping_any_line_loads_or_is_a_config_error(path: Path, workdir: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    target = workdir / "mutant.conf"
    for i in range(len(lines)):
        target.write_text("".join(lines[:i] + lines[i + 1 :]))
        _loads_or_config_error(target)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_truncating_anywhere_loads_or_is_a_config_error(path: Path, workdir: Path) -> None:
    text = path.read_text()
    target = workdir / "mutant.conf"
    for cut in range(0, len(text), 7):
        target.write_text(text[:cut])
        _loads_or_config_error(target)


# --- hypothesis: mutations of corpus files ----------------------------------------------------

_TOKENS = [
    "{", "}", "=", ":", ",", '"', "#", "\\", "\n", " ", "\t", "\x00", "é", "\u202e",
    "include ", "include *.conf", "include conf.d/*.conn", "include /nonexistent/x.conf",
    "connections", "secrets", "children", "local", "remote", "extsock", "pools",
    "remote_addrs", "local_addrs", "local_ts", "remote_ts", "version", "auth", "id",
    "certs", "cacerts", "pubkeys", "proposals", "esp_proposals", "secret", "ike-x",
    "eap-y", "private-z", "file", "token-t", "handle", "start_action", "dpd_action",
    "%any", "%any6", "0.0.0.0/0", "::/0", "10.0.0.1-10.0.0.0", "999.1.1.1", "fe80::1%eth0",
    "10.1.0.0/16[tcp/22]", "10.1.0.0/33", "[udp/%any]", "a.example.org", "*@example.org",
    "0x", "0xzz", "0s", "0s!!", "-1", "0", "1", "2", "3", "99999999999999999999", "1e309",
    "nan", "inf", "yes", "no", "maybe", "5s", "5ms", "5x", "1.5m", "-3s", "",
    "connect_timeout", "dead_after_retransmits", "attempts_per_gateway", "max_cycles",
    "backoff", "failback", "monitor", "initial", "maximum", "multiplier", "jitter",
    "enabled", "probe_interval", "probe_timeout", "hold_down", "interval", "misses",
    ": connections.home", ": connections.nonexistent", ": secrets",
]  # fmt: skip
_TOKEN = st.sampled_from(_TOKENS) | st.text(max_size=8)


_TEXTS = st.sampled_from([p.read_text() for p in FILES])  # built once, as in _policy_file
_MUTATIONS = st.integers(1, 6)
_KIND = st.sampled_from(["insert", "delete", "replace", "line", "swap", "dup"])
_SHORT, _WORD, _NAME = st.integers(1, 20), st.integers(1, 12), st.sampled_from(_TOKENS)


@st.composite
def _mutant(draw: st.DrawFn) -> str:
    """A corpus file with 1-6 random mutations at random places."""
    text = draw(_TEXTS)
    for _ in range(draw(_MUTATIONS)):
        kind = draw(_KIND)
        at = draw(st.integers(0, len(text)))
        if kind == "insert":
            text = text[:at] + draw(_TOKEN) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(_SHORT) :]
        elif kind == "replace":  # a value or word swapped for another token
            end = at + draw(_WORD)
            text = text[:at] + draw(_TOKEN) + text[end:]
        else:
            lines = text.splitlines(keepends=True) or [""]
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "line":
                lines[i] = draw(_NAME) + " = " + draw(_TOKEN) + "\n"
            elif kind == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines.insert(j, lines[i])
            text = "".join(lines)
    return text


@_FUZZ
@given(text=_mutant())
def test_mutated_corpus_files_load_or_raise_config_error(workdir: Path, text: str) -> None:
    target = workdir / "mutant.conf"
    target.write_text(text, encoding="utf-8", errors="surrogatepass")
    _loads_or_config_error(target)


# --- hypothesis: the policy section -----------------------------------------------------------

_POLICY_KEYS = [
    "connect_timeout", "dead_after_retransmits", "attempts_per_gateway", "max_cycles",
    "backoff.initial", "backoff.maximum", "backoff.multiplier", "backoff.jitter",
    "failback.enabled", "failback.probe_interval", "failback.probe_timeout",
    "failback.hold_down", "monitor.enabled", "monitor.local", "monitor.remote",
    "monitor.port", "monitor.interval", "monitor.misses", "monitor.netns",
    "conect_timeout", "backoff", "failback.nope", "connections", "connections.home",
]  # fmt: skip
_ODD_VALUES = [
    "0", "1", "-1", "2.5", "5s", "250ms", "1m", "2h", "1d", "3x", "s", "ms", "", "yes",
    "no", "true", "off", "1e9", "1e999", "nan", "-inf", "0x10", "99999999999999999999",
    "10.0.0.1", "::1", "127.0.0.1", "lo", "../../etc", '"5 s"', "{", "}", "5s # c",
]  # fmt: skip
_POLICY_VALUES = st.sampled_from(_ODD_VALUES) | st.text(max_size=10)


_DURATION = st.builds(
    "{}{}".format, st.integers(1, 5000), st.sampled_from(["", "ms", "s", "m", "h"])
)
_VALID: dict[str, st.SearchStrategy[str]] = {
    "connect_timeout": _DURATION,
    "dead_after_retransmits": st.integers(0, 5).map(str),
    "attempts_per_gateway": st.integers(1, 5).map(str),
    "max_cycles": st.integers(0, 20).map(str),
    "backoff.initial": _DURATION,
    "backoff.maximum": _DURATION,
    "backoff.multiplier": st.sampled_from(["1", "1.5", "2", "3"]),
    "backoff.jitter": st.sampled_from(["0", "0.1", "0.5", "1"]),
    "failback.enabled": st.sampled_from(["yes", "no", "true", "false"]),
    "failback.probe_interval": _DURATION,
    "failback.probe_timeout": _DURATION,
    "failback.hold_down": _DURATION,
    "monitor.enabled": st.just("no"),
    "monitor.interval": _DURATION,
    "monitor.misses": st.integers(1, 9).map(str),
}


def _policy_entry(key: str, value: str, conn: str | None) -> str:
    parts = key.split(".")
    inner = f"{parts[-1]} = {value}"
    for section in reversed(parts[:-1]):
        inner = f"{section} {{\n{inner}\n}}"
    if conn is not None:
        inner = f"connections {{\n{conn} {{\n{inner}\n}}\n}}"
    return inner


# Strategies and file texts are built once, not per example: building them is most of the
# cost of an example, and the same objects draw the same values.
_MANAGED_TEXTS = st.sampled_from(
    [text for text in (p.read_text() for p in FILES) if "extsock {" in text]
)
_ENTRIES = st.integers(0, 8)
_CONN = st.none() | st.sampled_from(["home", "cell", "backhaul", "v6", "dual", "dc", "nobody"])
_PLAUSIBLE = st.integers(0, 9)
_VALID_KEY = st.sampled_from(sorted(_VALID))
_ANY_KEY = st.sampled_from(_POLICY_KEYS)


@st.composite
def _policy_file(draw: st.DrawFn) -> str:
    """A managed-connection corpus file whose extsock section is replaced by random entries."""
    text = draw(_MANAGED_TEXTS)
    start = text.index("extsock {")
    entries = []
    for _ in range(draw(_ENTRIES)):
        conn = draw(_CONN)
        if draw(_PLAUSIBLE) < 8:  # mostly plausible entries, so that many files load
            key = draw(_VALID_KEY)
            value = draw(_VALID[key])
        else:
            key, value = draw(_ANY_KEY), draw(_POLICY_VALUES)
        entries.append(_policy_entry(key, value, conn))
    return text[:start] + "extsock {\n" + "\n".join(entries) + "\n}\n"


@_FUZZ
@given(text=_policy_file())
def test_random_policy_sections_load_or_raise_config_error(workdir: Path, text: str) -> None:
    target = workdir / "policy.conf"
    target.write_text(text, encoding="utf-8", errors="surrogatepass")
    desired = _loads_or_config_error(target)
    if desired is None:
        return
    for policy in desired.policies.values():  # what was accepted is sane
        assert policy.connect_timeout > 0
        assert policy.dead_after_retransmits >= 0 and policy.attempts_per_gateway >= 1
        assert policy.max_cycles >= 0
        backoff = policy.backoff
        assert backoff.initial > 0 and backoff.maximum > 0  # initial > maximum: capped
        assert backoff.multiplier >= 1 and 0 <= backoff.jitter <= 1
        for cycle in (1, 2, 50):
            delay = backoff_delay(backoff, cycle, "fuzz")
            assert 0 < delay <= backoff.maximum * (1 + backoff.jitter) + 1e-9
