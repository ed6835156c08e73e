"""The event usecase: charon's observations become domain events for the right connection."""

from __future__ import annotations

import pytest

from extsock_py.adapters.vici.dialects import choose
from extsock_py.domain import events as ev
from extsock_py.domain import observations as ob
from extsock_py.usecases.event_usecase import EventUsecase, IkeView
from tests.fakes.ports import RecordingPublisher

CLONE = "home@10.99.1.2"
PROBE = "home@10.99.1.1~probe"


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, ev.Event]] = []

    def __call__(self, connection: str, event: ev.Event) -> None:
        self.events.append((connection, event))


class Fed:
    """The usecase as the listener feeds it: raw log lines and alerts go through the dialect
    of a charon that has alerts (alert rows) or not (log rows) first."""

    def __init__(self, uc: EventUsecase) -> None:
        self.uc = uc
        self.logs = choose("5.9.8").dialect.reader(alerts=False)
        self.alerts = choose("6.1.0").dialect.reader(alerts=True)

    def observe(self, obs: ob.Observation) -> None:
        reader = self.alerts if isinstance(obs, ob.Alert) else self.logs
        translated = reader.translate(obs)
        if translated is not None and EventUsecase.wants(translated):
            self.uc.observe(translated)

    @property
    def ike(self) -> dict[str, IkeView]:
        return self.uc.ike


def usecase(managed: tuple[str, ...] = ("home",)) -> tuple[EventUsecase, Sink, RecordingPublisher]:
    sink = Sink()
    publisher = RecordingPublisher()
    return EventUsecase(lambda name: name in managed, sink, publisher), sink, publisher


def fed(managed: tuple[str, ...] = ("home",)) -> tuple[Fed, Sink, RecordingPublisher]:
    uc, sink, publisher = usecase(managed)
    return Fed(uc), sink, publisher


def sa(name: str = CLONE, ike_id: int = 3, state: str = "ESTABLISHED") -> ob.IkeSaInfo:
    return ob.IkeSaInfo(name=name, unique_id=ike_id, state=state)


CHILD = ob.ChildSaInfo("net", 7, "INSTALLED")


def log(message: str, name: str | None = CLONE, ike_id: int | None = 3) -> ob.LogLine:
    return ob.LogLine("IKE", 1, message, name, ike_id)


ROWS: list[tuple[ob.Observation, list[tuple[str, ev.Event]]]] = [
    # an IKE_SA up says so (a hot standby's has no CHILD_SA, so no TunnelUp follows)
    (ob.IkeUpdown(sa(), True), [("home", ev.IkeUp("10.99.1.2", 3))]),
    (ob.IkeUpdown(sa(state="DELETING"), False), [("home", ev.TunnelDown("10.99.1.2", 3))]),
    (ob.ChildUpdown(sa(), CHILD, True), [("home", ev.TunnelUp("10.99.1.2", 3))]),
    (
        ob.ChildUpdown(sa(), CHILD, False),
        [("home", ev.TunnelDown("10.99.1.2", 3, "child-down"))],
    ),
    (ob.ChildUpdown(sa(state="DELETING"), CHILD, False), []),
    (ob.ChildUpdown(sa(state="DESTROYING"), CHILD, False), []),
    (
        ob.IkeRekey(sa(ike_id=3, state="REKEYED"), sa(ike_id=4)),
        [("home", ev.IkeRekeyed("10.99.1.2", 3, 4))],
    ),
    (ob.IkeUpdate(sa(), "10.0.0.100", "10.99.1.2"), []),
    # charon 5.9.8's log texts
    (
        log("initiating IKE_SA home@10.99.1.2[3] to 10.99.1.2"),
        [("home", ev.IkeConnecting("10.99.1.2", 3))],
    ),
    (
        log("retransmit 1 of request with message ID 2"),
        [("home", ev.RetransmitSeen("10.99.1.2", 3))],
    ),
    (
        log("giving up after 5 retransmits"),
        [("home", ev.InitiateFailed("10.99.1.2", "giving up after 5 retransmits", 3))],
    ),
    (
        log("establishing IKE_SA failed, peer not responding"),
        [
            (
                "home",
                ev.InitiateFailed(
                    "10.99.1.2", "establishing IKE_SA failed, peer not responding", 3
                ),
            )
        ],
    ),
    (
        log("received AUTHENTICATION_FAILED notify error"),
        [
            (
                "home",
                ev.InitiateFailed("10.99.1.2", "received AUTHENTICATION_FAILED notify error", 3),
            )
        ],
    ),
    (
        log("received NO_PROPOSAL_CHOSEN notify error"),
        [("home", ev.InitiateFailed("10.99.1.2", "received NO_PROPOSAL_CHOSEN notify error", 3))],
    ),
    # an IKE_SA rekey: the new SA is initiated in the old one's context; it is not connecting
    (log("initiating IKE_SA home@10.99.1.2[4] to 10.99.1.2"), []),
    # MOBIKE (task_manager_v2.c, ike_sa.c): path probing after a roam counts as retransmits;
    # no route at all leaves a stale SA that sends nothing more: the tunnel is down
    (log("path probing attempt 1"), [("home", ev.RetransmitSeen("10.99.1.2", 3))]),
    (
        log("giving up after 10 path probings"),
        [("home", ev.InitiateFailed("10.99.1.2", "giving up after 10 path probings", 3))],
    ),
    (
        log("no route found to reach 10.99.1.2, MOBIKE update deferred"),
        [("home", ev.TunnelDown("10.99.1.2", 3, "no-route"))],
    ),
    (
        log("no route found to reach peer, MOBIKE update deferred"),
        [("home", ev.TunnelDown("10.99.1.2", 3, "no-route"))],
    ),
    (log("old path is not available anymore, try to find another"), []),
    (log("sending packet: from 10.0.0.100[500] to 10.99.1.2[500] (336 bytes)"), []),
    (log("IKE_SA home@10.99.1.2[3] established between 10.0.0.100[home]...10.99.1.2[gw]"), []),
    (log("retransmit 1 of request with message ID 2", ike_id=None), []),
    (log("retransmit 1 of request with message ID 2", name=None), []),
    # alerts (strongSwan >= 6.0.3)
    (ob.Alert("retransmit-send", CLONE, 3), [("home", ev.RetransmitSeen("10.99.1.2", 3))]),
    (ob.Alert("retransmit-send-cleared", CLONE, 3), [("home", ev.PeerAnswered("10.99.1.2", 3))]),
    (
        ob.Alert("retransmit-send-timeout", CLONE, 3),
        [("home", ev.InitiateFailed("10.99.1.2", "retransmit-send-timeout", 3))],
    ),
    (
        ob.Alert("peer-init-unreachable", CLONE, 3),
        [("home", ev.InitiateFailed("10.99.1.2", "peer-init-unreachable", 3))],
    ),
    (ob.Alert("proposal-mismatch-ike", CLONE, 3), []),
    (
        ob.Alert("ike-sa-expired", CLONE, 3),
        [("home", ev.TunnelDown("10.99.1.2", 3, "expired"))],
    ),
    (ob.Alert("retransmit-send", CLONE, None), []),
    # probes produce probe events only
    (ob.IkeUpdown(sa(PROBE), True), [("home", ev.ProbeUp("10.99.1.1", 3))]),
    (ob.IkeUpdown(sa(PROBE), False), [("home", ev.ProbeFailed("10.99.1.1", 3))]),
    (ob.ChildUpdown(sa(PROBE), CHILD, True), []),
    (ob.IkeRekey(sa(PROBE), sa(PROBE, 4)), []),
    (log("initiating IKE_SA home@10.99.1.1~probe[3] to 10.99.1.1", PROBE), []),
    (
        log("retransmit 1 of request with message ID 0", PROBE),
        [("home", ev.ProbeFailed("10.99.1.1", 3))],
    ),
    (log("giving up after 5 retransmits", PROBE), [("home", ev.ProbeFailed("10.99.1.1", 3))]),
    (
        log("received AUTHENTICATION_FAILED notify error", PROBE),
        [("home", ev.ProbeFailed("10.99.1.1", 3))],
    ),
    (log("path probing attempt 2", PROBE), [("home", ev.ProbeFailed("10.99.1.1", 3))]),
    (
        log("no route found to reach peer, MOBIKE update deferred", PROBE),
        [("home", ev.ProbeFailed("10.99.1.1", 3))],
    ),
    (ob.Alert("retransmit-send", PROBE, 3), [("home", ev.ProbeFailed("10.99.1.1", 3))]),
    (ob.Alert("peer-init-unreachable", PROBE, 3), [("home", ev.ProbeFailed("10.99.1.1", 3))]),
    (ob.Alert("retransmit-send-cleared", PROBE, 3), []),
    # not ours: unmanaged connections, plain names
    (ob.IkeUpdown(sa("office@10.99.1.2"), False), []),
    (ob.ChildUpdown(sa("home"), CHILD, True), []),
    (ob.ChildUpdown(sa("roadwarrior"), CHILD, False), []),
    (log("giving up after 5 retransmits", "office@10.1.1.1"), []),
    (ob.Alert("retransmit-send", "home", 3), []),
    (ob.Undecodable("ike-updown", "bad"), []),
    (ob.CharonLost("gone"), []),
]


@pytest.mark.parametrize(("observation", "expected"), ROWS)
def test_observation_table(
    observation: ob.Observation, expected: list[tuple[str, ev.Event]]
) -> None:
    uc, sink, _ = fed()
    uc.observe(observation)
    assert sink.events == expected


def test_clone_of_an_ipv6_gateway() -> None:
    uc, sink, _ = fed()
    uc.observe(log("initiating IKE_SA home@2001:db8::2[9] to 2001:db8::2", "home@2001:db8::2", 9))
    assert sink.events == [("home", ev.IkeConnecting("2001:db8::2", 9))]


def test_undecodable_is_counted_as_skipped() -> None:
    uc, _, _ = usecase()
    uc.observe(ob.Undecodable("ike-updown", "bad"))
    assert (uc.processed, uc.skipped) == (1, 1)


def chain(publisher: RecordingPublisher) -> list[tuple[int, str, str]]:
    return [(e["ike_id"], e["old"], e["new"]) for e in publisher.of("ike-state")]


def assert_true_stream(publisher: RecordingPublisher) -> None:
    """Per IKE_SA: starts from CREATED, each event starts where the last ended, and
    nothing follows DESTROYING."""
    last: dict[int, str] = {}
    for ike_id, old, new in chain(publisher):
        assert old == last.get(ike_id, "CREATED"), (ike_id, old, new, last)
        assert old != "DESTROYING"
        last[ike_id] = new


def test_ike_state_is_per_ike_sa_and_ends_with_destroying() -> None:
    uc, _, publisher = fed()
    uc.observe(log("initiating IKE_SA home@10.99.1.2[3] to 10.99.1.2"))
    uc.observe(log("retransmit 1 of request with message ID 0"))
    uc.observe(ob.ChildUpdown(sa(), CHILD, True))
    uc.observe(ob.ChildUpdown(sa(), CHILD, True))  # no change, no notice
    uc.observe(ob.IkeRekey(sa(state="REKEYED"), sa(ike_id=4)))
    uc.observe(ob.IkeUpdown(sa(ike_id=4), False))
    uc.observe(ob.IkeUpdown(sa(ike_id=4), False))  # nothing follows DESTROYING
    uc.observe(ob.IkeUpdate(sa(ike_id=3), None, None))
    assert chain(publisher) == [
        (3, "CREATED", "CONNECTING"),
        (3, "CONNECTING", "ESTABLISHED"),
        (3, "ESTABLISHED", "REKEYED"),
        (4, "CREATED", "ESTABLISHED"),
        (3, "REKEYED", "DESTROYING"),
        (4, "ESTABLISHED", "DESTROYING"),
    ]
    assert_true_stream(publisher)
    first = publisher.of("ike-state")[0]
    assert (first["connection"], first["gateway"], first["ike"]) == ("home", "10.99.1.2", CLONE)
    view = uc.ike["home"]
    assert (view.state, view.gateway, view.ike_id) == ("DESTROYING", "10.99.1.2", 4)


def test_old_sa_of_a_switch_going_away_does_not_hide_the_new_one() -> None:
    uc, _, publisher = usecase()
    uc.observe(ob.ChildUpdown(sa("home@10.99.1.1", 3), CHILD, True))
    uc.observe(ob.ChildUpdown(sa("home@10.99.1.2", 5), CHILD, True))
    uc.observe(ob.IkeUpdate(sa("home@10.99.1.1", 3, "DELETING"), None, None))
    view = uc.ike["home"]
    assert (view.state, view.gateway, view.ike_id) == ("ESTABLISHED", "10.99.1.2", 5)
    assert chain(publisher) == [
        (3, "CREATED", "ESTABLISHED"),
        (5, "CREATED", "ESTABLISHED"),
        (3, "ESTABLISHED", "DELETING"),
    ]


def test_an_ike_sa_destroyed_without_notification_ends_the_stream() -> None:
    uc, _, publisher = fed()
    uc.observe(log("initiating IKE_SA home@10.99.1.2[3] to 10.99.1.2"))
    uc.observe(log("destroying IKE_SA in state CONNECTING without notification"))
    uc.observe(log("retransmit 1 of request with message ID 0"))
    assert chain(publisher) == [(3, "CREATED", "CONNECTING"), (3, "CONNECTING", "DESTROYING")]


def test_list_sas_ends_ike_sas_charon_no_longer_has() -> None:
    uc, _, publisher = usecase()
    uc.observe(ob.ChildUpdown(sa(ike_id=3), CHILD, True))
    uc.sync([sa(ike_id=9)])
    assert chain(publisher) == [
        (3, "CREATED", "ESTABLISHED"),
        (9, "CREATED", "ESTABLISHED"),
        (3, "ESTABLISHED", "DESTROYING"),
    ]


def test_probes_and_unmanaged_connections_are_not_tracked() -> None:
    uc, _, publisher = usecase()
    uc.observe(ob.IkeUpdown(sa(PROBE), True))
    uc.observe(ob.ChildUpdown(sa("office@10.1.1.1"), CHILD, True))
    assert uc.ike == {} and publisher.events == []


def test_an_ike_rekey_does_not_show_the_tunnel_as_connecting() -> None:
    uc, sink, publisher = fed()
    uc.observe(ob.ChildUpdown(sa(), CHILD, True))
    # charon 5.9.8 logs the rekey's new SA [4] in the context of the SA being rekeyed (3)
    uc.observe(log("initiating IKE_SA home@10.99.1.2[4] to 10.99.1.2"))
    uc.observe(ob.IkeRekey(sa(state="REKEYING"), sa(ike_id=4)))
    assert chain(publisher) == [
        (3, "CREATED", "ESTABLISHED"),
        (3, "ESTABLISHED", "REKEYING"),
        (4, "CREATED", "ESTABLISHED"),
        (3, "REKEYING", "DESTROYING"),
    ]
    assert sink.events == [
        ("home", ev.TunnelUp("10.99.1.2", 3)),
        ("home", ev.IkeRekeyed("10.99.1.2", 3, 4)),
    ]


@pytest.mark.parametrize(
    ("obs", "wanted"),
    [
        (ob.IkeSignal(ob.Signal.RETRANSMIT, "home@10.0.0.1", 3), True),
        (ob.IkeSignal(ob.Signal.RETRANSMIT, "home@10.0.0.1~probe", 3), True),
        (ob.IkeSignal(ob.Signal.RETRANSMIT, "plain", 3), False),
        # raw lines and alerts mean nothing until a dialect has read them
        (ob.LogLine("IKE", 1, "retransmit 1 of request with message ID 2", "home@10.0.0.1", 3),
         False),
        (ob.Alert("retransmit-send", "home@10.0.0.1", 3), False),
        (ob.CharonBack(), True),
    ],
)  # fmt: skip
def test_only_meaningful_observations_are_queued(obs: ob.Observation, wanted: bool) -> None:
    assert EventUsecase.wants(obs) is wanted
