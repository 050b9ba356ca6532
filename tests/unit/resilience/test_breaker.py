"""CircuitBreaker: windows, thresholds, half-open, manual states, call styles, events."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from corestone.errors import CircuitOpenError
from corestone.resilience import (
    BreakerConfig,
    CallEvent,
    CircuitBreaker,
    EventKind,
    State,
    StateChange,
)
from corestone.testing import ManualClock


class Boom(Exception):
    pass


def make(clock: ManualClock, **options: object) -> CircuitBreaker:
    base: dict[str, object] = {
        "window_size": 10,
        "minimum_calls": 4,
        "failure_rate_threshold": 50.0,
        "wait_in_open_seconds": 30.0,
        "permitted_calls_in_half_open": 2,
        "slow_call_seconds": 1.0,
    }
    base.update(options)
    return CircuitBreaker("dep", BreakerConfig(**base), clock=clock)  # type: ignore[arg-type]


def fail() -> None:
    raise Boom


def ok() -> str:
    return "ok"


def run(breaker: CircuitBreaker, fn: object, times: int = 1) -> None:
    for _ in range(times):
        with contextlib.suppress(Boom):
            breaker.call(fn)  # type: ignore[arg-type]


def test_opens_at_the_failure_rate_once_minimum_calls_are_in() -> None:
    """Failures before the minimum number of calls do not open; reaching it with 50% does."""
    clock = ManualClock()
    breaker = make(clock)
    run(breaker, fail, 2)
    assert breaker.state is State.CLOSED
    run(breaker, ok)
    assert breaker.state is State.CLOSED
    run(breaker, ok)
    assert breaker.state is State.OPEN


def test_open_rejects_with_name_and_retry_after_then_half_opens_lazily() -> None:
    """An open breaker raises CircuitOpenError until its wait has passed."""
    clock = ManualClock()
    breaker = make(clock)
    run(breaker, fail, 4)
    clock.advance(10)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.call(ok)
    assert caught.value.name == "dep"
    assert caught.value.retry_after == pytest.approx(20.0)
    clock.advance(20)
    assert breaker.state is State.OPEN  # lazy: nothing happens until a call
    assert breaker.call(ok) == "ok"
    assert breaker.state is State.HALF_OPEN


def test_slow_calls_open_the_breaker_even_when_every_call_succeeds() -> None:
    """A slow-call rate at the threshold opens the breaker with no failure at all."""
    clock = ManualClock()
    breaker = make(clock, slow_call_rate_threshold=50.0)

    def slow() -> str:
        clock.advance(2.0)
        return "fine"

    for _ in range(4):
        assert breaker.call(slow) == "fine"
    assert breaker.state is State.OPEN
    assert breaker.machine.counters.slow_successful == 4
    assert breaker.machine.counters.failed == 0


def test_half_open_closes_after_successful_trials_and_reopens_with_growing_wait() -> None:
    """Trials decide; each consecutive open waits longer (multiplier), capped."""
    clock = ManualClock()
    breaker = make(clock, wait_multiplier=2.0, max_wait_in_open_seconds=100.0)
    run(breaker, fail, 4)
    waits = []
    for _ in range(4):
        waits.append(breaker.retry_after())
        clock.advance(breaker.retry_after())
        run(breaker, fail)  # the first trial fails ...
        run(breaker, fail)  # ... and so does the second: open again
        assert breaker.state is State.OPEN
    assert waits == [30.0, 60.0, 100.0, 100.0]
    clock.advance(breaker.retry_after())
    run(breaker, ok, 2)
    assert breaker.state is State.CLOSED
    assert breaker.machine.consecutive_opens == 0


def test_half_open_admits_only_the_permitted_trials() -> None:
    """With 2 permitted trials in flight, a third call is rejected."""
    clock = ManualClock()
    breaker = make(clock)
    run(breaker, fail, 4)
    clock.advance(30)
    guards = [breaker.guard(), breaker.guard()]
    for guard in guards:
        guard.__enter__()
    with pytest.raises(CircuitOpenError), breaker.guard():
        pass
    for guard in guards:
        guard.__exit__(None, None, None)
    assert breaker.state is State.CLOSED


def test_max_wait_in_half_open_reopens_a_stuck_trial() -> None:
    """Trials that never finish re-open the breaker after max_wait_in_half_open_seconds."""
    clock = ManualClock()
    breaker = make(clock, max_wait_in_half_open_seconds=5.0)
    run(breaker, fail, 4)
    clock.advance(30)
    breaker.guard().__enter__()
    breaker.guard().__enter__()
    clock.advance(5)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert breaker.state is State.OPEN


def test_tick_applies_time_driven_transitions() -> None:
    """tick() (the automatic-transition timer's job) moves OPEN to HALF_OPEN on time."""
    clock = ManualClock()
    breaker = make(clock)
    run(breaker, fail, 4)
    breaker.tick()
    assert breaker.state is State.OPEN
    clock.advance(30)
    breaker.tick()
    assert breaker.state is State.HALF_OPEN


def test_ignored_and_unrecorded_exceptions() -> None:
    """Ignored exceptions count as nothing; exceptions outside record_exceptions as success."""
    clock = ManualClock()

    class Ignored(Exception):
        pass

    breaker = make(clock, record_exceptions=(Boom,), ignore_exceptions=(Ignored,))
    for error in (Ignored(), ValueError(), ValueError(), ValueError(), ValueError()):

        def raiser(error: Exception = error) -> None:
            raise error

        with pytest.raises(type(error)):
            breaker.call(raiser)
    counters = breaker.machine.counters
    assert (counters.ignored, counters.successful, counters.failed) == (1, 4, 0)
    assert breaker.state is State.CLOSED


def test_record_failure_predicate_and_result_predicate() -> None:
    """A predicate on errors decides instead of the lists; one on results marks failures."""
    clock = ManualClock()
    breaker = make(
        clock,
        record_failure=lambda error: "down" in str(error),
        record_result=lambda result: result == 503,
    )
    for _ in range(2):
        assert breaker.call(lambda: 503) == 503
    with pytest.raises(RuntimeError):
        breaker.call(lambda: (_ for _ in ()).throw(RuntimeError("bad input")))
    assert breaker.state is State.CLOSED
    with pytest.raises(RuntimeError):
        breaker.call(lambda: (_ for _ in ()).throw(RuntimeError("down")))
    assert breaker.state is State.OPEN


def test_manual_states_and_reset() -> None:
    """FORCED_OPEN rejects, DISABLED and METRICS_ONLY never open, reset closes."""
    clock = ManualClock()
    breaker = make(clock)
    breaker.transition_to(State.FORCED_OPEN)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(1000)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    breaker.transition_to(State.DISABLED)
    run(breaker, fail, 20)
    assert breaker.state is State.DISABLED
    breaker.transition_to(State.METRICS_ONLY)
    run(breaker, fail, 20)
    assert breaker.state is State.METRICS_ONLY
    assert breaker.machine.window.failures == 10
    breaker.reset()
    assert breaker.state is State.CLOSED
    assert breaker.machine.window.calls == 0


def test_listeners_get_state_changes_and_call_events() -> None:
    """State listeners see transitions; call listeners see each call; a bad listener is harmless."""
    clock = ManualClock()
    breaker = make(clock)
    changes: list[StateChange] = []
    calls: list[CallEvent] = []
    breaker.add_listener(lambda e: changes.append(e))  # type: ignore[arg-type]
    breaker.add_listener(lambda e: calls.append(e), calls=True)  # type: ignore[arg-type]
    breaker.add_listener(lambda e: 1 / 0)  # type: ignore[arg-type,func-returns-value]
    run(breaker, ok)
    run(breaker, fail, 3)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert [(c.before, c.after) for c in changes] == [(State.CLOSED, State.OPEN)]
    kinds = [c.kind for c in calls]
    assert kinds == [EventKind.SUCCESS] + [EventKind.FAILURE] * 3 + [EventKind.NOT_PERMITTED]


def test_sync_call_on_async_def_counts_its_failures() -> None:
    """breaker.call on a coroutine function records the outcome when awaited."""
    clock = ManualClock()
    breaker = make(clock)

    async def broken() -> None:
        raise Boom

    async def main() -> None:
        for _ in range(4):
            with pytest.raises(Boom):
                await breaker.call(broken)

    asyncio.run(main())
    assert breaker.machine.counters.failed == 4
    assert breaker.state is State.OPEN


async def test_decorators_and_async_guard() -> None:
    """@breaker wraps sync and async functions; async with guard() records its block."""
    clock = ManualClock()
    breaker = make(clock)

    @breaker
    async def fetch(x: int) -> int:
        return x * 2

    @breaker
    def compute(x: int) -> int:
        return x + 1

    assert await fetch(2) == 4
    assert compute(2) == 3
    for _ in range(2):  # 2 successes + 2 failures: 50% over the minimum of 4 calls
        with pytest.raises(Boom):
            async with breaker.guard():
                raise Boom
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        await fetch(1)
    assert breaker.machine.counters.successful == 2


async def test_thousand_concurrent_callers_against_half_open_get_exactly_three_trials() -> None:
    """1,000 callers at once against HALF_OPEN with 3 permitted: exactly 3 calls run."""
    clock = ManualClock()
    breaker = make(clock, permitted_calls_in_half_open=3)
    run(breaker, fail, 4)
    clock.advance(30)
    release = asyncio.Event()
    ran = 0

    async def trial() -> str:
        nonlocal ran
        ran += 1
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(breaker.acall(trial)) for _ in range(1000)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert ran == 3
    assert sum(r == "ok" for r in results) == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 997
    assert breaker.state is State.CLOSED


def test_threads_are_not_serialised_through_the_breaker() -> None:
    """Eight threads are inside the guarded call at the same moment (a barrier proves it)."""
    breaker = CircuitBreaker("threads")
    barrier = threading.Barrier(8, timeout=10)
    errors: list[BaseException] = []

    def inside() -> None:
        barrier.wait()

    def worker() -> None:
        try:
            for _ in range(3):
                breaker.call(inside)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    from corestone.resilience.snapshot import snapshot_of

    assert snapshot_of(breaker).successful_calls == 8 * 3  # folds the batched successes


def test_many_threads_lose_no_outcome() -> None:
    """Successes batched without the lock are all counted, across threads."""
    breaker = CircuitBreaker("count", BreakerConfig(window_size=1000, minimum_calls=1000))

    def worker() -> None:
        for _ in range(2000):
            breaker.call(ok)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    from corestone.resilience.snapshot import snapshot_of

    snap = snapshot_of(breaker)
    assert snap.successful_calls == 8000
    assert snap.window_calls == 1000


def test_rejections_keep_nothing_per_call() -> None:
    """A rejected call's error is not kept by the breaker (no growth per rejection)."""
    import gc
    import weakref

    clock = ManualClock()
    breaker = make(clock)
    breaker.transition_to(State.FORCED_OPEN)
    refs = []
    for _ in range(100):
        try:
            breaker.call(ok)
        except CircuitOpenError as error:
            refs.append(weakref.ref(error))
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_fast_built_rejection_equals_the_normal_error() -> None:
    """The rejection built without __init__ has the same args, message, fields, details."""
    from corestone.resilience.breaker import _circuit_open

    fast = _circuit_open("smtp", 2.5)
    normal = CircuitOpenError("smtp", retry_after=2.5)
    assert type(fast) is type(normal)
    assert fast.args == normal.args
    assert vars(fast) == vars(normal)
    assert fast.details == normal.details
    assert str(fast) == str(normal)


async def test_automatic_transition_schedules_the_half_open_move() -> None:
    """With automatic_transition, opening inside a loop schedules tick() at the wait's end."""
    clock = ManualClock()
    breaker = make(clock, automatic_transition=True)
    loop = asyncio.get_running_loop()
    run(breaker, fail, 4)
    timer = breaker._timer
    assert isinstance(timer, asyncio.TimerHandle)
    assert timer.when() - loop.time() == pytest.approx(30.0, abs=1.0)
    timer.cancel()
    clock.advance(30)
    breaker.tick()  # what the timer runs
    assert breaker.state is State.HALF_OPEN
