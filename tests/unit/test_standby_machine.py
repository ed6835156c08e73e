"""The hot standby sub-machine (domain/standby.py) on its own: tables, time as an argument."""

from __future__ import annotations

from dataclasses import replace

import pytest

from extsock_py.domain import standby as sb
from extsock_py.domain.actions import Notify, StartStandby, StopStandby
from extsock_py.domain.notices import NoticeKind
from extsock_py.domain.policy import BackoffPolicy, FailoverPolicy, backoff_delay
from extsock_py.domain.standby import HotStandby, StandbyPhase

GW1, GW2, GW3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
T0 = 100.0
ON = FailoverPolicy(standby=True, backoff=BackoffPolicy(initial=1.0, maximum=8.0, jitter=0.0))


@pytest.mark.parametrize(
    ("gateways", "active", "policy", "expected"),
    [
        ((GW1, GW2), GW1, ON, GW2),
        ((GW1, GW2), GW2, ON, GW1),  # cyclic: after the last comes the first
        ((GW1, GW2, GW3), GW2, ON, GW3),
        ((GW1, GW2, GW3), GW3, ON, GW1),
        ((GW1,), GW1, ON, None),  # nowhere else to stand by
        ((GW1, GW2), None, ON, None),  # no tunnel, no standby
        ((GW1, GW2), "10.9.9.9", ON, None),  # a redirect target outside the list
        ((GW1, GW2), GW1, FailoverPolicy(), None),  # off by default
    ],
)
def test_wanted_follows_the_list(
    gateways: tuple[str, ...], active: str | None, policy: FailoverPolicy, expected: str | None
) -> None:
    assert sb.wanted(gateways, active, policy) == expected


def test_follow_starts_keeps_and_moves() -> None:
    hs, actions = sb.follow(None, GW2, T0, ON, GW1)
    assert hs == HotStandby(GW2, StandbyPhase.CONNECTING, deadline=T0 + ON.connect_timeout)
    assert actions == [StartStandby(GW2)]
    assert sb.follow(hs, GW2, T0 + 1, ON, GW1) == (hs, [])
    assert hs is not None
    ready, _ = sb.up(sb.connecting(hs, 7), 7, T0 + 0.1)
    # The tunnel moved to GW2 by other means (cold): the standby goes to GW3.
    moved, actions = sb.follow(ready, GW3, T0 + 2, ON, GW1)
    assert moved is not None and moved.gateway == GW3
    assert actions == [
        StopStandby(GW2, 7, unload=True),
        Notify(NoticeKind.STANDBY_DOWN, gateway=GW2, reason="moved"),
        StartStandby(GW3),
    ]


def test_stop_never_terminates_the_tunnels_clone_by_name() -> None:
    connecting = HotStandby(GW2, StandbyPhase.CONNECTING, deadline=T0 + 5)
    assert sb.stop(connecting, GW2, "moved") == []  # no id, and GW2 is the tunnel's clone
    assert sb.stop(connecting, GW1, "moved") == [StopStandby(GW2, None, unload=True)]
    known = replace(connecting, ike_id=3)
    assert sb.stop(known, GW2, "moved") == [StopStandby(GW2, 3, unload=False)]


def test_up_notifies_once_and_resets_the_failures() -> None:
    hs = HotStandby(GW2, StandbyPhase.CONNECTING, deadline=T0 + 5, failures=3)
    ready, actions = sb.up(hs, 4, T0 + 0.05)
    assert ready == HotStandby(GW2, StandbyPhase.UP, ike_id=4, failures=0, since=T0 + 0.05)
    assert actions == [Notify(NoticeKind.STANDBY_UP, gateway=GW2)]
    assert sb.up(ready, 4, T0 + 1) == (ready, [])


@pytest.mark.parametrize(
    ("phase", "reason", "terminate", "expected_actions"),
    [
        (
            StandbyPhase.UP,
            "ike-down",
            False,
            [Notify(NoticeKind.STANDBY_DOWN, gateway=GW2, reason="ike-down")],
        ),
        (
            StandbyPhase.UP,
            "retransmit",
            True,
            [
                StopStandby(GW2, 4, unload=False),
                Notify(NoticeKind.STANDBY_DOWN, gateway=GW2, reason="retransmit"),
            ],
        ),
        (StandbyPhase.CONNECTING, "initiate-failed", True, [StopStandby(GW2, 4, unload=False)]),
    ],
)
def test_a_failure_waits_the_backoff(
    phase: StandbyPhase, reason: str, terminate: bool, expected_actions: list[object]
) -> None:
    hs = HotStandby(GW2, phase, ike_id=4)
    waiting, actions = sb.failed(hs, T0, ON, "home", reason, terminate)
    assert actions == expected_actions
    assert waiting is not None
    assert waiting.phase is StandbyPhase.BACKOFF and waiting.failures == 1
    assert waiting.deadline == T0 + backoff_delay(ON.backoff, 1, "home/standby")


def test_backoff_grows_with_failures_in_a_row_and_never_gives_up() -> None:
    """Connect timeouts in a row: 1, 2, 4, 8, 8, 8 s between attempts (maximum 8 s)."""
    now = T0
    hs: HotStandby | None = HotStandby(GW2, StandbyPhase.CONNECTING, deadline=now + 5)
    waits = []
    starts = 0
    for _ in range(6):
        assert hs is not None and hs.deadline is not None
        now = hs.deadline
        hs, actions = sb.tick(hs, now, ON, "home")  # connect timeout
        assert hs is not None and hs.phase is StandbyPhase.BACKOFF
        assert StopStandby(GW2, None, unload=False) in actions
        assert hs.deadline is not None
        waits.append(hs.deadline - now)
        assert sb.tick(hs, hs.deadline - 0.001, ON, "home") == (hs, [])
        now = hs.deadline
        hs, actions = sb.tick(hs, now, ON, "home")
        assert actions == [StartStandby(GW2)]
        starts += 1
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert starts == 6


def test_news_of_other_sas_is_not_the_standbys() -> None:
    hs = HotStandby(GW2, StandbyPhase.UP, ike_id=4)
    assert sb.concerns(hs, GW2, 4)
    assert sb.concerns(hs, GW2, None)
    assert not sb.concerns(hs, GW2, 5)  # another IKE_SA of that clone
    assert not sb.concerns(hs, GW1, 4)  # the tunnel's gateway
    assert not sb.concerns(replace(hs, phase=StandbyPhase.BACKOFF), GW2, 4)
    assert not sb.concerns(None, GW2, 4)


def test_take_hands_over_only_an_established_standby_on_the_target() -> None:
    hs = HotStandby(GW2, StandbyPhase.UP, ike_id=4)
    assert sb.take(hs, GW2) == 4
    assert sb.take(hs, GW1) is None
    assert sb.take(replace(hs, phase=StandbyPhase.CONNECTING), GW2) is None
    assert sb.take(None, GW2) is None


def test_rekey_follows_the_new_ike_sa() -> None:
    hs = HotStandby(GW2, StandbyPhase.UP, ike_id=4)
    assert sb.rekeyed(hs, 4, 9).ike_id == 9
    assert sb.rekeyed(hs, 5, 9) == hs
