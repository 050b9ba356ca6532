"""The loop-lag probe: a blocked loop shows as lag, the window forgets old stalls."""

from __future__ import annotations

import asyncio
import time

import pytest

from corestone.observability.system import LoopLagMonitor
from corestone.testing import ManualClock


async def test_a_blocking_callback_shows_as_lag() -> None:
    """A callback that holds the loop for 150 ms makes the next probe run that late."""
    monitor = LoopLagMonitor(interval=0.01, window=60)
    await monitor.start()
    try:
        await asyncio.sleep(0.02)  # the probe runs a few times on an idle loop
        asyncio.get_running_loop().call_soon(time.sleep, 0.15)  # a blocking handler
        await asyncio.sleep(0.05)
        assert monitor.lag() >= 0.1
    finally:
        await monitor.aclose()
    assert not monitor.running


async def test_the_window_keeps_the_recent_max() -> None:
    """The lag reported is the largest within the window; older samples are forgotten."""
    clock = ManualClock()
    monitor = LoopLagMonitor(interval=1, window=10, clock=clock)
    assert monitor.lag() == 0.0
    monitor.record(0.5)
    clock.advance(5)
    monitor.record(0.01)
    assert monitor.lag() == 0.5
    clock.advance(6)
    assert monitor.lag() == 0.01
    clock.advance(5)
    assert monitor.lag() == 0.0


async def test_start_twice_and_close_are_safe() -> None:
    """Starting twice schedules one probe; closing twice is harmless."""
    monitor = LoopLagMonitor(interval=0.01)
    await monitor.start()
    handle = monitor._handle
    await monitor.start()
    assert monitor._handle is handle
    await monitor.aclose()
    await monitor.aclose()


def test_non_positive_interval_is_refused() -> None:
    """An interval or window of zero would spin the loop or keep nothing; both are refused."""
    with pytest.raises(ValueError, match="positive"):
        LoopLagMonitor(interval=0)
