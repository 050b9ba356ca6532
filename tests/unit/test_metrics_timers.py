"""Timers: blocks and calls, sync and async, observed into a histogram in seconds."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corestone.observability.metrics import Metrics
from corestone.testing import ManualClock


def _observed(metrics: Metrics, name: str, **labels: str) -> tuple[float, float]:
    """(count, sum) of one histogram series."""
    count = total = 0.0
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.labels.items() >= labels.items():
                if sample.name == f"{name}_count":
                    count = sample.value
                elif sample.name == f"{name}_sum":
                    total = sample.value
    return count, total


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def metrics(clock: ManualClock) -> Metrics:
    return Metrics(clock=clock)


async def test_with_and_async_with_observe_the_time_of_the_block(
    metrics: Metrics, clock: ManualClock
) -> None:
    """A block timed with `with` and one with `async with` each observe their duration."""
    timer = metrics.timer("test_block_seconds", "block")
    with timer:
        clock.advance(0.25)
    async with timer:
        clock.advance(0.5)

    assert _observed(metrics, "corestone_test_block_seconds") == (2.0, 0.75)


def test_a_decorated_function_is_timed_and_a_failure_is_still_observed(
    metrics: Metrics, clock: ManualClock
) -> None:
    """Each call of a decorated function is observed, also when it raises."""
    timer = metrics.timer("test_call_seconds", "call")

    @timer
    def work(seconds: float) -> float:
        clock.advance(seconds)
        if seconds > 1:
            raise RuntimeError("too slow")
        return seconds

    assert work(0.5) == 0.5
    assert work.__name__ == "work"
    with pytest.raises(RuntimeError):
        work(2.0)

    assert _observed(metrics, "corestone_test_call_seconds") == (2.0, 2.5)


async def test_a_decorated_coroutine_function_times_the_await_not_the_creation(
    metrics: Metrics, clock: ManualClock
) -> None:
    """Time between making the coroutine and awaiting it is not counted; a raise is."""
    timer = metrics.timer("test_await_seconds", "await")

    @timer
    async def fetch(seconds: float) -> str:
        await asyncio.sleep(0)
        clock.advance(seconds)
        if seconds > 1:
            raise TimeoutError
        return "done"

    pending = fetch(0.25)
    clock.advance(10.0)  # created, not yet awaited
    assert await pending == "done"
    with pytest.raises(TimeoutError):
        await fetch(2.0)

    assert _observed(metrics, "corestone_test_await_seconds") == (2.0, 2.25)


async def test_one_timer_entered_by_concurrent_tasks_times_each_one(
    metrics: Metrics, clock: ManualClock
) -> None:
    """Interleaved tasks in one shared timer each observe their own start and end."""
    timer = metrics.timer("test_shared_seconds", "shared")
    first_in = asyncio.Event()
    second_done = asyncio.Event()

    async def first() -> None:
        async with timer:
            first_in.set()
            await second_done.wait()
            clock.advance(1.0)

    async def second() -> None:
        await first_in.wait()
        clock.advance(4.0)
        with timer:
            clock.advance(2.0)
        second_done.set()

    await asyncio.gather(first(), second())

    assert _observed(metrics, "corestone_test_shared_seconds") == (2.0, 2.0 + 7.0)


async def test_cancellation_is_observed_and_nested_blocks_keep_their_starts(
    metrics: Metrics, clock: ManualClock
) -> None:
    """A cancelled block is observed; a block nested in the same timer measures itself."""
    timer = metrics.timer("test_nested_seconds", "nested")
    with timer:
        clock.advance(1.0)
        with timer:
            clock.advance(2.0)
    assert _observed(metrics, "corestone_test_nested_seconds") == (2.0, 5.0)

    started = asyncio.Event()

    async def cancelled() -> None:
        async with timer:
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled())
    await started.wait()
    clock.advance(3.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _observed(metrics, "corestone_test_nested_seconds") == (3.0, 8.0)


def test_a_labelled_timer_is_bound_once_and_reused(metrics: Metrics, clock: ManualClock) -> None:
    """labels() returns the same child each time; the unbound labelled timer refuses to time."""
    timer = metrics.timer("test_route_seconds", "route", ["route"])
    child = timer.labels(route="/a")
    assert timer.labels("/a") is child
    with child:
        clock.advance(0.5)
    child.observe(0.25)

    @timer.labels(route="/b")
    def other() -> None:
        clock.advance(1.0)

    other()
    assert _observed(metrics, "corestone_test_route_seconds", route="/a") == (2.0, 0.75)
    assert _observed(metrics, "corestone_test_route_seconds", route="/b") == (1.0, 1.0)
    with pytest.raises(ValueError, match="labels"), timer:
        pass
    with pytest.raises(ValueError, match="labels"):
        timer(other)


def test_a_timer_is_named_in_seconds_and_asking_again_returns_it(metrics: Metrics) -> None:
    """The name must end in _seconds; the same name gives the same timer."""
    with pytest.raises(ValueError, match="_seconds"):
        metrics.timer("test_latency", "latency")
    timer = metrics.timer("test_again_seconds", "again", ["route"])
    assert metrics.timer("test_again_seconds", "again", ["route"]) is timer


def test_labelled_timers_fold_beyond_the_cap(clock: ManualClock) -> None:
    """A timer's children obey the series cap like any labelled metric."""
    metrics = Metrics(clock=clock)
    timer = metrics.timer("test_capped_seconds", "capped", ["route"], max_series=1)
    timer.labels("/a").observe(1.0)
    timer.labels("/b").observe(2.0)
    timer.labels("/c").observe(3.0)

    assert _observed(metrics, "corestone_test_capped_seconds", route="other") == (2.0, 5.0)
