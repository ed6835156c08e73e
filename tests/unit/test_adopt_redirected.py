"""Adoption of a tunnel that a gateway's redirect (RFC 5685) took elsewhere.

After a redirect charon keeps the IKE_SA under the clone's name (`home@<the gateway that
redirected>`) while its remote host is the target. Found by the chaos run (issue 26, seed 11,
600 s): extsock killed 17 s after segw2 redirected both connections' shared IKE_SA to segw3;
the new extsock adopted them "up on 10.99.2.2 (IKE_SA #5)" from the clone's name, and its
status named segw2 as the active gateway for the 30 s until the next failover while the
tunnel went through segw3 (charon: `IKE_SA upa@10.99.2.2[5] established between
10.99.3.1...10.99.3.2`); a DELETE the run aimed at the active gateway found no CHILD_SA there.
"""

from __future__ import annotations

import dataclasses

from extsock_py.adapters.reports_json import row_json
from extsock_py.domain.profile import clone_name
from tests.unit.test_adoption_and_status import started
from tests.unit.test_control_support import make_harness


def test_an_adopted_redirected_tunnel_names_the_gateway_it_goes_to() -> None:
    harness = make_harness()
    sa = harness.charon.add_sa(clone_name("home", "10.0.0.2"), unique_id=41)
    harness.charon.sas[41] = dataclasses.replace(sa, remote_host="10.0.0.9")
    with started(harness):
        row = row_json(harness.operator.status("home").connections[0])
    assert (row["phase"], row["ike_id"]) == ("up", 41)
    assert (row["active_gateway"], row["redirected_to"]) == ("10.0.0.9", "10.0.0.9")
    assert row["target_gateway"] == "10.0.0.2"  # the clone stays the one it was


def test_an_adopted_tunnel_where_its_clone_points_is_no_redirect() -> None:
    harness = make_harness()
    sa = harness.charon.add_sa(clone_name("home", "10.0.0.2"), unique_id=41)
    harness.charon.sas[41] = dataclasses.replace(sa, remote_host="10.0.0.2")
    with started(harness):
        row = row_json(harness.operator.status("home").connections[0])
    assert (row["active_gateway"], row["redirected_to"]) == ("10.0.0.2", None)
