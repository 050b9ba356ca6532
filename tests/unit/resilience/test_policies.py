"""Retry, Timeout, Bulkhead and their composition in Pipeline."""

from __future__ import annotations

import asyncio

import pytest

from corestone.errors import BulkheadFullError, CircuitOpenError, InvalidInputError
from corestone.observability.metrics import Metrics
from corestone.resilience import (
    BreakerConfig,
    Bulkhead,
    CircuitBreaker,
    Pipeline,
    Retry,
    State,
    Timeout,
)
from corestone.testing import ManualClock


class Flaky:
    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.error = error or ConnectionError("down")

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def no_sleep_retry(**options: object) -> tuple[Retry, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return Retry(sleep=sleep, sleep_sync=slept.append, **options), slept  # type: ignore[arg-type]


async def test_retry_retries_with_full_jitter_backoff_until_success() -> None:
    """Two failures then success: three attempts, waits within the exponential caps."""
    retry, slept = no_sleep_retry(attempts=4, initial_wait_seconds=0.5, max_wait_seconds=10.0)
    flaky = Flaky(2)
    assert await retry.call(flaky) == "ok"
    assert flaky.calls == 3
    assert len(slept) == 2
    assert 0 <= slept[0] <= 0.5
    assert 0 <= slept[1] <= 1.0


async def test_retry_gives_up_after_attempts_and_reraises() -> None:
    """The last error is raised as itself after `attempts` tries."""
    retry, _ = no_sleep_retry(attempts=3)
    flaky = Flaky(10)
    with pytest.raises(ConnectionError):
        await retry.call(flaky)
    assert flaky.calls == 3


async def test_retry_never_retries_an_open_circuit() -> None:
    """CircuitOpenError ends the retry at once, even when retry_on matches everything."""
    retry, slept = no_sleep_retry(attempts=5, retry_on=lambda e: True)
    flaky = Flaky(10, CircuitOpenError("db", retry_after=3))
    with pytest.raises(CircuitOpenError):
        await retry.call(flaky)
    assert (flaky.calls, slept) == (1, [])


async def test_retry_on_predicate_and_types() -> None:
    """Only the listed exception types (or what the predicate accepts) are retried."""
    retry, _ = no_sleep_retry(attempts=3, retry_on=(TimeoutError,))
    flaky = Flaky(1, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        await retry.call(flaky)
    assert flaky.calls == 1


async def test_first_attempt_does_not_touch_tenacity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that succeeds at once never builds tenacity's machinery."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tenacity used on the success path")

    monkeypatch.setattr("corestone.resilience.retry.AsyncRetrying", refuse)
    monkeypatch.setattr("corestone.resilience.retry.Retrying", refuse)
    retry = Retry()
    assert await retry.call(Flaky(0)) == "ok"
    assert retry.call_sync(lambda: 7) == 7


def test_retry_sync_retries_too() -> None:
    """The sync variant retries with the same policy, sleeping through ``sleep_sync``."""
    retry, slept = no_sleep_retry(attempts=3)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    assert retry.call_sync(flaky) == "ok"
    assert len(slept) == 2


def clocked_retry(clock: ManualClock, **options: object) -> tuple[Retry, list[float]]:
    """A policy on ``clock`` whose sleeps move that clock instead of waiting."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    def sleep_sync(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    return Retry(clock=clock, sleep=sleep, sleep_sync=sleep_sync, **options), slept  # type: ignore[arg-type]


async def test_retry_deadline_counts_the_first_attempt() -> None:
    """A 0.5 s deadline with a 1 s first attempt ends after that attempt: one try, no wait."""
    clock = ManualClock()
    retry, slept = clocked_retry(clock, attempts=5, deadline_seconds=0.5)
    calls = 0

    async def slow_failure() -> None:
        nonlocal calls
        calls += 1
        clock.advance(1.0)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await retry.call(slow_failure)
    assert (calls, slept) == (1, [])

    def slow_failure_sync() -> None:
        nonlocal calls
        calls += 1
        clock.advance(1.0)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        retry.call_sync(slow_failure_sync)
    assert (calls, slept) == (2, [])


async def test_retry_never_sleeps_past_the_deadline() -> None:
    """Attempts stop when the next wait would end beyond the deadline, with attempts left."""
    clock = ManualClock()
    retry, slept = clocked_retry(
        clock, attempts=100, initial_wait_seconds=0.5, max_wait_seconds=0.5, deadline_seconds=3.0
    )
    started = clock()
    flaky = Flaky(1000)
    with pytest.raises(ConnectionError):
        await retry.call(flaky)
    assert 1 < flaky.calls < 100
    assert clock() - started <= 3.0
    assert sum(slept) == pytest.approx(clock() - started)


async def test_run_passes_attempt_numbers_and_reports_retries() -> None:
    """``run`` numbers the attempts, narrows with ``retry_if`` and reports each retry."""
    retry, slept = no_sleep_retry(attempts=5, initial_wait_seconds=0)
    numbers: list[int] = []
    reported: list[tuple[str, int]] = []

    async def attempt(number: int) -> int:
        numbers.append(number)
        if number < 3:
            raise ConnectionError(f"try {number}")
        if number == 3:
            raise ValueError("not retryable here")
        return number

    with pytest.raises(ValueError, match="not retryable"):
        await retry.run(
            attempt,
            retry_if=lambda e: isinstance(e, ConnectionError),
            on_retry=lambda error, number, wait: reported.append((str(error), number)),
        )
    assert numbers == [1, 2, 3]
    assert reported == [("try 1", 1), ("try 2", 2)]
    assert len(slept) == 2


def test_retry_validates_options() -> None:
    """Impossible policies are refused with the field named."""
    with pytest.raises(InvalidInputError) as caught:
        Retry(attempts=0)
    assert caught.value.field == "attempts"


async def test_timeout_cuts_off_and_counts() -> None:
    """An expired call raises TimeoutError and increments corestone_timeouts_total."""
    metrics = Metrics()
    timeout = Timeout("slow", 0.01, metrics=metrics)
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        await timeout.call(never.wait)
    assert timeout.expired == 1
    assert 'corestone_timeouts_total{name="slow"} 1.0' in metrics.render().decode()
    assert await timeout.call(asyncio.sleep, 0, "done") == "done"


async def test_bulkhead_limits_concurrency_and_queue() -> None:
    """2 run, 1 waits in the queue, the 4th is rejected at once with BulkheadFullError."""
    bulkhead = Bulkhead("api", max_concurrent=2, max_queue=1)
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def work() -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return "ok"

    tasks = [asyncio.create_task(bulkhead.call(work)) for _ in range(3)]
    await asyncio.sleep(0)
    assert (bulkhead.active, bulkhead.waiting) == (2, 1)
    with pytest.raises(BulkheadFullError) as caught:
        await bulkhead.call(work)
    assert caught.value.code == "bulkhead_full"
    gate.set()
    assert await asyncio.gather(*tasks) == ["ok"] * 3
    assert peak == 2
    assert (bulkhead.active, bulkhead.waiting, bulkhead.rejected) == (0, 0, 1)


async def test_bulkhead_queue_wait_is_bounded() -> None:
    """A queued caller gives up after max_wait_seconds with BulkheadFullError."""
    bulkhead = Bulkhead("api", max_concurrent=1, max_queue=1, max_wait_seconds=0.01)
    gate = asyncio.Event()
    holder = asyncio.create_task(bulkhead.call(gate.wait))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await bulkhead.call(gate.wait)
    gate.set()
    await holder
    assert bulkhead.active == 0


def test_bulkhead_sync_rejects_beyond_capacity() -> None:
    """The thread variant rejects when no slot and no queue room is left."""
    bulkhead = Bulkhead("sync", max_concurrent=1)

    def inner() -> None:
        with pytest.raises(BulkheadFullError):
            bulkhead.call_sync(lambda: None)

    bulkhead.call_sync(inner)
    assert bulkhead.rejected == 1


async def test_pipeline_retries_through_the_breaker_and_stops_when_it_opens() -> None:
    """Each attempt is counted by the breaker; once open, the retry stops at once."""
    clock = ManualClock()
    breaker = CircuitBreaker("dep", BreakerConfig(window_size=4, minimum_calls=2), clock=clock)
    retry, slept = no_sleep_retry(attempts=10)
    pipeline = Pipeline(
        breaker=breaker,
        retry=retry,
        timeout=Timeout("dep", 5.0),
        bulkhead=Bulkhead("dep", max_concurrent=4),
    )
    flaky = Flaky(100)
    with pytest.raises(CircuitOpenError):
        await pipeline.call(flaky)
    assert flaky.calls == 2  # the third attempt was rejected by the breaker, not made
    assert breaker.state is State.OPEN
    assert len(slept) == 2
    assert await Pipeline().call(Flaky(0)) == "ok"
