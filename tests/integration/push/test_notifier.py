"""The Notifier, on each database: channels by preference, email in the caller's
transaction, Web Push to the local push service after commit, nothing on rollback or
for a notification made before, and pushes in flight at shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from corestone.db import Database
from corestone.email import EmailService
from corestone.email.message import EmailMessage
from corestone.email.tables import EmailOutboxRecord
from corestone.observability.metrics import Metrics
from corestone.push import (
    Channels,
    EndpointPolicy,
    Notice,
    NotificationFeed,
    Notifier,
    PreferenceStore,
    SubscriptionStore,
    VapidKeys,
    WebPushSender,
)
from corestone.push.notifications import NotificationRecord
from corestone.push.preferences import PreferenceRecord
from corestone.push.subscriptions import PushSubscriptionRecord
from tests.integration.push.push_service import PushService
from tests.integration.push.test_notifications import create_tables

KINDS = {"task.assigned": Channels(in_app=True, email=True, push=True)}
TABLES = (
    NotificationRecord.__tablename__,
    PreferenceRecord.__tablename__,
    PushSubscriptionRecord.__tablename__,
    EmailOutboxRecord.__tablename__,
    "corestone_email_events",
    "corestone_email_suppressions",
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.start()
    await create_tables(database, *TABLES)
    yield database
    await database.aclose()


@pytest.fixture
async def sender(
    db: Database, service: PushService, keys: VapidKeys, metrics: Metrics
) -> AsyncIterator[WebPushSender]:
    policy = EndpointPolicy.allowing(service.url)
    async with WebPushSender(
        keys, database=db, store=SubscriptionStore(policy=policy), metrics=metrics
    ) as made:
        yield made


@pytest.fixture
async def notifier(
    db: Database, sender: WebPushSender, metrics: Metrics
) -> AsyncIterator[Notifier]:
    made = Notifier(
        db,
        NotificationFeed(b"k" * 32),
        PreferenceStore(KINDS),
        email=EmailService(db),
        push=sender,
        metrics=metrics,
    )
    yield made
    await made.aclose()


def notice(event: str = "e1", user: str = "7") -> Notice:
    return Notice(
        user_id=user,
        kind="task.assigned",
        event_id=event,
        title="Assigned to you: {{ 7*7 }}",
        body="Ada assigned you a task",
        workspace_id=3,
        data={"task_id": 42, "url": "/?workspace=3&task=42"},
    )


async def note() -> EmailMessage:
    return EmailMessage.build(
        sender="app@example.com", to="bo@example.com", subject="Assigned", text="hi"
    )


async def subscribe(db: Database, service: PushService, sender: WebPushSender) -> None:
    browser = await service.browser(sender.keys.application_server_key)
    async with db.transaction() as tx:
        await sender.store.register(tx.session, "7", browser.subscription)


async def queued(db: Database) -> list[str | None]:
    async with db.transaction(read_only=True) as tx:
        return list(await tx.session.scalars(select(EmailOutboxRecord.idempotency_key)))


def created(metrics: Metrics, channel: str) -> float:
    value = metrics.registry.get_sample_value(
        "corestone_notifications_created_total", {"kind": "task.assigned", "channel": channel}
    )
    return value or 0.0


async def test_every_channel_once_and_nothing_the_second_time(
    db: Database, notifier: Notifier, service: PushService, metrics: Metrics
) -> None:
    """Feed row, email queued with its key, push decrypted by the browser; the same
    notice again (a redelivered event) sends nothing more."""
    assert notifier.push is not None
    await subscribe(db, service, notifier.push)
    for _ in range(2):
        async with db.transaction() as tx:
            result = await notifier.notify(tx, notice(), email=note)
        await notifier.drain()
    assert result.created is False
    assert await queued(db) == ["notification:e1:7:task.assigned"]
    [delivered] = service.delivered
    payload = json.loads(delivered.plaintext)
    assert payload["title"] == "Assigned to you: {{ 7*7 }}"
    assert payload["task_id"] == 42
    assert payload["notification_id"] is not None
    assert [created(metrics, c) for c in ("in_app", "email", "push")] == [1, 1, 1]


async def test_a_rollback_notifies_no_one(
    db: Database, notifier: Notifier, service: PushService
) -> None:
    """The handling transaction rolls back: no row, no email, no push."""
    assert notifier.push is not None
    await subscribe(db, service, notifier.push)
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await notifier.notify(tx, notice(), email=note)
            raise RuntimeError("the handler failed later")
    await notifier.drain()
    assert await queued(db) == []
    assert service.delivered == []
    async with db.transaction(read_only=True) as tx:
        assert await notifier.feed.unread_count(tx.session, "7") == 0


@pytest.mark.parametrize("channel", ["in_app", "email", "push"])
async def test_a_channel_turned_off_carries_nothing(
    db: Database, notifier: Notifier, service: PushService, channel: str
) -> None:
    """With one channel off the other two still carry the notification."""
    assert notifier.push is not None
    await subscribe(db, service, notifier.push)
    async with db.transaction() as tx:
        await notifier.preferences.update(tx.session, "7", {"task.assigned": {channel: False}})
    async with db.transaction() as tx:
        result = await notifier.notify(tx, notice(), email=note)
    await notifier.drain()
    assert set(result.channels) == {"in_app", "email", "push"} - {channel}
    async with db.transaction(read_only=True) as tx:
        rows = await notifier.feed.unread_count(tx.session, "7")
    assert rows == (0 if channel == "in_app" else 1)
    assert len(await queued(db)) == (0 if channel == "email" else 1)
    assert len(service.delivered) == (0 if channel == "push" else 1)


async def test_shutdown_cancels_pushes_past_the_drain_deadline(
    db: Database, sender: WebPushSender, service: PushService, metrics: Metrics
) -> None:
    """A push service that does not answer: ``aclose`` waits its deadline, then cancels the
    push; the notification itself is committed."""
    made = Notifier(
        db,
        NotificationFeed(b"k" * 32),
        PreferenceStore(KINDS),
        push=sender,
        metrics=metrics,
        drain_seconds=0.2,
    )
    await subscribe(db, service, sender)
    service.delay = 3.0
    async with db.transaction() as tx:
        await made.notify(tx, notice())
    await asyncio.sleep(0.1)  # the push is in flight, held by the service
    await asyncio.wait_for(made.aclose(), timeout=5)
    assert service.delivered == []
    assert created(metrics, "push") == 0
    async with db.transaction(read_only=True) as tx:
        assert await made.feed.unread_count(tx.session, "7") == 1


async def test_a_handler_cancelled_after_notify_leaves_nothing(
    db: Database, notifier: Notifier, service: PushService
) -> None:
    """Cancelled while its transaction is still open (after notify returned): the row and
    the email roll back with it and no push is sent."""
    assert notifier.push is not None
    await subscribe(db, service, notifier.push)
    notified = asyncio.Event()

    async def handler() -> None:
        async with db.transaction() as tx:
            await notifier.notify(tx, notice(), email=note)
            notified.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(handler())
    await notified.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await notifier.drain()
    assert await queued(db) == []
    assert service.delivered == []
    async with db.transaction(read_only=True) as tx:
        assert await notifier.feed.unread_count(tx.session, "7") == 0
