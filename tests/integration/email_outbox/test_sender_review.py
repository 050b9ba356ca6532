"""The sender under attack: cancellation between awaits, a refused idempotent provider."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update

from corestone.db import Database
from corestone.email.outbox import OutboxStore
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.metrics import Metrics
from corestone.resilience import BreakerConfig, BreakerRegistry, State
from corestone.testing.clock import ManualClock

from .conftest import OUTBOX, Time, history, make_sender, queue, row
from .fakes import FakeProvider, deliveries


async def test_a_round_cancelled_before_its_calls_start_gives_their_trial_permits_back(
    db: Database, time: Time
) -> None:
    """Cancelled between taking a half-open breaker's trial permits and starting the calls,
    the sender leaves the trials to the next caller (the breaker is not stuck half-open)."""
    clock = ManualClock()
    registry = BreakerRegistry(
        BreakerConfig(window_size=2, minimum_calls=2, wait_in_open_seconds=30.0,
                      permitted_calls_in_half_open=2),
        clock=clock,
    )  # fmt: skip
    alpha = FakeProvider("alpha")
    await queue(db, time, 2)
    sender = make_sender(db, [alpha], time, registry=registry)
    [slot] = sender.router.slots
    slot.breaker.transition_to(State.OPEN)
    clock.advance(31)  # the next permit moves it to HALF_OPEN with two trials
    store = OutboxStore(now=time.wall)
    async with db.transaction() as tx:
        claimed = await store.claim_due(
            tx.session, owner=sender.owner, limit=5, lease=timedelta(seconds=30),
            pg=db.dialect == "postgresql",
        )  # fmt: skip
    items = [item for item in map(sender._item, claimed) if not isinstance(item, str)]
    attempt = asyncio.create_task(sender._attempt(slot, items))
    await asyncio.sleep(0)  # the round has its permits and its calls are scheduled, not started
    attempt.cancel()
    await asyncio.gather(attempt, return_exceptions=True)
    assert alpha.calls == 0
    trials = [slot.breaker.permit() for _ in range(2)]  # raises CircuitOpenError if leaked
    assert (len(trials), slot.breaker.state) == (2, State.HALF_OPEN)


async def test_a_stale_row_whose_idempotent_provider_refuses_goes_back_to_the_queue(
    db: Database, time: Time
) -> None:
    """A crash-window row due again through its idempotent provider, whose breaker is open,
    is queued again (as the doc says) and goes out once through the next provider."""
    alpha, bravo = FakeProvider("alpha", idempotent=True), FakeProvider("bravo")
    [message_id] = await queue(db, time)
    store = OutboxStore(now=time.wall)
    async with db.transaction() as tx:
        [claimed] = await store.claim_due(
            tx.session, owner="dead", limit=5, lease=timedelta(seconds=30),
            pg=db.dialect == "postgresql",
        )  # fmt: skip
        await store.begin_attempt(
            tx.session, [claimed], owner="dead", provider="alpha", lease=timedelta(seconds=30)
        )
    sender = make_sender(db, [alpha, bravo], time)
    sender.router.slots[0].breaker.transition_to(State.FORCED_OPEN)
    time.advance(31)
    await sender.run_once()
    stored = await row(db, message_id)
    assert (stored.status, stored.lease_owner) == ("queued", None)
    assert [status for status, _, _ in await history(db, message_id)][-1] == "queued"
    time.advance(3600)
    await sender.run_once()
    assert (await row(db, message_id)).status == "sent"
    assert deliveries(alpha, bravo) == {message_id: 1}
    assert alpha.calls == 0


@dataclass
class _LosesItsLease(FakeProvider):
    """Accepts, but while it works another sender takes the row over (the lease ran out)."""

    db: Database | None = None

    async def send(self, outgoing: Outgoing) -> Sent:
        assert self.db is not None
        async with self.db.transaction() as tx:
            await tx.session.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == outgoing.message_id)
                .values(lease_owner="other", fencing_token=OUTBOX.c.fencing_token + 1)
            )
        return await super().send(outgoing)


async def test_a_row_lost_during_the_call_is_neither_counted_nor_retried(
    db: Database, time: Time
) -> None:
    """The record after a call is fenced; what it did not write (another sender holds the
    row now) used to be counted as sent (and a retryable error retried) all the same."""
    metrics = Metrics()
    [message_id] = await queue(db, time)
    provider = _LosesItsLease("alpha", db=db)
    sender = make_sender(db, [provider], time, metrics=metrics)
    await sender.run_once()
    labels = {"provider": "alpha", "outcome": "sent"}
    assert metrics.registry.get_sample_value("corestone_email_messages_total", labels) is None
    stored = await row(db, message_id)
    assert (stored.status, stored.lease_owner) == ("sending", "other")
    provider.fail_next.append(EmailProviderError("alpha", "503", retryable=True))
    [second] = await queue(db, time)
    await sender.run_once()
    retried = {"provider": "alpha", "outcome": "retried"}
    assert metrics.registry.get_sample_value("corestone_email_messages_total", retried) is None
    assert (await row(db, second)).lease_owner == "other"
