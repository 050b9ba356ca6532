"""The sender: deliver what the outbox holds, once, through providers that fail.

Each pass (:meth:`EmailSender.run_once`):

1. resolves the crash window: ``sending`` rows whose lease expired (their sender died
   during a provider call, or after the provider accepted and before ``sent`` was
   written), looked for at most once a poll interval (a lease runs for a minute).
   Through a provider that says it is idempotent the message is sent again with the
   same id and key, which that provider delivers once; otherwise it becomes ``unknown``
   and waits for an operator: it is never sent again blindly.
2. claims due ``queued`` rows (leases, ``SKIP LOCKED`` on PostgreSQL) and delivers them:
   per provider in failover order (or weighted round-robin for the first choice), each
   call behind the provider's circuit breaker and rate limit. Before every call the
   rows are marked ``sending`` through that provider, fenced: a row this sender no
   longer holds is not sent. A retryable error is retried on the same provider after a
   short wait, then the next provider takes over; a permanent one ends the message
   ``failed`` with the reason. What no provider took goes back to ``queued`` with a
   growing backoff: with every provider down, messages wait for one to recover.

Every status change is also written to ``corestone_email_events``. The sender is a
component (``start`` / ``aclose``), or runs in a worker process; any number of senders
may share one database.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from corestone._extras import requires_extra
from corestone.background import PassLoop

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy.ext.asyncio import AsyncSession

from corestone.db.database import Database
from corestone.db.models import utc_now
from corestone.email._attempts import Attempt, Item, all_of
from corestone.email.message import EmailMessage
from corestone.email.outbox import Claimed, EmailStatus, OutboxStore, Outcome, clip_reason
from corestone.email.providers.base import Outgoing, Sent
from corestone.email.routing import ProviderRoute, Router, Slot, Strategy
from corestone.email.service import MESSAGES_METRIC, drop_recipients
from corestone.errors import CircuitOpenError, EmailProviderError, InvalidInputError
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.resilience.registry import BreakerRegistry

__all__ = ["EmailSender"]

log = get_logger(__name__)
T = TypeVar("T")


class EmailSender:
    """Deliver queued messages; a component. See the module doc for the guarantees.

    ``lease_seconds`` must exceed the longest provider call (each attempt renews it). A
    message no provider took is retried after ``backoff_initial_seconds``, doubling per
    round up to ``backoff_max_seconds``; with ``max_age_seconds`` it fails once it has
    waited that long (None: it waits until a provider takes it).
    """

    name = "email-sender"

    def __init__(
        self,
        database: Database,
        routes: Sequence[ProviderRoute],
        *,
        strategy: Strategy = "failover",
        breakers: BreakerRegistry | None = None,
        metrics: Metrics | None = None,
        batch: int = 100,
        concurrency: int = 10,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        tries_per_provider: int = 2,
        retry_wait_seconds: float = 0.5,
        max_retry_wait_seconds: float = 5.0,
        backoff_initial_seconds: float = 5.0,
        backoff_max_seconds: float = 300.0,
        max_age_seconds: float | None = None,
        backlog_warn_seconds: float = 900.0,
        drain_seconds: float = 10.0,
        owner: str | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if batch < 1 or concurrency < 1 or tries_per_provider < 1 or lease_seconds <= 0:
            raise ValueError("batch, concurrency and tries_per_provider >= 1; lease_seconds > 0")
        self.database = database
        self.router = Router(routes, strategy, breakers or BreakerRegistry(metrics=metrics))
        self.store = OutboxStore(now=now)
        self.now = now
        self.owner = owner or f"email-{uuid.uuid4().hex[:16]}"
        self.batch, self.lease = batch, timedelta(seconds=lease_seconds)
        self.poll_seconds, self.tries = poll_seconds, tries_per_provider
        self.retry_wait, self.max_retry_wait = retry_wait_seconds, max_retry_wait_seconds
        self.backoff = (backoff_initial_seconds, backoff_max_seconds)
        self.max_age, self.backlog_warn = max_age_seconds, backlog_warn_seconds
        self._gate = asyncio.Semaphore(concurrency)
        self._passes = PassLoop(
            self.name, self._pass, poll_seconds=poll_seconds, drain_seconds=drain_seconds
        )
        self._stale_due = datetime.min.replace(tzinfo=UTC)  # next look for stale rows
        self._stats_read = -float("inf")  # time.monotonic() of the gauges' last read
        metrics = metrics or Metrics()
        self._messages = metrics.counter(*MESSAGES_METRIC, ["provider", "outcome"])
        self._latency = metrics.histogram(
            "email_provider_seconds", "Time of one provider call.", ["provider"]
        )
        self._backlog = metrics.gauge("email_outbox_backlog", "Messages queued or sending.")
        self._oldest = metrics.gauge(
            "email_outbox_oldest_seconds", "Age of the oldest message waiting in the outbox."
        )

    # -- the component -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._passes.running

    def wake(self) -> None:
        """Start a pass now instead of at the next poll (the service calls it on commit)."""
        self._passes.wake()

    async def start(self) -> None:
        """Begin passes in the background, the first after ``poll_seconds`` or a wake."""
        self._passes.start()

    async def aclose(self) -> None:
        """Let the pass in progress finish (up to ``drain_seconds``), then stop. Idempotent.

        A pass cut off here leaves its rows leased: a row marked ``sending`` is resolved
        by the crash-window rule, any other is claimable again once its lease expires.
        """
        await self._passes.stop()

    async def _pass(self) -> bool:
        return await self.run_once() >= self.batch  # a full batch: more may be due

    async def check(self) -> CheckResult:
        """Health: fail with no provider; warn when the oldest waiting message is too old.

        Observed value: the backlog (messages queued or sending). Also ``warn`` when the
        last pass failed or the loop ended while it should run.
        """
        if not self.router.slots:
            return CheckResult(HealthStatus.FAIL, output="no email provider is configured")
        size, oldest_age = await self.refresh_stats()
        if self._passes.died:
            return CheckResult(HealthStatus.WARN, size, "messages", output="the sender stopped")
        if oldest_age > self.backlog_warn:
            output = f"the oldest message has waited {oldest_age:.0f}s"
            return CheckResult(HealthStatus.WARN, size, "messages", output=output)
        if self._passes.last_error is not None:
            output = f"last pass: {self._passes.last_error}"
            return CheckResult(HealthStatus.WARN, size, "messages", output=output)
        return CheckResult(HealthStatus.PASS, size, "messages")

    async def refresh_stats(self) -> tuple[int, float]:
        """Read the backlog and its oldest message's age into the gauges; return both."""
        self._stats_read = time.monotonic()
        async with self.database.transaction(read_only=True) as tx:
            size, oldest = await self.store.backlog(tx.session)
        age = 0.0 if oldest is None else max(0.0, (self.now() - oldest).total_seconds())
        self._backlog.set(size)
        self._oldest.set(age)
        return size, age

    # -- one pass ------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim expired ``sending`` rows and due messages; resolve the first, deliver the rest.

        Returns how many rows this pass handled (a full batch means: go again)."""
        if not self.router.slots:  # nothing to send through: leave every row as it is
            await self.refresh_stats()
            return 0
        pg = self.database.dialect == "postgresql"

        # A row goes stale only when a lease runs out (``lease_seconds``, a minute by
        # default): looking for them at most once a poll interval (and again at once after
        # a full batch of them) finds each in time, without a statement on every pass.
        now = self.now()
        look = now >= self._stale_due

        async def claim(session: AsyncSession) -> tuple[list[Claimed], list[Claimed]]:
            # Both claims in one transaction: one commit per pass, not two.
            owner, limit, lease = self.owner, self.batch, self.lease
            stale = (
                await self.store.claim_stale(session, owner=owner, limit=limit, lease=lease, pg=pg)
                if look
                else []
            )
            due = await self.store.claim_due(session, owner=owner, limit=limit, lease=lease, pg=pg)
            return stale, due

        stale, claimed = await self._write(claim)
        if look:
            more = len(stale) == self.batch
            self._stale_due = now if more else now + timedelta(seconds=self.poll_seconds)
        if stale:
            await self._resolve_stale(stale)
        if claimed:
            await self._deliver(claimed)
        done = len(stale) + len(claimed)
        # The gauges: a count over the backlog is not free (it grows with the backlog), so
        # a busy sender reads them at most once a poll interval; a pass that left nothing
        # due (the loop sleeps next) always reads them.
        if done < self.batch or time.monotonic() - self._stats_read >= self.poll_seconds:
            await self.refresh_stats()
        return done

    async def _write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return await self.database.run_in_transaction(lambda tx: work(tx.session))

    async def _resolve_stale(self, rows: list[Claimed]) -> None:
        """A ``sending`` row whose sender died: resend only where the provider dedupes."""
        again: dict[Slot, list[Item]] = {}
        unknown: list[Claimed] = []
        for row in rows:
            slot = self.router.by_name(row.provider)
            item = self._item(row)
            if slot is not None and slot.idempotent and isinstance(item, Item):
                again.setdefault(slot, []).append(item)
            else:
                unknown.append(row)
        if unknown:
            detail = (
                "the sender stopped during the provider call: it may have been delivered; "
                "not sent again (retry by hand once the provider's logs are checked)"
            )
            await self._write(
                lambda s: self.store.finish(
                    s, unknown, Outcome(EmailStatus.UNKNOWN, detail=detail), owner=self.owner
                )
            )
            for row in unknown:
                self._count(row.provider or "none", "unknown")
                log.warning("email delivery outcome unknown", message_id=row.id)
        for slot, items in again.items():
            # ``queued`` first (the lease kept): what the provider's breaker refuses or
            # what fails goes back to the queue like any message, instead of staying
            # ``sending`` (which only a lease expiry could move, to come back here).
            requeued = Outcome(
                EmailStatus.QUEUED,
                slot.name,
                "the sender stopped during the provider call; "
                f"sent again through {slot.name}, which delivers a repeat once",
            )
            held = await self._write(partial(
                self.store.finish, rows=[i.row for i in items], outcome=requeued,
                owner=self.owner, release=False,
            ))  # fmt: skip
            await self._through((slot,), [item for item in items if item.id in held])

    def _item(self, row: Claimed) -> Item | str:
        """The row as a provider call, or why it cannot be one (a stored message gone bad)."""
        try:
            message = EmailMessage.from_dict(row.message)
        except (InvalidInputError, KeyError, TypeError, ValueError) as error:
            return f"the stored message is not valid: {error!r}"
        # The key providers see: the message's own, else its outbox id; the same on
        # every attempt, so a provider that dedupes by key delivers a repeat once.
        if not message.idempotency_key:  # (a copy costs ~12 µs: made only when it differs)
            message = replace(message, idempotency_key=row.id)
        return Item(row, Outgoing(row.id, message))

    async def _deliver(self, claimed: list[Claimed]) -> None:
        items: list[Item] = []
        broken: dict[str, str] = {}
        for row in claimed:
            item = self._item(row)
            if isinstance(item, Item):
                items.append(item)
            else:
                broken[row.id] = item
        async with self.database.transaction(read_only=True) as tx:
            emails = {a.email for i in items for a in i.outgoing.message.recipients}
            suppressed = await self.store.suppressed_among(tx.session, emails)
        skipped: dict[str, str] = {}
        kept: list[Item] = []
        for item in items:
            message = item.outgoing.message
            mine = sorted({a.email.lower() for a in message.recipients} & suppressed)
            reduced = drop_recipients(message, suppressed)
            if reduced is None:
                skipped[item.id] = "every recipient is suppressed: " + ", ".join(mine)
            elif mine:  # suppressed since it was queued: left out, and said so on the attempt
                note = "suppressed recipients left out: " + ", ".join(mine)
                kept.append(Item(item.row, Outgoing(item.id, reduced), note))
            else:
                kept.append(item)
        await self._end_early(claimed, broken, skipped)
        groups: dict[tuple[Slot, ...], list[Item]] = {}
        for item in kept:
            groups.setdefault(self.router.order(), []).append(item)
        await all_of(self._through(order, group) for order, group in groups.items())

    async def _end_early(
        self, claimed: list[Claimed], broken: dict[str, str], skipped: dict[str, str]
    ) -> None:
        """Fail rows whose message cannot be read; mark those every recipient of is suppressed."""
        if not broken and not skipped:
            return
        failed = [row for row in claimed if row.id in broken]
        suppressed = [row for row in claimed if row.id in skipped]

        async def write(session: AsyncSession) -> None:
            await self.store.finish(
                session, failed, Outcome(EmailStatus.FAILED), owner=self.owner,
                per_row={"last_error": broken}, details=broken,
            )  # fmt: skip
            await self.store.finish(
                session, suppressed, Outcome(EmailStatus.SUPPRESSED), owner=self.owner,
                details=skipped,
            )  # fmt: skip

        await self._write(write)
        for _ in failed:
            self._count("none", "failed")
        for _ in suppressed:
            self._count("none", "suppressed")

    # -- through the providers ---------------------------------------------------------

    async def _through(self, order: tuple[Slot, ...], items: list[Item]) -> None:
        """Try ``items`` on each provider of ``order`` in turn; reschedule what is left."""
        todo, waits, called = items, [0.0], False
        for slot in order:
            if not todo:
                return
            left: list[Item] = []  # for the next provider
            current = todo
            for attempt in range(self.tries):
                result = await self._attempt(slot, current)
                called = called or result.called
                left += result.skipped
                waits.append(result.wait)
                if not result.retry:
                    break
                wait = max(result.wait, self.retry_wait * 2**attempt)
                if attempt + 1 == self.tries or wait > self.max_retry_wait:
                    left += result.retry
                    break
                await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                current = result.retry
            todo = left
        if not todo:
            return
        if not called:
            # Every breaker refused: come back when the first may let a trial through
            # (not sooner than a poll: a half-open breaker out of trials says 0).
            waits.append(max(self.poll_seconds, min(s.breaker.retry_after() for s in order)))
        await self._reschedule(todo, max(waits), called)

    async def _attempt(self, slot: Slot, items: list[Item]) -> Attempt:
        """One call per chunk through ``slot``; chunks its breaker refuses are skipped."""
        chunks = (items[start : start + slot.chunk] for start in range(0, len(items), slot.chunk))
        done = await all_of(self._chunk(slot, chunk) for chunk in chunks)
        return Attempt(
            [item for d in done for item in d.retry],
            [item for d in done for item in d.skipped],
            max((d.wait for d in done), default=0.0),
            called=any(d.called for d in done),
        )

    async def _chunk(self, slot: Slot, chunk: list[Item]) -> Attempt:
        """Permit, mark, call, record: the mark right before the call, the record right after.

        Marking each chunk only once it has its turn (concurrency, rate limit) keeps the
        lease covering one call, and recording at once keeps the crash window (accepted,
        not yet ``sent``) as short as one write. The permit is taken here, in the chunk's
        own task, and given back in its ``except``: a permit taken for a task that is
        cancelled before it starts would run no handler, and a half-open breaker would
        wait forever for that trial.
        """
        try:
            permit = slot.breaker.permit()
        except CircuitOpenError:
            return Attempt([], chunk)
        notes = {i.id: i.note for i in chunk if i.note}
        rows = [item.row for item in chunk]
        calling = False
        try:
            async with self._gate:
                if slot.limiter is not None:
                    await slot.limiter.acquire(len(chunk))
                held = await self._write(
                    lambda s: self.store.begin_attempt(
                        s,
                        rows,
                        owner=self.owner,
                        provider=slot.name,
                        lease=self.lease,
                        details=notes,
                    )
                )
                live = [item for item in chunk if item.id in held]
                if not live:  # every row lost to another sender (or an operator): no call
                    slot.breaker.release(permit)
                    return Attempt([], [])
                calling = True  # from here on the call gives the permit back or records it
                outcomes = await self._call(slot, permit, live)
                return await self._record(slot, outcomes)
        except BaseException:
            if not calling:
                slot.breaker.release(permit)
            raise

    async def _call(
        self, slot: Slot, permit: int, chunk: list[Item]
    ) -> list[tuple[Item, Sent | EmailProviderError]]:
        """Call the provider for ``chunk``; every failure comes back as an EmailProviderError."""
        started = time.perf_counter()
        results: Sequence[Sent | EmailProviderError]
        try:
            if len(chunk) == 1:
                results = [await slot.provider.send(chunk[0].outgoing)]
            else:
                results = await slot.provider.send_batch([i.outgoing for i in chunk])
            if len(results) != len(chunk):
                reason = f"returned {len(results)} outcomes for {len(chunk)} messages"
                raise EmailProviderError(slot.name, reason, retryable=True)
        except EmailProviderError as error:
            results = [error] * len(chunk)
        except Exception as error:  # noqa: BLE001 - a provider bug must not stop the sender
            unexpected = EmailProviderError(slot.name, f"unexpected {error!r}", retryable=True)
            results = [unexpected] * len(chunk)
        except BaseException:  # cancelled (shutdown): the call counts for nothing
            slot.breaker.release(permit)
            raise
        seconds = time.perf_counter() - started
        # Only a provider that did not do its job counts against its breaker: a permanent
        # refusal (a bad address) is a working provider's answer.
        down = all(isinstance(r, EmailProviderError) and r.retryable for r in results)
        slot.breaker.record_outcome(permit, seconds, failed=down)
        self._latency.labels(provider=slot.name).observe(seconds)
        return list(zip(chunk, results, strict=True))

    async def _record(
        self, slot: Slot, outcomes: list[tuple[Item, Sent | EmailProviderError]]
    ) -> Attempt:
        sent = {i.id: r for i, r in outcomes if isinstance(r, Sent)}
        errors = {i.id: r for i, r in outcomes if isinstance(r, EmailProviderError)}
        failed = {key: e for key, e in errors.items() if not e.retryable}
        retry = [i for i, r in outcomes if isinstance(r, EmailProviderError) and r.retryable]
        rows = {i.id: i.row for i, _ in outcomes}
        reasons = {key: clip_reason(e.reason) for key, e in errors.items()}
        # Clipped like tracking clips the ids it looks up: an overlong one failed the write.
        ids = {k: s.provider_message_id and s.provider_message_id[:255] for k, s in sent.items()}

        async def write(session: AsyncSession) -> list[set[str]]:
            return [
                await self.store.finish(
                    session, [rows[k] for k in sent],
                    Outcome(EmailStatus.SENT, slot.name, values={"last_error": None}),
                    owner=self.owner, per_row={"provider_message_id": ids},
                ),
                await self.store.finish(
                    session, [rows[k] for k in failed], Outcome(EmailStatus.FAILED, slot.name),
                    owner=self.owner, per_row={"last_error": reasons}, details=reasons,
                ),
                await self.store.finish(
                    session, [i.row for i in retry], Outcome(EmailStatus.QUEUED, slot.name),
                    owner=self.owner, per_row={"last_error": reasons}, details=reasons,
                    release=False,
                ),
            ]  # fmt: skip

        # A row this sender no longer held (its lease ran out) is not counted or retried.
        was_sent, was_failed, requeued = await self._write(write)
        retry = [i for i in retry if i.id in requeued]
        for outcome, rows_written in (("sent", was_sent), ("failed", was_failed)):
            self._count(slot.name, outcome, len(rows_written))
        self._count(slot.name, "retried", len(retry))
        wait = max((errors[i.id].retry_after or 0.0 for i in retry), default=0.0)
        return Attempt(retry, [], wait, called=True)

    async def _reschedule(self, items: list[Item], wait: float, called: bool) -> None:
        """Give back what no provider took, due again after a backoff (or fail it, if too old)."""
        now = self.now()
        initial, cap = self.backoff
        due: dict[str, datetime] = {}
        expired: list[Claimed] = []
        providers = max(1, len(self.router.slots))
        for item in items:
            row = item.row
            if self.max_age is not None and (now - row.created_at).total_seconds() > self.max_age:
                expired.append(row)
                continue
            rounds = row.attempts // providers
            backoff = min(cap, initial * 2 ** min(rounds, 30)) if called else 0.0
            seconds = max(backoff, wait) * random.uniform(0.75, 1.0)  # noqa: S311 - jitter
            due[row.id] = now + timedelta(seconds=max(seconds, 0.0))
        rows = [item.row for item in items if item.id in due]
        gave_up = f"gave up after {self.max_age}s in the outbox"

        async def write(session: AsyncSession) -> None:
            await self.store.release(session, rows, owner=self.owner, at=due)
            outcome = Outcome(EmailStatus.FAILED, detail=gave_up, values={"last_error": gave_up})
            await self.store.finish(session, expired, outcome, owner=self.owner)

        await self._write(write)
        for _ in expired:
            self._count("none", "failed")

    def _count(self, provider: str, outcome: str, messages: int = 1) -> None:
        if messages:  # a label set is only made for outcomes that happened
            self._messages.labels(provider=provider, outcome=outcome).inc(messages)
