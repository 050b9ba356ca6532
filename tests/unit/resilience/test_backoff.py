"""The open wait's backoff: capped before it is computed, so no outage is too long for it."""

from __future__ import annotations

import contextlib

import pytest

from corestone.errors import InvalidInputError
from corestone.resilience import BreakerConfig, CircuitBreaker, State
from corestone.testing import ManualClock


class Down(Exception):
    pass


def _fail() -> None:
    raise Down


def test_a_recovered_dependency_closes_the_breaker_after_2000_opens_in_a_row() -> None:
    """After 2,000 consecutive opens (float multiplier), waits stay capped and trials close it."""
    clock = ManualClock()
    config = BreakerConfig(
        window_size=4,
        minimum_calls=4,
        permitted_calls_in_half_open=1,
        wait_in_open_seconds=1.0,
        wait_multiplier=2.0,
        max_wait_in_open_seconds=5.0,
    )
    breaker = CircuitBreaker("flaky", config, clock=clock)
    for _ in range(4):
        with contextlib.suppress(Down):
            breaker.call(_fail)
    waits = set()
    for _ in range(2000):  # every trial fails: open again, a little longer, up to the cap
        waits.add(breaker.retry_after())
        clock.advance(breaker.retry_after())
        with pytest.raises(Down):
            breaker.call(_fail)
        assert breaker.state is State.OPEN
    assert breaker.machine.consecutive_opens == 2001
    assert waits == {1.0, 2.0, 4.0, 5.0}
    clock.advance(breaker.retry_after())
    assert breaker.call(lambda: "back") == "back"  # the dependency has recovered
    assert breaker.state is State.CLOSED


@pytest.mark.parametrize("opens", [1, 2, 1025, 10**6, 10**30])
def test_wait_in_open_is_total_for_any_count(opens: int) -> None:
    """Any open count gives a wait within [wait_in_open_seconds, max_wait_in_open_seconds]."""
    config = BreakerConfig(
        wait_in_open_seconds=5.0, wait_multiplier=1.5, max_wait_in_open_seconds=60.0
    )
    assert 5.0 <= config.wait_in_open(opens) <= 60.0


def test_the_count_past_which_the_wait_stops_growing() -> None:
    """growing_opens is the first count whose wait is the cap (1 with no multiplier)."""
    config = BreakerConfig(
        wait_in_open_seconds=5.0, wait_multiplier=2.0, max_wait_in_open_seconds=300.0
    )
    n = config.growing_opens
    assert config.wait_in_open(n) == 300.0
    assert config.wait_in_open(n - 1) < 300.0
    assert BreakerConfig().growing_opens == 1


@pytest.mark.parametrize(
    "field", ["wait_multiplier", "max_wait_in_open_seconds", "slow_call_seconds"]
)
def test_infinite_durations_and_multipliers_are_refused(field: str) -> None:
    """An infinite option is refused when the config is built, naming the field."""
    with pytest.raises(InvalidInputError) as caught:
        BreakerConfig(**{field: float("inf")})  # type: ignore[arg-type]
    assert caught.value.field == field
