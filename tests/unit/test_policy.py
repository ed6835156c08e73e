"""backoff_delay: exponential per failed cycle, capped, with a deterministic jitter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extsock_py.domain.policy import BackoffPolicy, FailoverPolicy, backoff_delay

POLICY = BackoffPolicy(initial=1.0, maximum=60.0, multiplier=2.0, jitter=0.2)


@pytest.mark.parametrize(
    ("cycle", "base"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (8, 60.0),
     (9, 60.0), (10, 60.0)],
)  # fmt: skip
def test_delay_per_cycle(cycle: int, base: float) -> None:
    delay = backoff_delay(POLICY, cycle, "home")
    assert base <= delay <= base * (1 + POLICY.jitter)


def test_delay_is_deterministic_and_spreads_connections() -> None:
    assert backoff_delay(POLICY, 3, "home") == backoff_delay(POLICY, 3, "home")
    delays = {backoff_delay(POLICY, 3, f"conn{i}") for i in range(20)}
    assert len(delays) == 20


def test_no_jitter_is_the_plain_exponential() -> None:
    plain = BackoffPolicy(initial=0.5, maximum=10.0, multiplier=3.0, jitter=0.0)
    assert [backoff_delay(plain, n, "x") for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_cycle_zero_counts_as_the_first() -> None:
    plain = BackoffPolicy(jitter=0.0)
    assert backoff_delay(plain, 0, "x") == backoff_delay(plain, 1, "x") == 1.0


def test_connections_at_the_cap_still_spread_apart() -> None:
    assert backoff_delay(POLICY, 10, "a") != backoff_delay(POLICY, 10, "b")


@given(
    initial=st.floats(0.01, 10.0),
    multiplier=st.floats(1.0, 4.0),
    maximum=st.floats(0.01, 600.0),
    jitter=st.floats(0.0, 1.0),
    cycle=st.integers(1, 200),
    seed=st.text(max_size=10),
)
def test_delay_bounds(
    initial: float, multiplier: float, maximum: float, jitter: float, cycle: int, seed: str
) -> None:
    policy = BackoffPolicy(initial=initial, maximum=maximum, multiplier=multiplier, jitter=jitter)
    delay = backoff_delay(policy, cycle, seed)
    base = min(maximum, initial * multiplier ** (cycle - 1))
    assert base * (1 - 1e-9) <= delay <= base * (1 + jitter) * (1 + 1e-9)


def test_defaults() -> None:
    p = FailoverPolicy()
    assert (p.connect_timeout, p.dead_after_retransmits, p.attempts_per_gateway) == (5.0, 1, 1)
    assert p.max_cycles == 10 and not p.failback.enabled and not p.monitor.enabled


def _tenacity_base(policy: BackoffPolicy, cycle: int) -> float:
    """What the domain computed with tenacity before it stopped importing it."""
    from tenacity import RetryCallState, wait_exponential

    wait = wait_exponential(
        multiplier=policy.initial, exp_base=policy.multiplier, max=policy.maximum
    )
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, cycle)
    return float(wait(state))


@given(
    initial=st.floats(min_value=0.001, max_value=3600.0),
    maximum=st.floats(min_value=0.001, max_value=86400.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    cycle=st.integers(min_value=0, max_value=5000),
)
def test_the_exponential_is_tenacitys_without_tenacity(
    initial: float, maximum: float, multiplier: float, cycle: int
) -> None:
    policy = BackoffPolicy(initial=initial, maximum=maximum, multiplier=multiplier, jitter=0.0)
    assert backoff_delay(policy, cycle, "home") == pytest.approx(
        _tenacity_base(policy, cycle), rel=1e-12
    )


def test_the_domain_does_not_import_tenacity() -> None:
    from pathlib import Path

    import extsock_py.domain

    root = Path(extsock_py.domain.__file__).parent
    assert [p.name for p in root.rglob("*.py") if "tenacity" in p.read_text()] == []
