"""EmailService.send: in the caller's transaction, deduplicated by key, suppression recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from corestone import context
from corestone.db import Database
from corestone.email import EmailService, SuppressionReason
from corestone.errors import ConflictError
from corestone.observability.metrics import Metrics

from .conftest import OUTBOX, Time, history, message, row, statuses


async def test_a_message_is_stored_in_the_callers_transaction_and_rolls_back_with_it(
    db: Database, time: Time
) -> None:
    """Inside a rolled-back transaction nothing stays; inside a committed one the row is queued."""
    service = EmailService(db, now=time.wall)
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await service.send(message())  # found through the context's open transaction
            raise RuntimeError("the caller's change failed")
    assert await statuses(db) == {}

    async with db.transaction() as tx:
        kept = await service.send(message(), transaction=tx)
    stored = await row(db, kept)
    assert stored.status == "queued"
    assert stored.message == message().to_stored()
    assert stored.next_attempt_at is not None
    assert await history(db, kept) == [("queued", None, None)]


async def test_without_a_transaction_send_commits_its_own(db: Database, time: Time) -> None:
    """send() outside any transaction stores and commits the message by itself."""
    message_id = await EmailService(db, now=time.wall).send(message())
    assert await statuses(db) == {message_id: "queued"}


async def test_the_same_idempotency_key_returns_the_stored_id_and_writes_nothing(
    db: Database, time: Time
) -> None:
    """A second send with a stored key returns the first id; still one row and one event."""
    service = EmailService(db, now=time.wall)
    first = await service.send(message(idempotency_key="welcome:42"))
    async with db.transaction():
        again = await service.send(message(idempotency_key="welcome:42", subject="Other"))
    other = await service.send(message(idempotency_key="welcome:43"))
    assert again == first
    assert other != first
    async with db.transaction(read_only=True) as tx:
        count = await tx.session.scalar(select(func.count()).select_from(OUTBOX))
    assert count == 2
    assert await history(db, first) == [("queued", None, None)]
    assert (await row(db, first)).message["subject"] == "Hello"


async def test_a_fully_suppressed_message_is_stored_as_suppressed_with_the_reason(
    db: Database, time: Time
) -> None:
    """Every recipient suppressed: status suppressed, history says why, counted per outcome."""
    metrics = Metrics()
    service = EmailService(db, now=time.wall, metrics=metrics)
    await service.suppress("Bounced@Example.com", SuppressionReason.BOUNCE, detail="550 no user")
    message_id = await service.send(message(to="bounced@example.com"))
    assert (await row(db, message_id)).status == "suppressed"
    assert await history(db, message_id) == [
        ("suppressed", None, "every recipient is suppressed: bounced@example.com")
    ]
    sample = metrics.registry.get_sample_value(
        "corestone_email_messages_total", {"provider": "none", "outcome": "suppressed"}
    )
    assert sample == 1.0


async def test_suppressed_recipients_are_left_out_of_a_message_to_others(
    db: Database, time: Time
) -> None:
    """Some recipients suppressed: the message is queued without them, and the skip recorded."""
    service = EmailService(db, now=time.wall)
    await service.suppress("gone@example.com", SuppressionReason.COMPLAINT)
    message_id = await service.send(
        message(to=["ada@example.com", "gone@example.com"], cc=["gone@example.com"])
    )
    stored = await row(db, message_id)
    assert stored.status == "queued"
    assert [pair[0] for pair in stored.message["to"]] == ["ada@example.com"]
    assert stored.message["cc"] == []
    assert await history(db, message_id) == [
        ("queued", None, "suppressed recipients left out: gone@example.com")
    ]


async def test_the_context_correlation_id_and_workspace_are_stored(
    db: Database, time: Time
) -> None:
    """A message sent while handling a request carries its correlation id and workspace."""
    with context.bind(correlation="req-123", workspace=7):
        message_id = await EmailService(db, now=time.wall).send(message())
    stored = await row(db, message_id)
    assert (stored.correlation_id, stored.workspace_id) == ("req-123", 7)


async def test_requeue_only_takes_failed_or_unknown_messages(db: Database, time: Time) -> None:
    """An operator retry queues an unknown message again, and refuses a queued one."""
    service = EmailService(db, now=time.wall)
    message_id = await service.send(message())
    assert await service.requeue(message_id) is False
    async with db.transaction() as tx:
        await tx.session.execute(
            OUTBOX.update().where(OUTBOX.c.id == message_id).values(status="unknown")
        )
    assert await service.requeue(message_id) is True
    assert (await row(db, message_id)).status == "queued"
    assert (await history(db, message_id))[-1] == ("queued", None, "retried by an operator")


async def test_a_stored_key_is_found_even_when_a_recipient_was_suppressed_since(
    db: Database, time: Time
) -> None:
    """A repeat send whose key is stored returns the stored id, suppressed recipient or not."""
    service = EmailService(db, now=time.wall)
    first = await service.send(
        message(to=["ada@example.com", "bob@example.com"], idempotency_key="assigned:9")
    )
    await service.suppress("BOB@example.com", SuppressionReason.BOUNCE)
    again = await service.send(
        message(to=["ada@example.com", "Bob@Example.com"], idempotency_key="assigned:9")
    )
    fresh = await service.send(message(to=["ada@example.com", "Bob@Example.com"]))

    assert again == first
    assert await history(db, first) == [("queued", None, None)]
    stored = await row(db, fresh)
    assert [pair[0] for pair in stored.message["to"]] == ["ada@example.com"]


async def test_a_key_another_workspace_used_is_a_conflict_not_its_message(
    db: Database, time: Time
) -> None:
    """Keys are unique across the outbox: workspace 2 sending with workspace 1's key used to
    get 1's message id back (a leak) while its own mail was never stored. It is refused
    (ConflictError, its transaction rolled back); workspace 1 still gets its own id."""
    service = EmailService(db, now=time.wall)
    first = await service.send(message(idempotency_key="invite:7"), workspace_id=1)
    with pytest.raises(ConflictError, match="another workspace"):
        async with db.transaction():
            await service.send(message(idempotency_key="invite:7"), workspace_id=2)
    assert await service.send(message(idempotency_key="invite:7"), workspace_id=1) == first
    with pytest.raises(ConflictError):
        await service.send(message(idempotency_key="invite:7"))  # no workspace: not 1's either
    assert list(await statuses(db)) == [first]
