"""The dashboard's panels: each loads on its own, bounded in time and shared by callers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from corestone.observability.dashboard import Dashboard, Panel
from corestone.testing import ManualClock


class Source:
    """A panel source that counts its loads and can be held until released."""

    def __init__(self, value: Any = "data", *, fail: bool = False) -> None:
        self.value = value
        self.fail = fail
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Any:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("the source is down\nsecond line")
        return self.value


def _board(*panels: Panel, clock: ManualClock) -> Dashboard:
    return Dashboard(panels, clock=clock, now=lambda: datetime(2026, 1, 1, tzinfo=UTC))


async def test_a_failing_source_costs_its_own_panel_only() -> None:
    """One source raises: its panel carries the error's first line, the other its data."""
    clock = ManualClock()
    board = _board(Panel("good", Source(1)), Panel("bad", Source(fail=True)), clock=clock)
    answer = await board.snapshot()
    assert answer["generated_at"] == "2026-01-01T00:00:00+00:00"
    assert answer["panels"]["good"] == {"ok": True, "data": 1, "age_seconds": 0.0}
    assert answer["panels"]["bad"] == {"ok": False, "error": "RuntimeError: the source is down"}


async def test_an_answer_is_reused_for_its_ttl_then_loaded_again() -> None:
    """Within ``ttl`` the source is not called again, and the answer says how old it is."""
    clock = ManualClock()
    source = Source()
    board = _board(Panel("p", source, ttl=5.0), clock=clock)
    await board.snapshot()
    clock.advance(4.0)
    again = await board.snapshot()
    assert (source.calls, again["panels"]["p"]["age_seconds"]) == (1, 4.0)
    clock.advance(1.0)
    await board.snapshot()
    assert source.calls == 2


async def test_concurrent_callers_share_one_load() -> None:
    """Ten snapshots while a load is in progress make one call to the source."""
    source = Source()
    source.gate = asyncio.Event()
    board = _board(Panel("p", source, timeout=5.0), clock=ManualClock())
    waiting = [asyncio.create_task(board.snapshot()) for _ in range(10)]
    await asyncio.sleep(0)
    source.gate.set()
    answers = await asyncio.gather(*waiting)
    assert source.calls == 1
    assert all(a["panels"]["p"]["data"] == "data" for a in answers)


async def test_a_slow_load_is_not_cancelled_and_shows_at_the_next_poll() -> None:
    """A load past the timeout keeps running; the caller gets an error first, then (after
    the TTL) the previous answer marked stale, and the finished load after that."""
    clock = ManualClock()
    source = Source("first")
    board = _board(Panel("p", source, ttl=1.0, timeout=0.0), clock=clock)
    source.gate = asyncio.Event()
    first = await board.snapshot()
    assert first["panels"]["p"] == {"ok": False, "error": "still loading after 0 s"}
    source.gate.set()
    await asyncio.sleep(0)
    assert (await board.snapshot())["panels"]["p"]["data"] == "first"
    clock.advance(2.0)
    source.gate.clear()
    source.value = "second"
    stale = (await board.snapshot())["panels"]["p"]
    assert (stale["data"], stale["stale"]) == ("first", True)
    source.gate.set()
    await asyncio.sleep(0)
    assert (await board.snapshot())["panels"]["p"]["data"] == "second"
    assert source.calls == 2


async def test_a_cancelled_caller_leaves_the_shared_load_running() -> None:
    """Cancelling one snapshot does not cancel the load another caller waits for."""
    source = Source()
    source.gate = asyncio.Event()
    board = _board(Panel("p", source, timeout=5.0), clock=ManualClock())
    first = asyncio.create_task(board.snapshot())
    second = asyncio.create_task(board.snapshot())
    await asyncio.sleep(0)
    first.cancel()
    source.gate.set()
    assert (await second)["panels"]["p"]["data"] == "data"
    assert first.cancelled()


async def test_aclose_cancels_loads_in_progress_and_refuses_snapshots() -> None:
    """Closing stops a hanging load; a closed dashboard answers no snapshot."""
    source = Source()
    source.gate = asyncio.Event()
    board = _board(Panel("p", source, timeout=0.0), clock=ManualClock())
    await board.snapshot()
    await board.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await board.snapshot()


def test_panel_names_must_be_unique() -> None:
    """Two panels with one name are refused when the dashboard is built."""
    with pytest.raises(ValueError, match="unique"):
        Dashboard([Panel("p", Source()), Panel("p", Source())])


async def test_start_runs_each_panels_start_hook_once() -> None:
    """``on_start`` hooks run when the dashboard starts, before any snapshot."""
    started: list[str] = []
    board = Dashboard(
        [Panel("a", Source(), on_start=lambda: started.append("a")), Panel("b", Source())]
    )
    await board.start()
    assert started == ["a"]
