"""EmailSender on SQLite and PostgreSQL: failover, breakers, retries, backoff, fencing, health."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from corestone import Infrastructure, Settings
from corestone.db import Database
from corestone.email import EmailService, ProviderRoute, SuppressionReason, add_email
from corestone.email.outbox import OutboxStore
from corestone.email.routing import Router
from corestone.errors import EmailProviderError
from corestone.observability.health import HealthStatus
from corestone.observability.metrics import Metrics
from corestone.resilience import BreakerRegistry, State

from .conftest import (
    EVENTS,
    Time,
    breakers,
    create_tables,
    history,
    make_sender,
    message,
    queue,
    row,
    statuses,
)
from .fakes import FakeProvider, deliveries


def count(metrics: Metrics, provider: str, outcome: str) -> float:
    labels = {"provider": provider, "outcome": outcome}
    return metrics.registry.get_sample_value("corestone_email_messages_total", labels) or 0.0


async def test_a_queued_message_is_sent_once_and_its_history_recorded(
    db: Database, time: Time, metrics: Metrics
) -> None:
    """queued -> sending (provider) -> sent, with the provider's message id and the counters."""
    provider = FakeProvider("alpha")
    [message_id] = await queue(db, time)
    sender = make_sender(db, [provider], time, metrics=metrics)
    assert await sender.run_once() == 1
    stored = await row(db, message_id)
    assert (stored.status, stored.provider, stored.provider_message_id) == (
        "sent",
        "alpha",
        "alpha-1",
    )
    assert (stored.attempts, stored.lease_owner, stored.last_error) == (1, None, None)
    assert await history(db, message_id) == [
        ("queued", None, None), ("sending", "alpha", None), ("sent", "alpha", None),
    ]  # fmt: skip
    # No key of its own: the provider sees the outbox id, the same on every attempt.
    assert provider.delivered[0].message.idempotency_key == message_id
    assert count(metrics, "alpha", "sent") == 1
    assert await sender.run_once() == 0
    assert provider.calls == 1


async def test_first_provider_down_second_takes_over_and_first_breaker_opens(
    db: Database, time: Time, metrics: Metrics
) -> None:
    """alpha fails retryably: after its tries bravo delivers; alpha's breaker opens, is skipped."""
    alpha, bravo = FakeProvider("alpha", down=True), FakeProvider("bravo")
    registry = breakers(time)
    ids = await queue(db, time, 2)
    sender = make_sender(db, [alpha, bravo], time, metrics=metrics, registry=registry)
    await sender.run_once()
    assert await statuses(db) == dict.fromkeys(ids, "sent")
    assert deliveries(alpha, bravo) == dict.fromkeys(ids, 1)
    assert registry.get("email.alpha").state is State.OPEN
    steps = [(status, provider) for status, provider, _ in await history(db, ids[0])]
    assert steps[-2:] == [("sending", "bravo"), ("sent", "bravo")]
    assert ("queued", "alpha") in steps
    assert count(metrics, "alpha", "retried") >= 2
    calls_while_open = alpha.calls
    [later] = await queue(db, time)
    await sender.run_once()
    assert alpha.calls == calls_while_open  # the open breaker refused without a call
    assert (await row(db, later)).provider == "bravo"


async def test_a_retryable_error_is_retried_on_the_same_provider_first(
    db: Database, time: Time, metrics: Metrics
) -> None:
    """One 429 from alpha: alpha is tried again (after a short wait) and delivers; bravo idle."""
    alpha = FakeProvider("alpha")
    alpha.fail_next.append(EmailProviderError("alpha", "429 slow down", retryable=True))
    bravo = FakeProvider("bravo")
    [message_id] = await queue(db, time)
    await make_sender(db, [alpha, bravo], time, metrics=metrics).run_once()
    stored = await row(db, message_id)
    assert (stored.status, stored.provider, stored.attempts) == ("sent", "alpha", 2)
    assert bravo.calls == 0
    assert await history(db, message_id) == [
        ("queued", None, None), ("sending", "alpha", None), ("queued", "alpha", "429 slow down"),
        ("sending", "alpha", None), ("sent", "alpha", None),
    ]  # fmt: skip
    assert count(metrics, "alpha", "retried") == 1


async def test_a_permanent_error_fails_the_message_with_the_reason(
    db: Database, time: Time, metrics: Metrics
) -> None:
    """A refused address ends the message failed; no failover, no breaker failure counted."""
    alpha = FakeProvider("alpha", refuse={"ada@example.com": "550 mailbox unavailable"})
    bravo = FakeProvider("bravo")
    registry = breakers(time)
    ids = await queue(db, time, 3)
    await make_sender(db, [alpha, bravo], time, metrics=metrics, registry=registry).run_once()
    for message_id in ids:
        stored = await row(db, message_id)
        assert (stored.status, stored.last_error) == ("failed", "550 mailbox unavailable")
        assert (await history(db, message_id))[-1] == (
            "failed", "alpha", "550 mailbox unavailable",
        )  # fmt: skip
    assert bravo.calls == 0
    assert registry.get("email.alpha").state is State.CLOSED
    assert count(metrics, "alpha", "failed") == 3


async def test_every_provider_down_then_back_delivers_every_message_exactly_once(
    db: Database, time: Time
) -> None:
    """Both down for a while: nothing fails or goes out; once one is back, each goes out once."""
    alpha = FakeProvider("alpha", down=True)
    bravo = FakeProvider("bravo", down=True, max_batch=5)
    ids = await queue(db, time, 12)
    sender = make_sender(db, [alpha, bravo], time, batch=5)
    for _ in range(6):  # a few rounds of outage, time moving past every backoff
        await sender.run_once()
        time.advance(120)
    assert deliveries(alpha, bravo) == {}
    assert set((await statuses(db)).values()) == {"queued"}
    bravo.down = False
    for _ in range(20):
        if set((await statuses(db)).values()) == {"sent"}:
            break
        await sender.run_once()
        time.advance(120)
    assert await statuses(db) == dict.fromkeys(ids, "sent")
    assert deliveries(alpha, bravo) == dict.fromkeys(ids, 1)
    alpha.down = False
    time.advance(120)
    assert await sender.run_once() == 0
    assert deliveries(alpha, bravo) == dict.fromkeys(ids, 1)


async def test_while_every_breaker_is_open_messages_wait_without_calls(
    db: Database, time: Time
) -> None:
    """Open breakers refuse at once: the message goes back to queued, due when one may retry."""
    alpha = FakeProvider("alpha")
    registry = breakers(time)
    registry.get("email.alpha").transition_to(State.OPEN)
    [message_id] = await queue(db, time)
    sender = make_sender(db, [alpha], time, registry=registry)
    await sender.run_once()
    stored = await row(db, message_id)
    assert (stored.status, stored.attempts, alpha.calls) == ("queued", 0, 0)
    assert stored.next_attempt_at > time.wall()
    time.advance(31)
    await sender.run_once()
    assert (await row(db, message_id)).status == "sent"


async def test_weighted_round_robin_follows_the_weights(db: Database, time: Time) -> None:
    """Weights 3 and 1: first choices a, a, b, a repeating; the sender splits 8 messages 6/2."""
    alpha, bravo = FakeProvider("alpha"), FakeProvider("bravo")
    routes = [ProviderRoute(alpha, weight=3), ProviderRoute(bravo, weight=1)]
    router = Router(routes, "weighted", BreakerRegistry())
    picks = [router.order() for _ in range(8)]
    assert [order[0].name for order in picks] == ["alpha", "alpha", "bravo", "alpha"] * 2
    assert all(len(order) == 2 for order in picks)
    await queue(db, time, 8)
    sender = make_sender(db, [], time)
    sender.router = Router(routes, "weighted", breakers(time))
    await sender.run_once()
    assert (len(alpha.delivered), len(bravo.delivered)) == (6, 2)


async def test_an_expired_sending_row_is_marked_unknown_and_not_sent_again(
    db: Database, time: Time, metrics: Metrics
) -> None:
    """A sender died during the call: another sender marks it unknown; no second copy."""
    alpha = FakeProvider("alpha")
    [message_id] = await queue(db, time)
    store = OutboxStore(now=time.wall)
    async with db.transaction() as tx:
        [claimed] = await store.claim_due(
            tx.session,
            owner="dead",
            limit=5,
            lease=timedelta(seconds=30),
            pg=db.dialect == "postgresql",
        )
        await store.begin_attempt(
            tx.session, [claimed], owner="dead", provider="alpha", lease=timedelta(seconds=30)
        )
    sender = make_sender(db, [alpha], time, metrics=metrics)
    assert await sender.run_once() == 0  # the lease still runs: nothing to do yet
    time.advance(31)
    await sender.run_once()
    stored = await row(db, message_id)
    assert (stored.status, alpha.calls) == ("unknown", 0)
    status, _, detail = (await history(db, message_id))[-1]
    assert status == "unknown"
    assert "may have been delivered" in str(detail)
    assert count(metrics, "alpha", "unknown") == 1
    time.advance(3600)
    await sender.run_once()
    assert alpha.calls == 0


async def test_an_expired_sending_row_goes_again_through_an_idempotent_provider(
    db: Database, time: Time
) -> None:
    """With a provider that dedupes by key, the cut-off message is resent there and sent once."""
    alpha = FakeProvider("alpha", idempotent=True)
    [message_id] = await queue(db, time)
    store = OutboxStore(now=time.wall)
    sender = make_sender(db, [alpha], time)
    async with db.transaction() as tx:
        [claimed] = await store.claim_due(
            tx.session,
            owner="dead",
            limit=5,
            lease=timedelta(seconds=30),
            pg=db.dialect == "postgresql",
        )
        await store.begin_attempt(
            tx.session, [claimed], owner="dead", provider="alpha", lease=timedelta(seconds=30)
        )
    item = sender._item(claimed)  # the call the dead sender made, accepted by the provider
    assert not isinstance(item, str)
    await alpha.send(item.outgoing)
    time.advance(31)
    await sender.run_once()
    stored = await row(db, message_id)
    assert (stored.status, stored.provider_message_id) == ("sent", "alpha-1")
    assert deliveries(alpha) == {message_id: 1}
    assert alpha.calls == 2


async def test_a_sender_that_lost_its_lease_can_write_nothing(db: Database, time: Time) -> None:
    """Once another sender re-claims an expired row, the first one's fenced writes match nothing."""
    await queue(db, time)
    store = OutboxStore(now=time.wall)
    pg = db.dialect == "postgresql"
    lease = timedelta(seconds=30)
    async with db.transaction() as tx:
        [mine] = await store.claim_due(tx.session, owner="one", limit=5, lease=lease, pg=pg)
    time.advance(31)
    async with db.transaction() as tx:
        [theirs] = await store.claim_due(tx.session, owner="two", limit=5, lease=lease, pg=pg)
    assert theirs.token == mine.token + 1
    async with db.transaction() as tx:
        assert (
            await store.begin_attempt(tx.session, [mine], owner="one", provider="a", lease=lease)
            == set()
        )
        assert await store.begin_attempt(
            tx.session, [theirs], owner="two", provider="a", lease=lease
        ) == {theirs.id}


async def test_an_address_suppressed_after_queueing_is_skipped_when_sending(
    db: Database, time: Time
) -> None:
    """A bounce recorded after the message was queued: the sender skips it and records why."""
    alpha = FakeProvider("alpha")
    [message_id] = await queue(db, time)
    await EmailService(db).suppress("ada@example.com", SuppressionReason.BOUNCE)
    await make_sender(db, [alpha], time).run_once()
    assert ((await row(db, message_id)).status, alpha.calls) == ("suppressed", 0)
    assert (await history(db, message_id))[-1] == (
        "suppressed", None, "every recipient is suppressed: ada@example.com",
    )  # fmt: skip


async def test_health_fails_without_providers_and_warns_on_an_old_backlog(
    db: Database, time: Time, metrics: Metrics
) -> None:
    """No provider: fail. A message waiting longer than the threshold: warn, gauges set."""
    assert (await make_sender(db, [], time).check()).status is HealthStatus.FAIL
    alpha = FakeProvider("alpha", down=True)
    sender = make_sender(db, [alpha], time, metrics=metrics, backlog_warn_seconds=600)
    await queue(db, time, 2)
    result = await sender.check()
    assert (result.status, result.observed_value) == (HealthStatus.PASS, 2)
    time.advance(601)
    result = await sender.check()
    assert result.status is HealthStatus.WARN
    assert metrics.registry.get_sample_value("corestone_email_outbox_backlog") == 2
    oldest = metrics.registry.get_sample_value("corestone_email_outbox_oldest_seconds")
    assert oldest is not None
    assert oldest > 600


async def test_the_component_delivers_what_the_service_queues(db: Database, time: Time) -> None:
    """Started as a component and woken by the service's commit, it sends; aclose stops it."""
    alpha = FakeProvider("alpha")
    sender = make_sender(db, [alpha], time, poll_seconds=30.0)
    service = EmailService(db, now=time.wall, on_queued=sender.wake)
    await sender.start()
    try:
        message_id = await service.send(message(subject="Component"))
        for _ in range(500):  # bounded; woken at commit, not after the 30 s poll
            if (await row(db, message_id)).status == "sent":
                break
            await asyncio.sleep(0.01)
        assert (await row(db, message_id)).status == "sent"
    finally:
        await sender.aclose()
    assert not sender.running


async def test_add_email_without_providers_registers_a_failing_check(database_url: str) -> None:
    """add_email with no route adds no sender, and its health check fails (not critical)."""
    infra = Infrastructure(Settings(database_url=database_url, env="test"))
    service = add_email(infra, [])
    assert isinstance(service, EmailService)
    assert [m.component.name for m in infra._managed] == ["database", "loop-lag", "cache"]
    report = await infra.health.ready()
    assert report.checks["email:responseTime"][0]["status"] == "fail"
    assert report.status is HealthStatus.WARN  # not critical: mail waits, the API stays up


async def test_with_max_age_a_message_no_provider_takes_fails_once_too_old(
    db: Database, time: Time, metrics: Metrics
) -> None:
    """max_age_seconds: a message still undelivered after that long ends failed, saying why."""
    alpha = FakeProvider("alpha", down=True)
    [message_id] = await queue(db, time)
    sender = make_sender(db, [alpha], time, metrics=metrics, max_age_seconds=3600)
    await sender.run_once()
    assert (await row(db, message_id)).status == "queued"
    time.advance(3601)
    await sender.run_once()
    stored = await row(db, message_id)
    assert (stored.status, stored.last_error) == ("failed", "gave up after 3600s in the outbox")
    assert (await history(db, message_id))[-1][0] == "failed"
    assert count(metrics, "none", "failed") == 1


async def test_batches_stay_within_the_provider_limit_and_the_rate_limit(
    db: Database, time: Time
) -> None:
    """max_batch 10 but 3 messages a second: no call carries more than the bucket holds."""
    alpha = FakeProvider("alpha", max_batch=10)
    ids = await queue(db, time, 7)
    sender = make_sender(db, [], time)
    sender.router = Router([ProviderRoute(alpha, max_per_second=3)], "failover", breakers(time))
    [slot] = sender.router.slots
    assert slot.limiter is not None
    await sender.run_once()
    assert sorted(alpha.batches) == [3, 3]  # and one message alone, through send()
    assert deliveries(alpha) == dict.fromkeys(ids, 1)


async def test_a_provider_that_gives_no_message_id_still_ends_sent(
    db: Database, time: Time
) -> None:
    """Sent(provider, None) (an SMTP server may give no id): sent, with no provider id stored."""
    alpha = FakeProvider("alpha", gives_ids=False, max_batch=5)
    ids = await queue(db, time, 3)
    await make_sender(db, [alpha], time).run_once()
    for message_id in ids:
        stored = await row(db, message_id)
        assert (stored.status, stored.provider_message_id) == ("sent", None)


async def test_add_email_runs_the_sender_as_a_component_of_the_infrastructure(
    database_url: str,
) -> None:
    """With a route, add_email's sender starts and stops with the infrastructure and delivers."""
    alpha = FakeProvider("alpha")
    infra = Infrastructure(Settings(database_url=database_url, env="test"))
    service = add_email(infra, [ProviderRoute(alpha)], poll_seconds=30.0)
    schema = Database(database_url)  # the application migrates before its sender's first pass
    await schema.start()
    await create_tables(schema)
    await schema.aclose()
    async with infra:
        message_id = await service.send(message())
        for _ in range(500):  # bounded; the commit wakes the sender
            if alpha.delivered:
                break
            await asyncio.sleep(0.01)
        assert alpha.ids() == [message_id]
        report = await infra.health.ready()
        assert report.checks["email-sender:responseTime"][0]["status"] == "pass"
    assert [m.component.name for m in infra._managed][-1] == "email-sender"


async def test_each_call_is_marked_just_before_it_and_recorded_just_after(
    db: Database, time: Time
) -> None:
    """With one call at a time, sending/sent alternate: no row waits marked while others go.

    A row marked ``sending`` long before its call could outlive its lease and be taken
    for a crashed call; a result recorded long after the call widens the crash window.
    """
    alpha = FakeProvider("alpha")
    await queue(db, time, 4)
    await make_sender(db, [alpha], time, concurrency=1).run_once()
    async with db.transaction(read_only=True) as tx:
        events = await tx.session.execute(
            select(EVENTS.c.status).where(EVENTS.c.status != "queued").order_by(EVENTS.c.id)
        )
        assert [e.status for e in events] == ["sending", "sent"] * 4


async def test_a_claim_takes_at_most_its_limit_and_another_claim_takes_the_next(
    db: Database, time: Time
) -> None:
    """Regression: on PostgreSQL ``id IN (… LIMIT n FOR UPDATE SKIP LOCKED)`` claimed every row."""
    ids = await queue(db, time, 25)
    store = OutboxStore(now=time.wall)
    pg = db.dialect == "postgresql"
    lease = timedelta(seconds=30)
    async with db.transaction() as tx:
        first = await store.claim_due(tx.session, owner="one", limit=10, lease=lease, pg=pg)
    async with db.transaction() as tx:
        second = await store.claim_due(tx.session, owner="two", limit=10, lease=lease, pg=pg)
    assert (len(first), len(second)) == (10, 10)
    assert not {r.id for r in first} & {r.id for r in second}
    assert {r.id for r in first} | {r.id for r in second} < set(ids)


async def test_a_sender_without_providers_leaves_the_outbox_alone(db: Database, time: Time) -> None:
    """No route: a pass claims nothing and changes nothing (it used to fail on an empty order)."""
    [message_id] = await queue(db, time)
    sender = make_sender(db, [], time)
    assert await sender.run_once() == 0
    stored = await row(db, message_id)
    assert (stored.status, stored.lease_owner, stored.fencing_token) == ("queued", None, 0)


async def test_a_recipient_suppressed_after_queueing_is_left_out_and_that_recorded(
    db: Database, time: Time
) -> None:
    """One of two recipients bounced since queueing: the other gets it; the attempt says so."""
    alpha = FakeProvider("alpha")
    [message_id] = await queue(db, time, to=["ada@example.com", "bob@example.com"])
    await EmailService(db).suppress("BOB@example.com", SuppressionReason.MANUAL)
    await make_sender(db, [alpha], time).run_once()
    assert (await row(db, message_id)).status == "sent"
    assert [a.email for a in alpha.delivered[0].message.recipients] == ["ada@example.com"]
    assert ("sending", "alpha", "suppressed recipients left out: bob@example.com") in (
        await history(db, message_id)
    )
