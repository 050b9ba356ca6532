"""PassLoop: the background loop under the sender, the relay, the consumers, saga recovery."""

from __future__ import annotations

import asyncio

import pytest

from corestone.background import PassLoop


async def test_a_wake_runs_a_pass_long_before_the_poll_interval() -> None:
    """A commit's wake starts a pass at once; nothing runs before it (wait_first)."""
    passes: list[int] = []
    ran = asyncio.Event()

    async def run() -> bool:
        passes.append(1)
        ran.set()
        return False

    loop = PassLoop("t", run, poll_seconds=3600, drain_seconds=1)
    loop.start()
    try:
        await asyncio.sleep(0.05)
        assert passes == []
        loop.wake()
        await asyncio.wait_for(ran.wait(), 5)
        assert passes == [1]
    finally:
        await loop.stop()


async def test_a_full_pass_is_followed_at_once_and_a_failure_is_remembered_not_fatal() -> None:
    """``True`` means more is waiting: the next pass needs no wake. A failed pass is kept
    for the health check and cleared by the next good one; the loop keeps going."""
    script = [True, True, RuntimeError("db away"), False]
    seen: list[str | None] = []
    done = asyncio.Event()
    loop: PassLoop

    async def run() -> bool:
        seen.append(loop.last_error)
        step = script.pop(0)
        if not script:
            done.set()
        if isinstance(step, Exception):
            raise step
        return step

    loop = PassLoop("t", run, poll_seconds=3600, drain_seconds=1, wait_first=False,
                    pause_after=lambda _error: 0.0)  # fmt: skip
    loop.start()
    try:
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0)
        assert seen == [None, None, None, "RuntimeError('db away')"]
        assert loop.last_error is None
        assert loop.running
    finally:
        await loop.stop()


async def test_a_cancelled_stop_still_ends_the_pass_then_raises_the_cancellation() -> None:
    """The sender, relay and consumer stopped with ``suppress(CancelledError): await task``:
    a stop cancelled by its caller (a component stop timeout) swallowed that cancellation
    and returned as if done. Now the pass has ended when the stop raises CancelledError."""
    in_pass = asyncio.Event()
    pass_ended = asyncio.Event()

    async def run() -> bool:
        in_pass.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # unwinding takes a moment (a rollback)
            pass_ended.set()
        return False

    loop = PassLoop("t", run, poll_seconds=3600, drain_seconds=3600, wait_first=False)
    loop.start()
    await asyncio.wait_for(in_pass.wait(), 5)
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0.01)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert pass_ended.is_set()
    assert not loop.running


class _Fatal(BaseException):
    """Not an Exception: what the loop does not catch (a bug, a stray cancellation)."""


async def test_a_loop_that_died_says_so() -> None:
    """A BaseException out of a pass ends the loop: ``died`` lets health checks warn."""

    async def run() -> bool:
        raise _Fatal

    loop = PassLoop("t", run, poll_seconds=3600, drain_seconds=1, wait_first=False)
    loop.start()
    for _ in range(500):  # bounded: the task ends within a few loop iterations
        if loop.died:
            break
        await asyncio.sleep(0.01)
    assert loop.died
    assert not loop.running
    await loop.stop()  # the ended task's error is logged, not raised by the stop
