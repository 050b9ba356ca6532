"""Outbox write overhead: a one-row write transaction with one event vs the same write alone.

Two shapes of transaction on corestone's :class:`~corestone.db.Database`, alternating one
by one (ABC CBA …) so the machine's load hits them alike:

- **write**: one plain one-row insert into the caller's table, then COMMIT;
- **write + event**: the same insert, then ``EventBus.record`` of one event (built in the
  timed region, as the application builds it: ``DomainEvent.create`` makes its UUIDv7 and
  validates the payload), which checks it and inserts the outbox row with its
  ``pg_notify``; then COMMIT;
- **write + SELECT 1**: the same insert, then the cheapest statement there is. Not a
  target: the floor of anything that adds one statement (one round trip through the
  session) to the transaction, which is what recording an event is.

The bus has no relay to wake and no handlers, so this is the outbox's own cost. Medians
of the per-transaction times, in microseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import insert, literal, select

from bench._events_setup import CHANGES, event, registry
from corestone.db import Database
from corestone.events import EventBus

__all__ = ["WriteResult", "write_overhead"]

_SELECT_1 = select(literal(1))


@dataclass(frozen=True, slots=True)
class WriteResult:
    write_us: float
    write_event_us: float
    write_select_us: float
    transactions: int
    """Timed transactions of each shape."""

    @property
    def ratio(self) -> float:
        return self.write_event_us / self.write_us

    @property
    def select_ratio(self) -> float:
        return self.write_select_us / self.write_us


async def write_overhead(db: Database, count: int) -> WriteResult:
    """``count`` transactions of each shape, alternating (ABC CBA …) so load drifts hit all."""
    bus = EventBus(db, registry())
    numbers = iter(range(10**9))

    async def write() -> None:
        async with db.transaction() as tx:
            await tx.session.execute(insert(CHANGES).values(title="a task"))

    async def write_event() -> None:
        async with db.transaction() as tx:
            await tx.session.execute(insert(CHANGES).values(title="a task"))
            await bus.record(event(next(numbers)))

    async def write_select() -> None:
        async with db.transaction() as tx:
            await tx.session.execute(insert(CHANGES).values(title="a task"))
            await tx.session.execute(_SELECT_1)

    shapes: dict[str, Callable[[], Awaitable[None]]] = {
        "write": write, "event": write_event, "select": write_select,
    }  # fmt: skip
    samples: dict[str, list[int]] = {name: [] for name in shapes}
    for _ in range(20):  # warm the pool, the statement caches and the tables
        for call in shapes.values():
            await call()
    order = list(shapes.items())
    for i in range(count):
        for name, call in order if i % 2 else reversed(order):
            started = time.perf_counter_ns()
            await call()
            samples[name].append(time.perf_counter_ns() - started)
    return WriteResult(
        statistics.median(samples["write"]) / 1000,
        statistics.median(samples["event"]) / 1000,
        statistics.median(samples["select"]) / 1000,
        count,
    )
