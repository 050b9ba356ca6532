"""A consumer's fetch applied in one transaction, each event in a savepoint of its own.

One transaction per event paid a BEGIN and a COMMIT (an fsync on PostgreSQL) for every
event and held a consumer under 200 events a second. In one transaction the batch pays
one commit. A handler that raises rolls back its own savepoint only (its inbox row and
effects with it, and the hooks it registered are dropped as for any rolled-back
savepoint); the other events still commit.

A failure of the transaction as a whole (the commit, a lost connection, a deferred
constraint) does not say which event caused it. The batch is then applied again one
event per transaction, so a poison event fails alone and reaches its dead letter,
instead of failing its whole batch at every delivery for ever.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from corestone.db.database import Database
from corestone.db.transactions import Transaction
from corestone.events.brokers.base import Delivery
from corestone.events.event import DomainEvent
from corestone.observability.logging import get_logger

__all__ = ["BatchItem", "apply_batch"]

log = get_logger(__name__)

Apply = Callable[[Transaction, DomainEvent, Callable[..., Awaitable[None]]], Awaitable[bool]]


@dataclass(slots=True)
class BatchItem:
    """One decoded delivery with a handler, and what applying it came to."""

    delivery: Delivery
    event: DomainEvent
    handler: Callable[..., Awaitable[None]]
    applied: bool | None = None
    """True: applied; False: a duplicate (already in the inbox); None: not reached."""
    error: Exception | None = None
    seconds: float = 0.0

    @property
    def reached(self) -> bool:
        return self.applied is not None or self.error is not None


async def apply_batch(
    database: Database,
    apply: Apply,
    items: Sequence[BatchItem],
    *,
    stopping: Callable[[], bool],
) -> None:
    """Apply ``items`` in order, committing together; set each one's outcome in place.

    ``stopping()`` is asked before each event: a consumer shutting down commits what
    it has applied and leaves the rest unreached, for the broker to deliver again.
    """
    try:
        await _in_one_transaction(database, apply, items, stopping)
    except Exception as error:  # noqa: BLE001 - which event failed is unknown: one by one
        if len(items) == 1:
            _reset(items)
            items[0].error = error
            return
        log.warning("events batch failed as a whole; applying its events one by one",
                    size=len(items), error=repr(error))  # fmt: skip
        for item in items:
            if stopping():
                _reset([item])
                continue
            try:
                await _in_one_transaction(database, apply, [item], stopping)
            except Exception as single:  # noqa: BLE001 - this event's own failure
                _reset([item])
                item.error = single


async def _in_one_transaction(
    database: Database,
    apply: Apply,
    items: Sequence[BatchItem],
    stopping: Callable[[], bool],
) -> None:
    async def work(_tx: Transaction) -> None:
        _reset(items)  # a retried attempt starts again from nothing
        for item in items:
            if stopping():
                return
            started = time.perf_counter()
            try:
                async with database.transaction() as savepoint:
                    item.applied = await apply(savepoint, item.event, item.handler)
            except Exception as error:  # noqa: BLE001 - this event's failure, not the batch's
                item.error = error
            item.seconds = time.perf_counter() - started

    try:
        await database.run_in_transaction(work)
    except BaseException:
        _reset(items)  # nothing of this attempt committed
        raise


def _reset(items: Sequence[BatchItem]) -> None:
    for item in items:
        item.applied, item.error, item.seconds = None, None, 0.0
