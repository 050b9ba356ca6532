"""The in-process event bus: record events in a unit of work, and the handlers that react.

``await bus.record(event)`` inside a transaction (``async with db.transaction()``):

1. checks the event against the registry (type known, payload exactly its model's,
   not too large) — an error here is the caller's bug and raises;
2. runs the **in-transaction** handlers of its type, in subscription order, on the same
   transaction: one that raises rolls the whole unit of work back, and the error
   propagates to the caller;
3. writes it to the outbox in that transaction (when the bus has one), so it is
   published if and only if the transaction commits;
4. after the commit (never after a rollback), runs the **after-commit** handlers in a
   background task: a failing one is retried with backoff (``retry``), and when it
   gives up the failure is logged and counted; the request that recorded the event has
   returned by then and never sees it.

After-commit handlers are in-process and best effort: a crash right after the commit
skips them. Work that must happen belongs to a consumer (:mod:`corestone.events.consumer`),
which reads the published events from the broker, at least once, and applies each once.

Metrics, per handler: ``corestone_events_handler_seconds{handler,phase}`` and
``corestone_events_handler_failures_total{handler,phase}`` (after-commit: counted when the
handler gives up, retries on ``corestone_events_handler_retries_total``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from corestone.db.database import Database
from corestone.db.transactions import Transaction, current_transaction
from corestone.events.event import DomainEvent
from corestone.events.outbox import OutboxStore
from corestone.events.registry import EventRegistry
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.resilience.retry import Retry

__all__ = ["AFTER_COMMIT_RETRY", "AfterCommitHandler", "EventBus", "Phase", "TransactionHandler"]

log = get_logger(__name__)

Phase = Literal["in_transaction", "after_commit"]
TransactionHandler = Callable[[DomainEvent, Transaction], Awaitable[None]]
"""``handler(event, tx)``: runs inside the recording transaction."""
AfterCommitHandler = Callable[[DomainEvent], Awaitable[None]]
"""``handler(event)``: runs once the recording transaction has committed."""

AFTER_COMMIT_RETRY = Retry(attempts=5, initial_wait_seconds=0.05, max_wait_seconds=2.0)
"""After-commit handlers' default: 5 attempts, full-jitter waits from 50 ms to 2 s."""


class EventBus:
    """Record events and dispatch them to in-process handlers (see the module doc).

    ``outbox`` (the default) writes every recorded event to the outbox table; ``on_recorded``
    is called after a commit that recorded events (an in-process relay passes its
    ``wake``). :meth:`aclose` waits for after-commit handlers still running.
    """

    name = "events"

    def __init__(
        self,
        database: Database,
        registry: EventRegistry,
        *,
        outbox: bool = True,
        metrics: Metrics | None = None,
        retry: Retry = AFTER_COMMIT_RETRY,
        on_recorded: Callable[[], None] | None = None,
        store: OutboxStore | None = None,
        drain_seconds: float = 10.0,
    ) -> None:
        self.database = database
        self.registry = registry
        self.store = (store or OutboxStore()) if outbox else None
        self.retry = retry
        self.on_recorded = on_recorded
        self.drain_seconds = drain_seconds
        self._in_tx: dict[str, list[tuple[str, TransactionHandler]]] = {}
        self._after: dict[str, list[tuple[str, AfterCommitHandler]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        m = metrics or Metrics()
        self._seconds = m.histogram(
            "events_handler_seconds", "Time of one handler call.", ["handler", "phase"]
        )
        self._failures = m.counter(
            "events_handler_failures_total", "Handler calls that failed for good.",
            ["handler", "phase"],
        )  # fmt: skip
        self._retries = m.counter(
            "events_handler_retries_total", "After-commit handler calls retried.", ["handler"]
        )
        self._recorded = m.counter("events_recorded_total", "Events recorded, by type.", ["type"])

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(
        self, event_type: str, handler: TransactionHandler, *, name: str | None = None
    ) -> None:
        """Run ``handler(event, tx)`` in the recording transaction for each ``event_type`` event.

        Its failure rolls the transaction back. ``name`` labels its metrics (the
        function's qualified name by default).
        """
        self.registry.get(event_type)  # a typo'd type is a start-up error, not silence
        self._in_tx.setdefault(event_type, []).append((name or _name(handler), handler))

    def subscribe_after_commit(
        self, event_type: str, handler: AfterCommitHandler, *, name: str | None = None
    ) -> None:
        """Run ``handler(event)`` after the recording transaction commits (retried, best effort)."""
        self.registry.get(event_type)
        self._after.setdefault(event_type, []).append((name or _name(handler), handler))

    # -- recording -----------------------------------------------------------------------

    async def record(self, *events: DomainEvent, transaction: Transaction | None = None) -> None:
        """Record ``events`` in ``transaction``, else the open one, else in one of their own."""
        if not events:
            return
        tx = transaction
        if tx is None and (open_tx := current_transaction()) is not None:
            tx = open_tx if open_tx.database is self.database else None
        if tx is not None:
            await self._record(tx, events)
            return
        async with self.database.transaction() as own:
            await self._record(own, events)

    async def _record(self, tx: Transaction, events: Sequence[DomainEvent]) -> None:
        checked = [(event, self.registry.check(event)) for event in events]
        for event in events:
            for name, handler in self._in_tx.get(event.type, ()):
                started = time.perf_counter()
                try:
                    await handler(event, tx)
                except Exception:
                    self._failures.labels(handler=name, phase="in_transaction").inc()
                    raise
                finally:
                    elapsed = time.perf_counter() - started
                    self._seconds.labels(handler=name, phase="in_transaction").observe(elapsed)
        if self.store is not None:
            await self.store.insert(tx.session, checked)
        types = [event.type for event in events]
        after = [event for event in events if event.type in self._after]
        tx.after_commit(lambda: self._committed(types, after))

    def _committed(self, types: list[str], events: list[DomainEvent]) -> None:
        for event_type in types:
            self._recorded.labels(type=event_type).inc()
        if self.on_recorded is not None and self.store is not None:
            self.on_recorded()
        if events:
            task = asyncio.get_running_loop().create_task(self._dispatch(events))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _dispatch(self, events: list[DomainEvent]) -> None:
        for event in events:
            for name, handler in self._after.get(event.type, ()):
                await self._call_after(name, handler, event)

    async def _call_after(self, name: str, handler: AfterCommitHandler, event: DomainEvent) -> None:
        def on_retry(error: BaseException, attempt: int, wait: float) -> None:
            self._retries.labels(handler=name).inc()
            log.info("after-commit handler retried", handler=name, event_id=str(event.id),
                     attempt=attempt, error=repr(error))  # fmt: skip

        async def attempt(_number: int) -> None:
            started = time.perf_counter()
            try:
                await handler(event)
            finally:
                elapsed = time.perf_counter() - started
                self._seconds.labels(handler=name, phase="after_commit").observe(elapsed)

        try:
            await self.retry.run(attempt, on_retry=on_retry)
        except Exception:
            self._failures.labels(handler=name, phase="after_commit").inc()
            log.exception(
                "after-commit handler failed", handler=name, event_id=str(event.id),
                event_type=event.type,
            )  # fmt: skip

    async def drain(self) -> None:
        """Wait for the after-commit handlers running now (tests, and a clean shutdown)."""
        while self._running:
            await asyncio.wait(set(self._running))

    async def start(self) -> None:
        """Nothing to start: the bus is ready when built (a component for symmetry)."""

    async def aclose(self) -> None:
        """Wait up to ``drain_seconds`` for after-commit handlers, then cancel the rest."""
        running = set(self._running)
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=self.drain_seconds)
        for task in late:
            task.cancel()
        if late:
            log.warning("after-commit handlers cut off at shutdown", count=len(late))
            await asyncio.wait(late)


def _name(handler: Callable[..., object]) -> str:
    return str(getattr(handler, "__qualname__", None) or type(handler).__name__)[:100]
