"""Fixtures for tests against the namespace lab (real charon daemons; needs root).

- ``lab``: module-scoped, up once per module (per parameter set) and ALWAYS brought down.
  Parametrise indirectly with LabConfig keywords::

      @pytest.mark.parametrize("lab", [{"auth": "cert"}, {"gateways": 3, "ipv6": True}],
                               indirect=True)

- ``fresh_lab``: the module's ``lab`` reset before the test (faults healed, every charon
  restarted: no SA, nothing loaded into ini).
- ``lab_factory``: function-scoped, ``lab_factory(gateways=3, auth="cert")`` builds a lab and
  downs it after the test.  Lab namespaces have fixed names, so one lab exists at a time:
  do not mix ``lab_factory`` and ``lab`` in one module.

Every lab's state dir is a pytest temporary directory, never the repository.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import DATAPLANE_ENV, DATAPLANES, INI, LabConfig
from tests.integration import vm_support

LAB_UP_TIMEOUT = 30.0
# Several labs may run on one machine at once (one per developer): each sets its own prefix.
PREFIX = os.environ.get("EXTSOCK_LAB_PREFIX", "exs-")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``dataplane`` runs on libipsec here and on XFRM in the VM."""
    explicit = any(
        "dataplane" in str(mark.args[0]) for mark in metafunc.definition.iter_markers("parametrize")
    )
    if "dataplane" in metafunc.fixturenames and not explicit:
        metafunc.parametrize("dataplane", DATAPLANES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    vm_support.delegate_xfrm_items(config, items)


def pytest_collection_finish(session: pytest.Session) -> None:
    vm_support.record_vm_items(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    vm_support.close_vm(session)


def lab_config(**params: Any) -> LabConfig:
    params.setdefault("prefix", PREFIX)
    # In the XFRM VM the whole session's labs run on the kernel's IPsec (vm_delegate.py).
    params.setdefault("dataplane", os.environ.get(DATAPLANE_ENV) or "libipsec")
    return LabConfig(**params)


@pytest.fixture(scope="session")
def lab_preflight() -> None:
    """Skip (with the reason) where no lab can run."""
    reason = Lab.preflight()
    if reason:
        pytest.skip(f"lab unavailable: {reason}")


@pytest.fixture(scope="module")
def lab(
    request: pytest.FixtureRequest,
    lab_preflight: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:
    params: dict[str, Any] = dict(getattr(request, "param", None) or {})
    the_lab = Lab(lab_config(**params), state_dir=tmp_path_factory.mktemp("lab"))
    try:
        the_lab.up(timeout=LAB_UP_TIMEOUT)
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def fresh_lab(lab: Lab) -> Lab:
    lab.reset()
    return lab


@pytest.fixture
def lab_factory(
    lab_preflight: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Lab]]:
    made: list[Lab] = []

    def make(**params: Any) -> Lab:
        for old in made:
            old.down()
        the_lab = Lab(lab_config(**params), state_dir=tmp_path_factory.mktemp("lab"))
        made.append(the_lab)
        the_lab.up(timeout=LAB_UP_TIMEOUT)
        return the_lab

    try:
        yield make
    finally:
        for the_lab in made:
            the_lab.down()


def _ping_range(lab: Lab, value: str) -> None:
    lab.ns_exec(INI, ["sysctl", "-qw", f"net.ipv4.ping_group_range={value}"], check=True)


@pytest.fixture(params=["raw", "ping"])
def socket_kind(request: pytest.FixtureRequest, fresh_lab: Lab) -> Iterator[str]:
    """The ICMP monitor's echo socket, both kinds run for real: "raw" (the lab's namespaces
    keep the kernel's default `net.ipv4.ping_group_range = 1 0`: no ping sockets) and
    "ping" (the range opened in ini's namespace for the test, closed again after it)."""
    kind: str = request.param
    if kind == "ping":
        _ping_range(fresh_lab, "0 2147483647")
    try:
        yield kind
    finally:
        if kind == "ping":
            _ping_range(fresh_lab, "1 0")  # the kernel's default, as the lab made it
