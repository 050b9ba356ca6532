"""Consumers: read published events from the broker and apply each one once.

An :class:`EventConsumer` is one consumer group (``group``, e.g. ``"mailer"``) with a
handler per event type. For each delivery it:

1. decodes the bytes (:meth:`EventRegistry.decode`: known type, valid payload, upcast to
   the current version, within the size limit). What does not decode can never succeed:
   it goes to the dead letters at once, with the error as the reason, and is acked;
2. skips (acks) an event type it has no handler for;
3. runs the handler in a database transaction that also records the event id in the
   inbox (:mod:`corestone.events.inbox`): one transaction for the fetched batch, each
   event in a savepoint of its own (:mod:`corestone.events._batch`). An id already
   there means a redelivery of something already applied: nothing runs, and it is
   acked. This is what makes the broker's at-least-once delivery (and the relay's
   republish after a crash) apply each event's effects once: *effects that live in
   the same database*. A handler that calls out (an email, an HTTP call) should make
   that call idempotent by the event id;
4. acks after the commit. If the handler raises, its savepoint rolls back and the
   delivery is naked to come back after a backoff (``backoff_initial_seconds``,
   doubling up to ``backoff_max_seconds``); on its ``max_attempts``-th delivery it goes
   to the dead letters with the error and is acked.

A crash anywhere is safe: before the commit nothing happened and the broker redelivers;
after it, the inbox absorbs the redelivery. Deliveries are handled one at a time in the
order the broker gives them, so one consumer keeps an aggregate's events in order
(a retried event can be overtaken by later ones: handlers that care check versions).

Between batches the running consumer also does its housekeeping, each on its own
period, never per message: it replays the dead letters an operator marked for replay
from another process (``corestone events dead-letters replay``; every
``replay_poll_seconds``), reads the group's lag from the broker for the
``corestone_events_consumer_lag`` gauge and the health check (``lag_refresh_seconds``),
and deletes inbox rows older than ``inbox_retention_seconds`` (``prune_every_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from corestone import context
from corestone.background import cancel_and_wait
from corestone.db.database import Database
from corestone.db.models import utc_now
from corestone.db.transactions import Transaction
from corestone.errors import CircuitOpenError, InvalidInputError
from corestone.events._batch import BatchItem, apply_batch
from corestone.events._dead_letter_ops import DeadLetterOps, Replayed
from corestone.events.brokers.base import Broker, Delivery, LagBroker
from corestone.events.brokers.guarded import guard_broker
from corestone.events.event import DomainEvent
from corestone.events.inbox import InboxStore
from corestone.events.registry import EventRegistry
from corestone.events.relay import DEFAULT_TOPIC
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.resilience.registry import BreakerRegistry

__all__ = [
    "DEFAULT_INBOX_RETENTION_SECONDS",
    "ConsumerHandler",
    "EventConsumer",
    "Handled",
    "Replayed",
]

log = get_logger(__name__)

ConsumerHandler = Callable[[DomainEvent, Transaction], Awaitable[None]]
"""``handler(event, tx)``: apply ``event``'s effects in ``tx`` (the inbox row's transaction)."""

Handled = Literal["handled", "duplicate", "skipped", "retried", "dead_lettered"]

DEFAULT_INBOX_RETENTION_SECONDS = 7 * 24 * 3600.0
"""How long an inbox row is kept: a week (see :class:`EventConsumer`)."""
_MIN_INBOX_RETENTION_SECONDS = 3600.0


class EventConsumer(DeadLetterOps):
    """One consumer group applying events once; a component (see the module doc).

    ``inbox_retention_seconds`` (a week) is how long the inbox remembers a handled
    event, so it must exceed the longest time after which an event already applied can
    be delivered again: the brokers' redelivery of an unacked delivery (``ack_wait``,
    seconds) and their de-duplication windows (minutes), the relay's republish after a
    crash (when its lease ends, or when a stopped relay comes back), and the deliveries
    a group held when all its consumers stopped (when they come back). A redelivery
    later than that is applied again; less than an hour is refused. ``lag_warn`` is the
    lag (messages not yet handed to the group) above which the health check warns.
    """

    def __init__(
        self,
        database: Database,
        broker: Broker,
        registry: EventRegistry,
        *,
        group: str,
        handlers: Mapping[str, ConsumerHandler] | None = None,
        topic: str = DEFAULT_TOPIC,
        breakers: BreakerRegistry | None = None,
        metrics: Metrics | None = None,
        max_attempts: int = 5,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 300.0,
        batch: int = 50,
        wait_seconds: float = 1.0,
        drain_seconds: float = 10.0,
        consumer_id: str | None = None,
        lag_warn: int = 1000,
        lag_refresh_seconds: float = 15.0,
        replay_poll_seconds: float = 2.0,
        inbox_retention_seconds: float = DEFAULT_INBOX_RETENTION_SECONDS,
        prune_every_seconds: float = 3600.0,
        prune_chunk: int = 1000,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if not group or len(group) > 100:
            raise ValueError("group: 1 to 100 characters")
        if max_attempts < 1 or batch < 1 or prune_chunk < 1 or lag_warn < 0:
            raise ValueError("max_attempts, batch and prune_chunk at least 1; lag_warn >= 0")
        if min(lag_refresh_seconds, replay_poll_seconds, prune_every_seconds) <= 0:
            raise ValueError("lag_refresh_seconds, replay_poll_seconds, prune_every_seconds > 0")
        if inbox_retention_seconds < _MIN_INBOX_RETENTION_SECONDS:
            raise ValueError("inbox_retention_seconds: at least an hour (see EventConsumer)")
        self.database = database
        self.registry = registry
        self.group, self.topic = group, topic
        self.name = f"events-consumer:{group}"
        breaker_registry = breakers or BreakerRegistry(metrics=metrics)
        self.broker = guard_broker(broker, breaker_registry.get(f"broker:{broker.name}"))
        self.store = InboxStore(now=now)
        self.max_attempts = max_attempts
        self.backoff = (backoff_initial_seconds, backoff_max_seconds)
        self.batch, self.wait_seconds, self.drain_seconds = batch, wait_seconds, drain_seconds
        self.consumer_id = consumer_id or f"{group}-{uuid.uuid4().hex[:12]}"
        self.lag_warn = lag_warn
        self.inbox_retention = timedelta(seconds=inbox_retention_seconds)
        self.prune_chunk = prune_chunk
        self.lag: int | None = None
        """The group's lag at the last refresh (None: not read yet, or the broker cannot tell)."""
        self._periods = {
            "replay": replay_poll_seconds,
            "lag": lag_refresh_seconds,
            "prune": prune_every_seconds,
        }
        self._due = dict.fromkeys(self._periods, 0.0)
        self._now = now
        self._handlers: dict[str, ConsumerHandler] = {}
        for event_type, handler in (handlers or {}).items():
            self.on(event_type, handler)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        """The loop's task, kept while it drains (``_task`` is cleared when the stop begins)."""
        self._last_error: str | None = None
        m = metrics or Metrics()
        self._outcomes = m.counter(
            "events_consumed_total", "Deliveries by consumer group and outcome.",
            ["group", "outcome"],
        )  # fmt: skip
        self._seconds = m.histogram(
            "events_consumer_handler_seconds", "Time of one consumer handler call.", ["group"]
        )
        self._dead = m.counter(
            "events_dead_letters_total", "Deliveries sent to the dead letters.", ["group"]
        )
        self._replays = m.counter(
            "events_dead_letters_replayed_total", "Dead letters replayed, by outcome.",
            ["group", "outcome"],
        )  # fmt: skip
        self._lag_gauge = m.gauge(
            "events_consumer_lag", "Messages the broker has not handed to the group yet.", ["group"]
        )
        self._pruned = m.counter(
            "events_inbox_pruned_total", "Inbox rows deleted after the retention.", ["group"]
        )

    def on(self, event_type: str, handler: ConsumerHandler) -> None:
        """Handle ``event_type`` with ``handler`` (one handler per type per consumer)."""
        self.registry.get(event_type)
        if event_type in self._handlers:
            raise ValueError(f"{self.group} already handles {event_type!r}")
        self._handlers[event_type] = handler

    # -- the component -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Declare the group in the broker, then start the loop.

        Once this returns the group exists (if the broker answered), so every event
        published after it reaches the group: a RabbitMQ queue holds only what was
        published after it was declared, and the loop's first pass comes only after its
        housekeeping. A broker that does not answer is logged; the loop declares the
        group when it comes back.
        """
        if self.running:
            return
        try:
            await self.broker.ensure_group(self.topic, self.group)
        except Exception as error:  # noqa: BLE001 - as in the loop: the broker may come back
            log.warning("events consumer group not declared at start", group=self.group,
                        error=repr(error))  # fmt: skip
        self._start_loop()

    def _start_loop(self) -> None:
        if self.running:  # a concurrent start got here first
            return
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name=f"corestone-{self.name}")
        self._loop_task = self._task

    async def aclose(self) -> None:
        """Finish the delivery in hand (up to ``drain_seconds``), then stop. Idempotent.

        Deliveries fetched and not handled are redelivered once the broker's ack wait ends.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait([task], timeout=self.drain_seconds)
        finally:
            # Not ``suppress(CancelledError): await task``: a stop cancelled meanwhile (the
            # runtime's stop timeout) was swallowed, and this returned while the loop still
            # unwound, touching the database the runtime closes next.
            await cancel_and_wait(task, self.name)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            await self._housekeeping()
            try:
                await self.run_once()
            except Exception as error:  # noqa: BLE001 - the broker or database may come back
                self._last_error = repr(error)[:200]
                pause = self.wait_seconds
                if isinstance(error, CircuitOpenError) and error.retry_after:
                    pause = max(pause, min(error.retry_after, 30.0))
                log.warning("events consumer pass failed", group=self.group, error=repr(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)
            else:
                self._last_error = None

    async def _housekeeping(self) -> None:
        """Whatever of replay, lag and pruning is due; a failure is logged, never fatal."""
        jobs: dict[str, Callable[[], Awaitable[object]]] = {
            "replay": self.replay_requested,
            "lag": self.refresh_lag,
            "prune": self.prune_inbox,
        }
        for name, job in jobs.items():
            now = time.monotonic()
            if self._stop.is_set() or now < self._due[name]:
                continue
            self._due[name] = now + self._periods[name]
            try:
                await job()
            except Exception as error:  # noqa: BLE001 - the broker or database may come back
                log.warning("events consumer housekeeping failed", group=self.group, job=name,
                            error=repr(error))  # fmt: skip

    def _in_loop(self) -> bool:
        return asyncio.current_task() is self._loop_task

    async def _until_stopped(self, fetch: Awaitable[Sequence[Delivery]]) -> Sequence[Delivery]:
        """The loop's fetch, given up when a stop begins while it waits for deliveries.

        An idle consumer would otherwise hold every shutdown for its whole fetch wait.
        What a broker handed out during a fetch given up comes back after its ack wait.
        """
        fetching = asyncio.ensure_future(fetch)
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            fetching.cancel()
            raise
        finally:
            stopping.cancel()
        if fetching.done():
            return fetching.result()
        await cancel_and_wait(fetching, self.name)
        return []

    def _stopping(self) -> bool:
        """The loop is stopping and this is its own pass: leave the rest for later.

        (A call from outside the loop, e.g. ``run_once`` in a test, always runs whole.)
        """
        return self._stop.is_set() and asyncio.current_task() is self._loop_task

    async def check(self) -> CheckResult:
        """Health: warn while the last pass failed (broker or database away), the loop
        ended, or the group's lag (at the last refresh) is above ``lag_warn``."""
        if self._task is not None and self._task.done():
            return CheckResult(HealthStatus.WARN, output="the consumer stopped")
        if self._last_error is not None:
            return CheckResult(HealthStatus.WARN, output=f"last pass: {self._last_error}")
        if self.lag is not None and self.lag > self.lag_warn:
            return CheckResult(
                HealthStatus.WARN, self.lag, "messages",
                output=f"{self.group} is {self.lag} messages behind (warns above {self.lag_warn})",
            )  # fmt: skip
        return CheckResult(HealthStatus.PASS, self.lag, None if self.lag is None else "messages")

    async def refresh_lag(self) -> int | None:
        """Read the group's lag from the broker into :attr:`lag` and the gauge.

        The running consumer calls it every ``lag_refresh_seconds``. None (the broker
        cannot tell) leaves the gauge as it was.
        """
        broker = self.broker
        lag = await broker.lag(self.topic, self.group) if isinstance(broker, LagBroker) else None
        self.lag = lag
        if lag is not None:
            self._lag_gauge.labels(group=self.group).set(lag)
        return lag

    async def prune_inbox(self) -> int:
        """Delete this group's inbox rows older than the retention, in chunks; how many.

        Each chunk (``prune_chunk`` rows) is its own transaction. The running consumer
        calls it every ``prune_every_seconds``.
        """
        before = self._now() - self.inbox_retention
        total = 0
        while not self._stopping():
            pruned = await self.database.run_in_transaction(
                lambda tx: self.store.prune(
                    tx.session, self.group, before=before, limit=self.prune_chunk
                )
            )
            total += pruned
            self._pruned.labels(group=self.group).inc(pruned)
            if pruned < self.prune_chunk:
                break
        if total:
            log.info("inbox pruned", group=self.group, rows=total)
        return total

    # -- deliveries ----------------------------------------------------------------------

    async def run_once(self, *, wait_seconds: float | None = None) -> int:
        """Fetch one batch (waiting up to ``wait_seconds``) and handle it; return its size."""
        await self.broker.ensure_group(self.topic, self.group)
        fetch = self.broker.fetch(
            self.topic,
            self.group,
            consumer=self.consumer_id,
            limit=self.batch,
            wait_seconds=self.wait_seconds if wait_seconds is None else wait_seconds,
        )
        deliveries = await (self._until_stopped(fetch) if self._in_loop() else fetch)
        await self.handle_batch(deliveries)
        return len(deliveries)

    async def handle(self, delivery: Delivery) -> Handled:
        """Handle one delivery end to end (decode, inbox, handler, ack / nak / dead letter)."""
        return (await self.handle_batch([delivery]))[0]

    async def handle_batch(self, deliveries: Sequence[Delivery]) -> list[Handled]:
        """Handle a fetch's deliveries, in order, their handlers in one transaction.

        Each handler runs in a savepoint of its own (:mod:`corestone.events._batch`).
        Returns the outcomes of the deliveries handled; a stopping loop leaves the rest
        for the broker to deliver again.
        """
        outcomes: dict[int, Handled] = {}
        batch: dict[int, BatchItem] = {}
        for index, delivery in enumerate(deliveries):
            if self._stopping():
                break  # shutting down: the rest are redelivered after the ack wait
            try:
                event = self.registry.decode(delivery.body)
                if str(event.id) != delivery.id:
                    raise InvalidInputError(
                        "the message id is not the event's id", field="id", rule="matches"
                    )
            except InvalidInputError as error:
                reason = f"{error.code}: {error.message}"
                outcomes[index] = await self._dead_letter(delivery, None, reason)
                continue
            handler = self._handlers.get(event.type)
            if handler is None:
                await self.broker.ack(delivery)
                outcomes[index] = self._count("skipped")
            else:
                batch[index] = BatchItem(delivery, event, handler)
        await apply_batch(self.database, self._apply, list(batch.values()), stopping=self._stopping)
        for index, item in batch.items():
            if item.reached:
                outcomes[index] = await self._settle(item)
        return [outcomes[index] for index in sorted(outcomes)]

    async def _settle(self, item: BatchItem) -> Handled:
        """Ack, nak or dead-letter one applied delivery, after its batch's transaction."""
        delivery = item.delivery
        self._seconds.labels(group=self.group).observe(item.seconds)
        if item.error is None:
            await self.broker.ack(delivery)
            return self._count("handled" if item.applied else "duplicate")
        if delivery.attempt >= self.max_attempts:
            reason = f"failed {delivery.attempt} times; last: {item.error!r}"
            return await self._dead_letter(delivery, item.event.type, reason)
        log.info("event handler failed; retrying", group=self.group, event_id=delivery.id,
                 attempt=delivery.attempt, error=repr(item.error))  # fmt: skip
        await self.broker.nak(delivery, delay_seconds=self._delay(delivery.attempt))
        return self._count("retried")

    async def _apply(self, tx: Transaction, event: DomainEvent, handler: ConsumerHandler) -> bool:
        if not await self.store.claim(tx.session, self.group, str(event.id)):
            return False
        # The handler acts for the event's workspace, actor and correlation id, not for
        # whatever the consumer's task inherited: its emails and follow-up events
        # default to the context's values.
        with context.bind(
            workspace=event.workspace_id, actor=event.actor, correlation=event.correlation_id
        ):
            await handler(event, tx)
        return True

    async def _dead_letter(self, delivery: Delivery, type_: str | None, reason: str) -> Handled:
        log.warning("event dead-lettered", group=self.group, event_id=delivery.id[:64],
                    reason=reason[:300])  # fmt: skip
        await self.database.run_in_transaction(
            lambda tx: self.store.dead_letter(
                tx.session,
                consumer=self.group,
                event_id=delivery.id,
                type_=type_,
                body=delivery.body,
                reason=reason,
                attempts=delivery.attempt,
                max_body_bytes=self.registry.max_event_bytes,
            )
        )
        await self.broker.ack(delivery)
        self._dead.labels(group=self.group).inc()
        return self._count("dead_lettered")

    def _delay(self, attempt: int) -> float:
        initial, cap = self.backoff
        return float(min(cap, initial * 2 ** min(attempt - 1, 30))) * random.uniform(0.5, 1.0)  # noqa: S311

    def _count(self, outcome: Handled) -> Handled:
        self._outcomes.labels(group=self.group, outcome=outcome).inc()
        return outcome
