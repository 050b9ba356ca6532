"""The latency run's writers, in a process of their own: ``python -m bench._events_writer``.

As ``taskboard serve --no-worker`` beside a ``taskboard worker``: this process only
writes (one row and one event per transaction, open-loop at ``RATE`` per second, at most
:data:`IN_FLIGHT` at once) and the measuring process runs the relay and the consumer,
woken by PostgreSQL's NOTIFY at each commit. It prints one JSON object: event id → the
``time.perf_counter()`` at which its COMMIT returned. ``perf_counter`` is
``CLOCK_MONOTONIC`` on Linux, one clock for every process of the machine, so the
measuring process can subtract it from its own.

Arguments: ``DATABASE_URL RATE COUNT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from sqlalchemy import insert

from bench._events_setup import CHANGES, event, registry
from corestone.db import Database
from corestone.events import EventBus

__all__ = ["IN_FLIGHT", "main", "write_steadily"]

IN_FLIGHT = 16


async def write_steadily(db: Database, rate: float, count: int) -> dict[str, float]:
    """``count`` one-event transactions started at ``rate`` per second; commit times."""
    bus = EventBus(db, registry())
    committed: dict[str, float] = {}
    # Fewer writes in flight than the pool has connections: a machine that cannot keep up
    # slips the schedule (the achieved rate says so) instead of failing on the pool.
    in_flight = asyncio.Semaphore(IN_FLIGHT)

    async def write(i: int) -> None:
        made = event(i)
        key = str(made.id)
        async with in_flight, db.transaction() as tx:
            # Registered before the bus's own hook: runs first, right after COMMIT returns.
            tx.after_commit(lambda: committed.__setitem__(key, time.perf_counter()))
            await tx.session.execute(insert(CHANGES).values(title=f"task {i}"))
            await bus.record(made)

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    writes: list[asyncio.Task[None]] = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight.locked():
            await in_flight.acquire()  # behind schedule: wait for a free slot, then go
            in_flight.release()
        writes.append(asyncio.create_task(write(i)))
    await asyncio.gather(*writes)
    return committed


async def _run(url: str, rate: float, count: int) -> None:
    db = Database(url)
    await db.start()
    try:
        committed = await write_steadily(db, rate, count)
    finally:
        await db.aclose()
    sys.stdout.write(json.dumps(committed) + "\n")


def main(argv: list[str]) -> None:
    url, rate, count = argv[0], float(argv[1]), int(argv[2])
    asyncio.run(_run(url, rate, count))


if __name__ == "__main__":
    main(sys.argv[1:])
