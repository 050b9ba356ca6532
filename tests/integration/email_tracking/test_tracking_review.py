"""Delivery events against the outbox's edge statuses."""

from __future__ import annotations

from sqlalchemy import update

from corestone.db import Database
from corestone.email import EmailService
from corestone.email.outbox import OutboxStore
from corestone.email.tracking import EmailTracker
from tests.integration.email_outbox.conftest import OUTBOX, row

from .test_tracking import event, sent_message


async def test_a_delivery_event_resolves_an_unknown_message_so_a_retry_is_refused(
    db: Database,
) -> None:
    """``unknown`` means "may have gone out": the provider saying it delivered it settles
    that, so the message becomes ``delivered`` and an operator's retry cannot send a copy."""
    message_id = await sent_message(db)
    async with db.transaction() as tx:  # the crash window: no provider id was written
        await tx.session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == message_id)
            .values(status="unknown", provider_message_id=None)
        )
    await EmailTracker(db).apply([event("delivered", message_id=message_id)])
    assert (await row(db, message_id)).status == "delivered"
    assert await EmailService(db).requeue(message_id) is False


async def test_a_bounce_for_an_address_past_320_characters_applies_without_failing(
    db: Database,
) -> None:
    """A signed bounce naming an overlong recipient failed the write on PostgreSQL (the
    column holds 320), so the webhook answered 500 and the provider retried it forever.
    No mailbox is that long: it is not suppressed, and the event still applies."""
    message_id = await sent_message(db)
    overlong = "x" * 320 + "@example.com"
    tracker = EmailTracker(db)
    await tracker.apply(
        [event("bounced", message_id=message_id, recipient=overlong, permanent=True)]
    )
    assert (await row(db, message_id)).status == "bounced"
    async with db.transaction(read_only=True) as tx:
        assert await OutboxStore().suppressed_among(tx.session, [overlong]) == set()
