"""extsock.conf(5): the `extsock { }` section of swanctl.conf, from the policy schema.

Keys, forms, defaults and bounds are read from the domain's dataclasses and their
`Accepts` (domain/policy.py, what the config reader validates with); only the prose is
here, one sentence per key, and tests/unit/test_docs_sync.py fails when a key has none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from extsock_py import __version__
from extsock_py.adapters import access_conf
from extsock_py.adapters.policy_conf import (
    ADDRESS_FORM,
    BOOL_FORM,
    DURATION_FORM,
    NETNS_FORM,
)
from extsock_py.domain.policy import Accepts, FailoverPolicy, Form
from tools.troff import escape, inline

# One sentence (or two) per key, by its dotted path under `extsock`.
DESCRIPTIONS: dict[str, str] = {
    "connect_timeout": "An attempt (initiate towards one gateway) not up by then is "
    "terminated and counts as failed.",
    "dead_after_retransmits": "Retransmits of a request (DPD or any other) on the "
    "established IKE_SA before its gateway counts as dead and the tunnel moves; 0 waits "
    "for charon's own verdict (165 s with its default retransmission settings).",
    "attempts_per_gateway": "Failed attempts in a row on one gateway before the next one is tried.",
    "max_cycles": "Whole cycles through the gateway list that may fail in a row before "
    "the connection gives up (it then waits for `extsock failover retry`); 0: never.",
    "switch_drain": "After a make-before-break switch (a failback, an operator's "
    "`switch`), how long the old tunnel stays for what is still on its way through it; "
    "0: it goes as soon as the new one is up.",
    "standby": "Hot standby: keep a childless IKE_SA up towards the gateway after the "
    "active one, so that a failover is one CREATE_CHILD_SA exchange. Off by default: it "
    "is a second IKE_SA per connection on a second gateway.",
    "clone_if_id_base": "Route-based clones on the kernel's IPsec (XFRM): 0 (the default) "
    "leaves clones as written; N gives each gateway's clone the XFRM interface ID N plus the "
    "gateway's place in the list (if_id_in and if_id_out of every child), so that each clone "
    "has its own policies and both take inbound traffic during a switch's drain; the route "
    "follows the clone through the updown script `extsock xfrmi-updown` names.",
    "remote_id": "Whose identity each clone expects of its gateway: `configured`, the "
    "connection's remote `id` as written (the same for every gateway); `address`, the "
    "gateway's own address, in every remote auth round. Set `address` where each gateway "
    "has a PSK of its own (cloud VPN endpoints that identify as their address): charon "
    "picks the PSK by the remote identity before the gateway has named itself, so one "
    "identity for all gateways would give them all one PSK.",
    "backoff": "The pause after each whole failed cycle: `initial` * `multiplier`^(n-1), "
    "capped at `maximum`, plus up to `jitter` of it.",
    "backoff.initial": "The pause after the first failed cycle.",
    "backoff.maximum": "The longest pause (before the jitter).",
    "backoff.multiplier": "How much the pause grows with each failed cycle.",
    "backoff.jitter": "The fraction of the pause added at most (drawn from the "
    "connection's name), so that many connections spread apart.",
    "failback": "Return to the primary (the first gateway) once it is healthy again.",
    "failback.enabled": "Fail back at all.",
    "failback.probe_interval": "How often the primary is probed (an IKE_SA set up towards "
    "it) while "
    "the tunnel is on another gateway.",
    "failback.probe_timeout": "A probe not answered by then counts as failed.",
    "failback.hold_down": "How long the primary must answer probes before the tunnel "
    "moves back to it (make-before-break).",
    "monitor": "Probe through the CHILD_SA itself: sees a gateway whose IKE answers but "
    "whose ESP path is broken. Any traffic coming in counts as life and holds the probes "
    "back.",
    "monitor.enabled": "Run the tunnel monitor (it needs `local` and `remote`, of one family).",
    "monitor.local": "The probes' source: an address inside the local traffic selector, "
    "present on this host (checked when the file is read).",
    "monitor.remote": "The probes' destination: an address inside the remote traffic selector.",
    "monitor.port": "For `probe = udp`: a closed UDP port of `remote`; its ICMP "
    "port-unreachable is the answer.",
    "monitor.interval": "A probe every interval while nothing comes in.",
    "monitor.misses": "Probes unanswered in a row after which the gateway counts as dead "
    "(detection in `misses` x `interval`).",
    "monitor.netns": "Probe from this network namespace (/run/netns/NAME) when extsock "
    "runs elsewhere.",
    "monitor.probe": "`udp`: a datagram to a closed port; `icmp`: an ICMP (ICMPv6) echo "
    "request, from a ping socket where allowed, else a raw socket.",
}

CONTROL_DESCRIPTIONS: dict[str, str] = {
    "read": "Groups whose members may look: status, history, health, watch.",
    "operate": "Groups whose members may also act: switch, hold, release, retry, "
    "terminate, reload, load, unload. Root and the daemon's own user always may.",
}

_FORMS: dict[Form, str] = {
    Form.NUMBER: "a number (a whole number where the key says so)",
    Form.DURATION: DURATION_FORM,
    Form.FLAG: BOOL_FORM,
    Form.ADDRESS: ADDRESS_FORM,
    Form.NETNS: NETNS_FORM,
    Form.CHOICE: "one of the words listed with the key, in any case",
}

# How each bound of `Accepts` reads; a bound added there under another name still shows
# (as `name value`), and the sync test asks for a word here.
BOUND_WORDS: dict[str, str] = {
    "ge": "at least",
    "gt": "more than",
    "le": "at most",
    "lt": "less than",
}


@dataclass(frozen=True)
class Key:
    """One key of the section: its dotted path, written form, default and bounds."""

    path: tuple[str, ...]
    form: Form
    default: object
    bounds: tuple[tuple[str, float], ...]
    choices: tuple[str, ...]
    integer: bool


@dataclass(frozen=True)
class Section:
    path: tuple[str, ...]
    doc: str


def _bounds(accepts: Accepts) -> tuple[tuple[str, float], ...]:
    out = []
    for spec in dataclasses.fields(accepts):
        value = getattr(accepts, spec.name)
        if spec.name != "form" and isinstance(value, int | float) and not isinstance(value, bool):
            out.append((spec.name, float(value)))
    return tuple(out)


def walk(cls: type[Any] = FailoverPolicy, prefix: tuple[str, ...] = ()) -> Iterator[Key | Section]:
    """Every key and subsection of the policy, in the dataclasses' order."""
    hints = get_type_hints(cls, include_extras=True)
    instance = cls()
    for spec in dataclasses.fields(cls):
        hint = hints[spec.name]
        path = (*prefix, spec.name)
        if get_origin(hint) is not Annotated:
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                yield Section(path, (hint.__doc__ or "").strip())
                yield from walk(hint, path)
                continue
            raise TypeError(f"policy key {'.'.join(path)} has no Accepts")
        base, *meta = get_args(hint)
        accepts = next((m for m in meta if isinstance(m, Accepts)), Accepts())
        choices = tuple(map(str, get_args(base))) if accepts.form is Form.CHOICE else ()
        yield Key(
            path,
            accepts.form,
            getattr(instance, spec.name),
            _bounds(accepts),
            choices,
            base is int,
        )


def spoken_duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    if seconds == 0:
        return "0s"
    return f"{seconds * 1000:g}ms"


def value_text(key: Key, value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.form is Form.DURATION and isinstance(value, int | float):
        return spoken_duration(float(value))
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _bound_text(key: Key) -> str:
    return ", ".join(
        f"{BOUND_WORDS.get(name, name)} {value_text(key, value)}" for name, value in key.bounds
    )


def _synopsis(schema: type[Any]) -> list[str]:
    lines = ["extsock {"]
    depth = 1
    open_paths: list[tuple[str, ...]] = []
    for item in walk(schema):
        parent = item.path[:-1]
        while open_paths and open_paths[-1] != parent:
            open_paths.pop()
            depth -= 1
            lines.append("    " * depth + "}")
        if isinstance(item, Section):
            lines.append("    " * depth + item.path[-1] + " {")
            open_paths.append(item.path)
            depth += 1
        else:
            shown = value_text(item, item.default)
            entry = f"{item.path[-1]} = {shown}"
            lines.append("    " * depth + (f"# {entry}" if item.default is None else entry))
    while open_paths:
        open_paths.pop()
        depth -= 1
        lines.append("    " * depth + "}")
    lines += [
        "    control {",
        *(f"        # {name} = GROUP, ..." for name in access_conf.KEYS),
        "    }",
        "    connections {",
        "        # NAME { ...the keys above, for the connection NAME... }",
        "    }",
        "}",
    ]
    return lines


def _key_entry(key: Key) -> str:
    dotted = ".".join(key.path)
    if key.choices:
        form = "one of " + ", ".join(key.choices)
    elif key.form is Form.NUMBER:
        form = "whole number" if key.integer else "number"
    else:
        form = key.form.value
    facts = [form, "default " + value_text(key, key.default)]
    bounds = _bound_text(key)
    if bounds:
        facts.append(bounds)
    text = "; ".join(facts)
    return (
        f".TP\n\\fB{escape(dotted)}\\fR\n"
        + inline(DESCRIPTIONS.get(dotted, ""))
        + "\n.br\n"
        + escape(text[0].upper() + text[1:] + ".")
    )


def render(schema: type[Any] = FailoverPolicy) -> str:
    """The whole of extsock.conf(5), as troff, from `schema` (the policy's dataclass)."""
    keys: list[str] = []
    for item in walk(schema):
        if isinstance(item, Section):
            keys.append(f'.SS "{escape(".".join(item.path))} {{ }}"')
            keys.append(inline(DESCRIPTIONS.get(".".join(item.path), "")))
        else:
            keys.append(_key_entry(item))
    lines = [
        '.\\" Generated by `make man` (tools/man_conf.py) from the policy schema.',
        '.\\" Do not edit: tests/unit/test_docs_sync.py fails when it differs.',
        f'.TH EXTSOCK.CONF 5 "" "extsock {__version__}" "File Formats"',
        ".SH NAME",
        "extsock.conf \\- the extsock section of swanctl.conf: extsock's failover policy",
        ".SH SYNOPSIS",
        "In \\fI/etc/swanctl/swanctl.conf\\fR (or a file it includes), with the defaults:",
        ".PP",
        ".nf",
        ".RS 4",
        *map(escape, _synopsis(schema)),
        ".RE",
        ".fi",
        ".SH DESCRIPTION",
        "\\fBextsock\\fR(8) reads the connections, credentials and pools of swanctl.conf as "
        "\\fBswanctl\\fR(8) does, and its policy from the top-level \\fBextsock\\fR section, "
        "which swanctl ignores. A connection whose \\fBremote_addrs\\fR lists two or more "
        "gateways is managed with this policy: the section's keys apply to every managed "
        "connection, and \\fBconnections\\fR { \\fINAME\\fR { ... } } overrides any of them "
        "for the connection \\fINAME\\fR (the other keys keep the section's values).",
        ".PP",
        "A key or section not listed here, a value of the wrong form or out of bounds, an "
        "override for a connection that does not exist: each is an error naming the file, "
        "the line, the key and what is accepted (see \\fBextsock check\\-config\\fR); the "
        "daemon keeps its running config when a reload reads such a file.",
        ".SH VALUES",
        *(f".TP\n.B {form.value}\n{escape(text)}" for form, text in _FORMS.items()),
        ".SH KEYS",
        *keys,
        '.SS "control { }"',
        "Who may use the control socket, by unix group (names or numbers, comma-separated; "
        "an unknown group is an error). Without this section anyone who can open the socket "
        "(mode 0660, group \\fBextsock\\fR) may read and only root operates.",
        *(
            f".TP\n\\fBcontrol.{name}\\fR\n{inline(CONTROL_DESCRIPTIONS[name])}"
            for name in access_conf.KEYS
        ),
        '.SS "connections { NAME { } }"',
        "Overrides for the connection \\fINAME\\fR (a connection of swanctl.conf's "
        "\\fBconnections\\fR section): any key above, sections included, e.g. "
        "\\fBconnections { home { failback { enabled = yes } } }\\fR.",
        ".SH FILES",
        ".TP\n.I /etc/swanctl/swanctl.conf\nRead by \\fBextsock run\\fR (its \\fB\\-\\-file\\fR "
        "option names another); re-read on \\fBsystemctl reload extsock\\fR (SIGHUP).",
        ".SH SEE ALSO",
        "\\fBextsock\\fR(8), \\fBswanctl.conf\\fR(5), \\fBswanctl\\fR(8)",
    ]
    return "\n".join(lines) + "\n"
