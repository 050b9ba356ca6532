"""Delivery events against the outbox's edge statuses."""

from __future__ import annotations

from sqlalchemy import update

from corestone.db import Database
from corestone.email import EmailService
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
