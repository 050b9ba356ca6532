"""Permits belong to the state episode they were granted in (issue 10, defects 7 and 8)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from corestone.errors import CircuitOpenError
from corestone.resilience import BreakerConfig, CircuitBreaker, State
from corestone.testing import ManualClock


class Down(Exception):
    pass


def _make(clock: ManualClock, **options: object) -> CircuitBreaker:
    base: dict[str, object] = {
        "window_size": 4,
        "minimum_calls": 4,
        "wait_in_open_seconds": 30.0,
        "permitted_calls_in_half_open": 2,
    }
    base.update(options)
    return CircuitBreaker("dep", BreakerConfig(**base), clock=clock)  # type: ignore[arg-type]


def _open(breaker: CircuitBreaker) -> None:
    def fail() -> None:
        raise Down

    for _ in range(4):
        with contextlib.suppress(Down):
            breaker.call(fail)
    assert breaker.state is State.OPEN


async def _started(breaker: CircuitBreaker, gate: asyncio.Event) -> asyncio.Task[str]:
    """A call through ``breaker.acall`` that is in flight until ``gate`` is set."""

    async def slow_call() -> str:
        await gate.wait()
        return "late"

    task = asyncio.create_task(breaker.acall(slow_call))
    await asyncio.sleep(0)
    return task


async def _admitted(breaker: CircuitBreaker, count: int) -> tuple[int, list[asyncio.Task[str]]]:
    """How many of ``count`` concurrent calls the breaker lets in now (they stay in flight)."""
    hold = asyncio.Event()
    tasks = [await _started(breaker, hold) for _ in range(count)]
    refused = sum(
        1 for task in tasks if task.done() and isinstance(task.exception(), CircuitOpenError)
    )
    return count - refused, [task for task in tasks if not task.done()]


async def test_a_closed_call_cancelled_in_half_open_gives_no_trial_permit_back() -> None:
    """A call started in CLOSED and cancelled after the breaker half-opened frees no trial."""
    clock = ManualClock()
    breaker = _make(clock)
    stale = await _started(breaker, asyncio.Event())  # in flight while the breaker trips
    _open(breaker)
    clock.advance(30)
    admitted, trials = await _admitted(breaker, 2)
    assert (admitted, breaker.state) == (2, State.HALF_OPEN)
    stale.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stale
    admitted, more = await _admitted(breaker, 3)
    assert admitted == 0  # still exactly the two permitted trials in flight
    for task in trials + more:
        task.cancel()


async def test_a_call_started_before_the_breaker_opened_never_closes_it() -> None:
    """A call that started in CLOSED and succeeds during HALF_OPEN is not taken for a trial."""
    clock = ManualClock()
    breaker = _make(clock, permitted_calls_in_half_open=1)
    done = asyncio.Event()
    stale = await _started(breaker, done)
    _open(breaker)
    clock.advance(30)
    breaker.tick()
    assert breaker.state is State.HALF_OPEN
    done.set()
    assert await stale == "late"
    assert breaker.state is State.HALF_OPEN  # no trial ran: nothing decided
    assert breaker.call(lambda: "trial") == "trial"
    assert breaker.state is State.CLOSED


def test_a_stale_failure_does_not_reopen_a_half_open_breaker() -> None:
    """A guarded block entered in CLOSED that fails during HALF_OPEN leaves the trials alone."""
    clock = ManualClock()
    breaker = _make(clock, permitted_calls_in_half_open=1)
    block = breaker.guard()
    block.__enter__()
    _open(breaker)
    clock.advance(30)
    breaker.tick()
    block.__exit__(Down, Down(), None)
    assert breaker.state is State.HALF_OPEN
    assert breaker.call(lambda: "trial") == "trial"
    assert breaker.state is State.CLOSED


def test_a_trial_of_an_earlier_half_open_episode_is_not_a_trial_of_the_next() -> None:
    """Trials left over from a half-open episode that timed out neither decide nor free permits."""
    clock = ManualClock()
    breaker = _make(clock, permitted_calls_in_half_open=1, max_wait_in_half_open_seconds=5.0)
    _open(breaker)
    clock.advance(30)
    old_trial = breaker.guard()
    old_trial.__enter__()
    clock.advance(5)
    breaker.tick()  # the trial took too long: open again
    assert breaker.state is State.OPEN
    clock.advance(breaker.retry_after())
    new_trial = breaker.guard()
    new_trial.__enter__()
    old_trial.__exit__(asyncio.CancelledError, asyncio.CancelledError(), None)
    with pytest.raises(CircuitOpenError):  # the cancelled old trial freed nothing
        breaker.permit()
    new_trial.__exit__(None, None, None)
    assert breaker.state is State.CLOSED


async def test_a_caller_cancelled_at_the_trial_gate_gives_its_permit_back() -> None:
    """Cancelled while awaiting the trial gate, a caller frees its permit; the next one runs."""
    clock = ManualClock()
    breaker = _make(clock, permitted_calls_in_half_open=1)  # max_wait_in_half_open: 0
    _open(breaker)
    clock.advance(30)
    waiting = asyncio.Event()

    async def stuck_gate(_: CircuitBreaker) -> bool:
        waiting.set()
        await asyncio.Event().wait()
        return True

    breaker.trial_gate = stuck_gate
    caller = asyncio.create_task(breaker.acall(asyncio.sleep, 0, "never"))
    await waiting.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller

    async def open_gate(_: CircuitBreaker) -> bool:
        return True

    breaker.trial_gate = open_gate
    assert await breaker.acall(asyncio.sleep, 0, "trial") == "trial"
    assert breaker.state is State.CLOSED


async def test_the_async_guard_passes_the_trial_gate_and_a_refusal_frees_the_permit() -> None:
    """``async with guard()`` asks the gate in HALF_OPEN; a 'no' rejects and frees the permit."""
    clock = ManualClock()
    breaker = _make(clock, permitted_calls_in_half_open=1)
    _open(breaker)
    clock.advance(30)
    answers = [False, True]

    async def gate(_: CircuitBreaker) -> bool:
        return answers.pop(0)

    breaker.trial_gate = gate
    with pytest.raises(CircuitOpenError):
        async with breaker.guard():
            pass
    async with breaker.guard():
        pass
    assert breaker.state is State.CLOSED
    assert answers == []


def test_an_ignored_trial_gives_its_permit_back_and_counts_as_ignored() -> None:
    """A trial ending in an ignored error frees its permit for the next trial."""
    clock = ManualClock()
    breaker = _make(clock, permitted_calls_in_half_open=1, ignore_exceptions=(KeyError,))
    _open(breaker)
    clock.advance(30)
    with pytest.raises(KeyError), breaker.guard():
        raise KeyError("not the dependency's fault")
    assert breaker.machine.counters.ignored == 1
    with breaker.guard():
        pass
    assert breaker.state is State.CLOSED


def test_an_adapter_permit_from_closed_does_not_count_in_half_open() -> None:
    """permit() / record_outcome(): an adapter's stale success never closes the breaker."""
    clock = ManualClock()
    breaker = _make(clock, permitted_calls_in_half_open=1)
    stale = breaker.permit()
    _open(breaker)
    clock.advance(30)
    trial = breaker.permit()
    breaker.record_outcome(stale, 0.01)
    breaker.release(stale)
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        breaker.permit()
    breaker.record_outcome(trial, 0.01)
    assert breaker.state is State.CLOSED
