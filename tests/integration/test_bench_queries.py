"""The queries benchmark's building blocks, run on a few operations (nothing is timed).

``python -m bench queries`` takes minutes; this proves in seconds that its three modes
really are what the figures claim: off sends statements past no listener of the bench,
events past the bare timing listeners only, monitor past the query monitor only.
"""

from __future__ import annotations

import pytest
from bench import queries
from bench._persistence_setup import bench_database

from corestone.db import Database
from corestone.db.monitor import QueryMonitor
from corestone.observability import Metrics

pytestmark = pytest.mark.timeout(120)


async def test_each_mode_attaches_exactly_its_listeners() -> None:
    """The monitor sees only its mode's operations; the bare listeners only theirs."""
    async with bench_database() as bench:
        db = Database(bench.url, metrics=Metrics())
        await db.start()
        try:
            await queries._seed(db)
            monitor = QueryMonitor(metrics=Metrics())
            modes = queries._Modes(db, monitor)
            queries._timings.clear()
            for mode, runs in (("monitor", 3), ("events", 4), ("off", 5), ("monitor", 2)):
                modes.set(mode)
                for n in range(runs):
                    await queries._get(db, n)
                    await queries._update(db, n)
            modes.set("off")
        finally:
            await db.aclose()

    calls = {s.fingerprint.operation: s.calls for s in monitor.statistics()}
    assert calls == {"select": 5, "update": 5}
    assert len(queries._timings) == 8


async def test_the_in_process_hook_timing_runs() -> None:
    """The bookkeeping figure comes from the monitor's real hooks and is a positive time."""
    assert queries._bookkeeping_us() > 0
