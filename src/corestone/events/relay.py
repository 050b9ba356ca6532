"""The outbox relay: publish what the outbox holds to the broker, in batches, then mark it sent.

Each pass (:meth:`OutboxRelay.run_once`) claims up to ``batch`` pending events (oldest
first, never one behind a held event of its aggregate: :mod:`corestone.events.outbox`),
publishes them in that order as one batch through the broker's circuit breaker, and
marks them sent. A failed publish gives them back with a growing backoff; a pass that
filled its batch goes again at once. Any number of relays may run against one database.

What happens on a crash: before the publish returns, nothing is marked, and the lease
expires (``lease_seconds``) so another pass publishes the batch again; between the
publish and the mark, the same, so the broker may receive those events twice (JetStream
and the memory broker drop the repeat by message id; consumers' inboxes absorb it
everywhere). An event is never marked sent before the broker has it.

Waking up: on PostgreSQL the relay LISTENs on :data:`~corestone.events.outbox.NOTIFY_CHANNEL`
(a recording transaction notifies at commit), so it starts a pass right after a commit
in any process; polling every ``poll_seconds`` is the fallback (and all SQLite has), and
:meth:`OutboxRelay.wake` starts one from this process. A LISTEN connection that drops (its
backend terminated, the server restarted) is noticed at once: the relay polls meanwhile,
health warns, and it LISTENs again with a backoff (``listen_retry_initial_seconds``
doubling to ``listen_retry_max_seconds``), then runs a pass for the commits it could not
hear. Sent rows older than ``retention_seconds`` are pruned every ``prune_every_seconds``.

Stopping (:meth:`OutboxRelay.aclose`) waits for the pass in progress up to
``drain_seconds`` and then cancels it. A pass cancelled while publishing gives its batch
back at once (the broker may have it: it is published again, consumers de-duplicate); one
cancelled while marking finishes the mark first, as its own task, since the broker has the
batch. Cancelled anywhere else, the batch is still leased and is taken again once the lease
expires: a claimed event is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from corestone.background import cancel_and_wait
from corestone.clock import Clock, monotonic
from corestone.db.database import Database
from corestone.db.models import utc_now
from corestone.events.brokers.base import Broker, OutgoingMessage
from corestone.events.brokers.guarded import guard_broker
from corestone.events.outbox import NOTIFY_CHANNEL, ClaimedEvent, OutboxStore
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.resilience.registry import BreakerRegistry

__all__ = ["DEFAULT_TOPIC", "OutboxRelay"]

log = get_logger(__name__)
T = TypeVar("T")

DEFAULT_TOPIC = "corestone.events"
"""The topic (stream, subject, exchange) events are published to unless told otherwise."""


class OutboxRelay:
    """Publish the outbox to a broker; a component (``start`` / ``aclose``).

    ``topic_for`` picks each event's topic from its type (one topic for all by default).
    ``lease_seconds`` must exceed the longest publish. Health warns when the oldest
    unpublished event is older than ``lag_warn_seconds``.
    """

    name = "events-relay"

    def __init__(
        self,
        database: Database,
        broker: Broker,
        *,
        breakers: BreakerRegistry | None = None,
        metrics: Metrics | None = None,
        topic_for: Callable[[str], str] = lambda _type: DEFAULT_TOPIC,
        batch: int = 500,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        retention_seconds: float = 7 * 24 * 3600.0,
        prune_every_seconds: float = 300.0,
        lag_warn_seconds: float = 60.0,
        listen: bool = True,
        listen_retry_initial_seconds: float = 0.5,
        listen_retry_max_seconds: float = 30.0,
        drain_seconds: float = 10.0,
        owner: str | None = None,
        on_sent: Callable[[int], None] | None = None,
        now: Callable[[], datetime] = utc_now,
        clock: Clock = monotonic,
    ) -> None:
        if batch < 1 or lease_seconds <= 0 or poll_seconds <= 0 or retention_seconds < 0:
            raise ValueError("batch >= 1, lease_seconds > 0, poll_seconds > 0, retention >= 0")
        self.database = database
        registry = breakers or BreakerRegistry(metrics=metrics)
        self.broker = guard_broker(broker, registry.get(f"broker:{broker.name}"))
        self.store = OutboxStore(now=now)
        self.topic_for = topic_for
        self.batch, self.lease = batch, timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.backoff = (backoff_initial_seconds, backoff_max_seconds)
        self.retention = timedelta(seconds=retention_seconds)
        self.prune_every, self.lag_warn = prune_every_seconds, lag_warn_seconds
        self.listen, self.drain_seconds = listen, drain_seconds
        self.listen_backoff = (listen_retry_initial_seconds, listen_retry_max_seconds)
        self.owner = owner or f"relay-{uuid.uuid4().hex[:16]}"
        self.now, self.clock = now, clock
        self.on_sent = on_sent
        """Called with how many events a pass marked sent, right after that commit: a
        live stream's feed (:mod:`corestone.push.wakes`) reads the new positions then."""
        self._next_prune = 0.0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._groups: list[tuple[str, str]] = []
        self._listener: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listen_lost = asyncio.Event()
        self._last_error: str | None = None
        m = metrics or Metrics()
        self._published = m.counter(
            "events_published_total", "Events the relay published to the broker."
        )
        self._failures = m.counter(
            "events_publish_failures_total", "Relay batches the broker did not take."
        )
        self._pruned = m.counter("events_outbox_pruned_total", "Sent outbox rows pruned.")
        self._batch_seconds = m.histogram(
            "events_publish_seconds", "Time of one relay batch: claim, publish and mark."
        )
        self._backlog = m.gauge("events_outbox_backlog", "Events waiting to be published.")
        self._lag = m.gauge(
            "events_outbox_lag_seconds", "Age of the oldest event waiting to be published."
        )
        self._listening = m.gauge(
            "events_relay_listening", "1 while the relay LISTENs for commits, else 0 (polling)."
        )

    # -- the component -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def listening(self) -> bool:
        """Whether a LISTEN connection is up (PostgreSQL); otherwise the relay only polls."""
        return self._listener is not None

    @property
    def _should_listen(self) -> bool:
        return self.listen and self.database.dialect == "postgresql"

    def wake(self) -> None:
        """Start a pass now instead of at the next poll (a commit that recorded events)."""
        self._wake.set()

    def declare_group(self, topic: str, group: str) -> None:
        """Have ``start`` create ``group`` on ``topic`` before the first publish.

        RabbitMQ gives a message only to the queues that exist when it is published: a
        group that is new on the first deploy would miss what the relay publishes before
        its consumer has started. ``add_events`` declares each consumer's group here.
        """
        self._groups.append((topic, group))

    async def start(self) -> None:
        """Declare the groups, listen for commits (PostgreSQL), run passes in the background."""
        if self.running:
            return
        self._stop = asyncio.Event()
        for topic, group in self._groups:
            try:
                await self.broker.ensure_group(topic, group)
            except Exception as error:  # noqa: BLE001 - the consumer declares it when back
                log.warning("events relay could not declare a group", group=group,
                            topic=topic, error=repr(error))  # fmt: skip
        if self._should_listen:
            await self._open_listener()
            self._listen_task = asyncio.create_task(
                self._keep_listening(), name="corestone-events-relay-listen"
            )
        self._task = asyncio.create_task(self._loop(), name="corestone-events-relay")

    async def aclose(self) -> None:
        """Let the pass in progress finish (up to ``drain_seconds``), then stop. Idempotent.

        A pass cut off here gives its batch back if it was publishing, finishes its mark
        if it was marking, and otherwise leaves the batch leased: it is published again
        once the lease expires (see the module doc).
        """
        task, self._task = self._task, None
        listening, self._listen_task = self._listen_task, None
        try:
            if listening is not None:
                await cancel_and_wait(listening, "events-relay-listen")
            if task is not None:
                self._stop.set()
                self._wake.set()
                try:
                    await asyncio.wait([task], timeout=self.drain_seconds)
                finally:
                    # Waits for the pass to end even if this stop is cancelled meanwhile
                    # (then re-raised): ``suppress(CancelledError): await task`` swallowed
                    # that, returning while the pass still ran against the database.
                    await cancel_and_wait(task, self.name)
        finally:
            await self._close_listener()

    async def _open_listener(self) -> bool:
        """A pooled connection kept LISTENing; on any failure the relay polls instead.

        asyncpg calls the termination listener when the connection is lost (the server
        closed it or the socket failed), which wakes :meth:`_keep_listening`.
        """
        self._listen_lost = lost = asyncio.Event()
        connection = None
        try:
            connection = await self.database.engine.connect()
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            driver.add_termination_listener(lambda _connection: lost.set())
            await driver.add_listener(NOTIFY_CHANNEL, self._notified)
        except BaseException as error:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.invalidate()
            if not isinstance(error, Exception):
                raise  # cancelled (the relay is stopping)
            log.warning("events relay cannot listen; polling", error=repr(error))
            return False
        self._listener = connection
        self._listening.set(1)
        return True

    async def _keep_listening(self) -> None:
        """Wait for the LISTEN connection to drop; then LISTEN again, with a backoff."""
        initial, cap = self.listen_backoff
        failures = 0
        while True:
            if self._listener is not None:
                await self._listen_lost.wait()
                log.warning("events relay lost its LISTEN connection; polling until it is back")
                await self._close_listener(lost=True)
                failures = 0
            delay = min(cap, initial * 2 ** min(failures, 30)) * random.uniform(0.5, 1.0)  # noqa: S311
            await asyncio.sleep(delay)
            if await self._open_listener():
                log.info("events relay listens again")
                self._wake.set()  # commits made while it was deaf notified nobody
            else:
                failures += 1

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    async def _close_listener(self, *, lost: bool = False) -> None:
        """Stop listening; a ``lost`` connection is discarded, not returned to the pool."""
        connection, self._listener = self._listener, None
        self._listening.set(0)
        if connection is None:
            return
        if lost:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            return
        with contextlib.suppress(Exception):
            raw = await connection.get_raw_connection()
            await raw.driver_connection.remove_listener(NOTIFY_CHANNEL, self._notified)
        with contextlib.suppress(Exception):
            await connection.close()

    async def _loop(self) -> None:
        done = 0
        while not self._stop.is_set():
            if done < self.batch:  # a full batch: more may be waiting, go again at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                self._wake.clear()
                if self._stop.is_set():
                    return
            try:
                done = await self.run_once()
                if self.clock() >= self._next_prune:
                    self._next_prune = self.clock() + self.prune_every
                    await self.prune()
            except Exception as error:  # noqa: BLE001 - the database may be back next pass
                log.warning("events relay pass failed", error=repr(error))
                self._last_error, done = repr(error)[:200], 0
            else:
                self._last_error = None

    # -- one pass ------------------------------------------------------------------------

    async def _write(self, work: Callable[[Any], Awaitable[T]]) -> T:
        return await self.database.run_in_transaction(lambda tx: work(tx.session))

    async def run_once(self) -> int:
        """Claim, publish and mark one batch; return how many events it published."""
        started = time.perf_counter()
        claimed = await self._write(
            lambda s: self.store.claim(s, owner=self.owner, limit=self.batch, lease=self.lease)
        )
        if not claimed:
            return 0
        messages = [
            OutgoingMessage(
                id=row.id,
                topic=self.topic_for(row.type),
                body=row.body.encode(),
                key=row.aggregate,
                headers={"type": row.type},
            )
            for row in claimed
        ]
        try:
            await self.broker.publish(messages)
        except Exception as error:
            await self._give_back(claimed, error)
            raise
        except asyncio.CancelledError:
            # Stopped mid-publish: the broker may have the batch or not. Give it back now
            # rather than leave it leased for lease_seconds (a repeat is de-duplicated).
            await self._finish(self._release(claimed, 0.0, "the relay stopped while publishing"))
            raise
        # The broker has the batch: the mark runs to its end even if the relay is stopping.
        marked = await self._finish(
            self._write(lambda s: self.store.mark_sent(s, claimed, owner=self.owner))
        )
        if len(marked) < len(claimed):
            # Another relay took them over after our lease ran out: they were published
            # twice (as the crash window allows); consumers de-duplicate.
            log.warning("events relay lost its lease", lost=len(claimed) - len(marked))
        if marked and self.on_sent is not None:
            try:
                self.on_sent(len(marked))
            except Exception as error:  # noqa: BLE001 - a listener's bug never fails a pass
                log.warning("events relay on_sent failed", error=repr(error))
        self._published.inc(len(claimed))
        self._batch_seconds.observe(time.perf_counter() - started)
        return len(claimed)

    async def _finish(self, work: Awaitable[T]) -> T:
        """Await ``work`` as a task of its own; if this one is cancelled meanwhile, let it
        end (up to ``drain_seconds``) and then re-raise: a write cut off midway would
        leave its rows leased until the lease expires."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task], timeout=self.drain_seconds)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning(
                    "events relay write failed while stopping", error=repr(task.exception())
                )
            raise

    async def _give_back(self, claimed: list[ClaimedEvent], error: Exception) -> None:
        self._failures.inc()
        initial, cap = self.backoff
        attempts = min(row.attempts for row in claimed)
        delay = min(cap, initial * 2 ** min(attempts, 30)) * random.uniform(0.5, 1.0)  # noqa: S311
        log.warning("events relay publish failed", events=len(claimed), error=repr(error))
        await self._release(claimed, delay, repr(error))

    async def _release(self, claimed: list[ClaimedEvent], delay: float, error: str) -> None:
        await self._write(
            lambda s: self.store.release(
                s, claimed, owner=self.owner, delay=timedelta(seconds=delay), error=error
            )
        )

    async def prune(self, *, chunk: int = 1000) -> int:
        """Delete sent rows older than the retention, ``chunk`` rows per transaction."""
        total = 0
        while True:
            deleted = await self._write(
                lambda s: self.store.prune(s, older_than=self.retention, limit=chunk)
            )
            total += deleted
            if deleted < chunk:
                break
        if total:
            self._pruned.inc(total)
        return total

    async def check(self) -> CheckResult:
        """Health: warn when the oldest unpublished event is older than ``lag_warn_seconds``.

        Observed value: the backlog (events waiting). Also ``warn`` when the last pass
        failed (the broker or database is away), the loop ended while it should run, or
        (PostgreSQL) its LISTEN connection is down and it only polls until it is back.
        """
        size, lag = await self.refresh_stats()
        if self._task is not None and self._task.done():
            return CheckResult(HealthStatus.WARN, size, "events", output="the relay stopped")
        if lag > self.lag_warn:
            return CheckResult(
                HealthStatus.WARN, size, "events", output=f"the oldest event waited {lag:.0f}s"
            )
        if self._last_error is not None:
            output = f"last pass: {self._last_error}"
            return CheckResult(HealthStatus.WARN, size, "events", output=output)
        if self._should_listen and self.running and not self.listening:
            output = (
                f"not listening for commits (reconnecting); polling every {self.poll_seconds:g}s"
            )
            return CheckResult(HealthStatus.WARN, size, "events", output=output)
        return CheckResult(HealthStatus.PASS, size, "events")

    async def refresh_stats(self) -> tuple[int, float]:
        """Read the backlog and the oldest event's age into the gauges; return both."""
        async with self.database.transaction(read_only=True) as tx:
            size, oldest = await self.store.backlog(tx.session)
        lag = 0.0 if oldest is None else max(0.0, (self.now() - oldest).total_seconds())
        self._backlog.set(size)
        self._lag.set(lag)
        return size, lag
