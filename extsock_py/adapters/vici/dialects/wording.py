"""charon's log lines that extsock depends on, and the alerts that replace some of them.

Read in strongSwan's source (src/libcharon/sa/ike_sa.c, sa/ikev2/task_manager_v2.c) at 5.9.8,
5.9.13, 6.0.1, 6.0.3 and 6.1: the wording of these lines is the same in all of them. A release
that rewords one gets its own rules here and its own dialect in `releases.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from extsock_py.domain.observations import Signal


@dataclass(frozen=True)
class LogRule:
    """A log line that means `signal`; `prefix` is what every matching line starts with (the
    listener's prefilter looks for it in the raw bytes before decoding anything)."""

    signal: Signal
    prefix: str
    pattern: re.Pattern[str]
    alert_covers: bool = False
    """An `alert` carries the same news (charon raises both): skipped while alerts flow."""


REFUSALS = (
    "AUTHENTICATION_FAILED",
    "NO_PROPOSAL_CHOSEN",
    "TS_UNACCEPTABLE",
    "INVALID_SYNTAX",
    "FAILED_CP_REQUIRED",
    "INTERNAL_ADDRESS_FAILURE",
)

# `initiating IKE_SA name[N] to host` (ike_init.c). A rekey of an IKE_SA logs it in the old
# SA's context, with the new SA's number: the dialect compares the two.
INITIATING = re.compile(r"^initiating IKE_SA .*\[(\d+)\] to ")

RULES_5_9: tuple[LogRule, ...] = (
    LogRule(Signal.INITIATING, "initiating IKE_SA ", INITIATING),
    # With MOBIKE and no route left to the gateway (the local link towards it went down),
    # charon marks the IKE_SA stale and then sends nothing (no DPD, no retransmit) until a
    # route comes back: without this line the tunnel would look up forever. No alert.
    LogRule(
        Signal.NO_ROUTE,
        "no route found to reach ",
        re.compile(r"^no route found to reach .*MOBIKE update deferred"),
    ),
    LogRule(
        Signal.RETRANSMIT,
        "retransmit ",
        re.compile(r"^retransmit \d+ of request with message ID \d+"),
        alert_covers=True,  # retransmit-send
    ),
    # After a roam, MOBIKE checks the new path with "path probing attempt N" instead of
    # retransmits (task_manager_v2.c), and raises no alert: the peer is just as silent.
    LogRule(Signal.RETRANSMIT, "path probing attempt ", re.compile(r"^path probing attempt \d+")),
    LogRule(
        Signal.GAVE_UP,
        "giving up after ",
        re.compile(r"^giving up after \d+ retransmits"),
        alert_covers=True,  # retransmit-send-timeout
    ),
    LogRule(Signal.GAVE_UP, "giving up after ", re.compile(r"^giving up after \d+ path probings")),
    LogRule(
        Signal.GAVE_UP,
        "establishing IKE_SA failed",
        re.compile(r"^establishing IKE_SA failed"),
        alert_covers=True,  # peer-init-unreachable
    ),
    # RFC 5685: handle_redirect() (ike_sa.c) logs the target, an address or a name, before
    # it follows: the IKE_SA is set up again there (redirect_connecting at IKE_SA_INIT,
    # redirect_established with a new IKE_SA when established or during IKE_AUTH).
    LogRule(Signal.REDIRECTED, "redirected to ", re.compile(r"^redirected to (?P<target>\S+)")),
    # handle_redirect() logs "redirected to" first, then may refuse to follow: too many
    # redirects (5 within 300 s), redirects disabled, a target it cannot resolve, a state
    # it cannot redirect in. The IKE_SA then stays where it is.
    LogRule(
        Signal.REDIRECT_REFUSED,
        "only ",
        re.compile(r"^only \d+ redirects are allowed within \d+ seconds"),
    ),
    LogRule(
        Signal.REDIRECT_REFUSED,
        "server sent REDIRECT even though",
        re.compile(r"^server sent REDIRECT even though we disabled it"),
    ),
    LogRule(
        Signal.REDIRECT_REFUSED,
        "unable to resolve gateway ID",
        re.compile(r"^unable to resolve gateway ID .*, redirect failed"),
    ),
    LogRule(
        Signal.REDIRECT_REFUSED,
        "unable to handle redirect for IKE_SA",
        re.compile(r"^unable to handle redirect for IKE_SA"),
    ),
    # delete_() (ike_sa.c) of an IKE_SA that never got established (a forced terminate of a
    # connect): it goes without any ike-updown.
    LogRule(
        Signal.DESTROYED,
        "destroying IKE_SA in state ",
        re.compile(r"^destroying IKE_SA in state \S+ without notification"),
    ),
    LogRule(
        Signal.DESTROYED, "deleting unestablished IKE_SA", re.compile(r"^deleting unestablished")
    ),
    *(
        LogRule(
            Signal.REFUSED,
            f"received {refusal} notify",
            re.compile(rf"^received {refusal} notify"),
        )
        for refusal in REFUSALS
    ),
)

# The `alert` event (strongSwan >= 6.0.3, vici_query.c): its `type`, and what it means.
# retransmit-send is raised next to "retransmit N of request" (not for path probing),
# retransmit-send-timeout next to "giving up after N retransmits", peer-init-unreachable
# when an initial IKE_SA_INIT went unanswered, ike-sa-expired when the hard lifetime ends.
ALERTS_6_0_3: dict[str, Signal] = {
    "retransmit-send": Signal.RETRANSMIT,
    "retransmit-send-cleared": Signal.ANSWERED,
    "retransmit-send-timeout": Signal.GAVE_UP,
    "peer-init-unreachable": Signal.GAVE_UP,
    "ike-sa-expired": Signal.EXPIRED,
}
