"""Delivery events applied to the outbox: history, status, idempotency, suppression."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from corestone.db import Database
from corestone.email import EmailService
from corestone.email.outbox import EmailStatus
from corestone.email.tracking import EmailTracker
from corestone.email.webhooks import DeliveryEvent
from tests.integration.email_outbox.conftest import OUTBOX, history, message, row

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


async def sent_message(db: Database, to: str = "ada@example.com", **values: object) -> str:
    """A message as the sender leaves it once a provider took it."""
    message_id = await EmailService(db).send(message(to))
    async with db.transaction() as tx:
        await tx.session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == message_id)
            .values(status="sent", provider="sendgrid", provider_message_id="pm-1", **values)
        )
    return message_id


def event(
    status: str, *, event_id: str = "ev-1", message_id: str | None = None, **fields: object
) -> DeliveryEvent:
    values: dict[str, object] = {
        "provider": "sendgrid", "event_id": event_id, "status": status,
        "recipient": "ada@example.com", "occurred_at": WHEN, "message_id": message_id,
        "provider_message_id": None, **fields,
    }  # fmt: skip
    return DeliveryEvent(**values)  # type: ignore[arg-type]


async def test_an_event_moves_the_status_and_adds_a_history_row(db: Database) -> None:
    """A delivered event makes a sent message ``delivered`` and records who and where."""
    message_id = await sent_message(db)
    result = await EmailTracker(db).apply([event("delivered", message_id=message_id)])
    assert (result.applied, result.duplicates, result.unmatched) == (1, 0, 0)
    assert (await row(db, message_id)).status == "delivered"
    assert (await history(db, message_id))[-1] == ("delivered", "sendgrid", "ada@example.com")


async def test_the_same_event_twice_changes_nothing_the_second_time(db: Database) -> None:
    """Providers retry webhooks: an event already applied (same provider and id) is a no-op."""
    message_id = await sent_message(db)
    tracker = EmailTracker(db)
    await tracker.apply([event("opened", message_id=message_id)])
    before = await history(db, message_id)
    again = await tracker.apply([event("opened", message_id=message_id)])
    assert (again.applied, again.duplicates) == (0, 1)
    assert await history(db, message_id) == before


async def test_an_event_finds_the_message_by_the_providers_id(db: Database) -> None:
    """Without our id in the event, the provider's message id finds the message."""
    message_id = await sent_message(db)
    await EmailTracker(db).apply([event("delivered", provider_message_id="pm-1")])
    assert (await row(db, message_id)).status == "delivered"


async def test_a_late_event_does_not_move_a_message_back(db: Database) -> None:
    """A ``delivered`` arriving after a bounce is history, but the message stays bounced."""
    message_id = await sent_message(db)
    tracker = EmailTracker(db)
    await tracker.apply([event("bounced", event_id="b", message_id=message_id)])
    await tracker.apply([event("delivered", event_id="d", message_id=message_id)])
    assert (await row(db, message_id)).status == "bounced"
    assert [h[0] for h in await history(db, message_id)][-2:] == ["bounced", "delivered"]


async def test_an_event_for_a_message_still_sending_leaves_its_status_to_the_sender(
    db: Database,
) -> None:
    """The sender's fenced write of ``sent`` must still match: only the history is added."""
    message_id = await sent_message(db)
    async with db.transaction() as tx:
        await tx.session.execute(
            update(OUTBOX).where(OUTBOX.c.id == message_id).values(status="sending")
        )
    await EmailTracker(db).apply([event("delivered", message_id=message_id)])
    assert (await row(db, message_id)).status == "sending"
    assert (await history(db, message_id))[-1][0] == "delivered"


async def test_a_hard_bounce_suppresses_the_address_and_later_sends_skip_it(
    db: Database,
) -> None:
    """A permanent bounce puts the recipient on the list; the next send is ``suppressed``."""
    message_id = await sent_message(db)
    result = await EmailTracker(db).apply(
        [event("bounced", message_id=message_id, permanent=True, detail="550 no such user")]
    )
    assert result.suppressed == ["ada@example.com"]
    later = await EmailService(db).send(message("Ada@Example.com"))
    assert (await row(db, later)).status == EmailStatus.SUPPRESSED.value
    assert (await history(db, later))[0][0] == "suppressed"


async def test_a_soft_bounce_suppresses_nobody(db: Database) -> None:
    """A bounce that is not permanent (blocked, deferred) leaves the address mailable."""
    message_id = await sent_message(db)
    result = await EmailTracker(db).apply([event("bounced", message_id=message_id)])
    assert result.suppressed == []
    later = await EmailService(db).send(message())
    assert (await row(db, later)).status == "queued"


async def test_a_complaint_and_an_unsubscribe_suppress_the_address(db: Database) -> None:
    """Complaints and provider-side unsubscribes both stop later mail to the address."""
    first = await sent_message(db, "bo@example.com")
    tracker = EmailTracker(db)
    await tracker.apply(
        [event("complained", message_id=first, recipient="bo@example.com", permanent=True)]
    )
    await tracker.apply(
        [event("unsubscribed", event_id="u", recipient="cy@example.com", message_id=None)]
    )
    service = EmailService(db)
    for address in ("bo@example.com", "cy@example.com"):
        assert (await row(db, await service.send(message(address)))).status == "suppressed"
    assert (await row(db, first)).status == "complained"


async def test_an_event_for_no_known_message_is_counted_unmatched(db: Database) -> None:
    """An event naming a message this outbox never had changes no message."""
    result = await EmailTracker(db).apply([event("delivered", message_id="nope")])
    assert (result.applied, result.unmatched) == (0, 1)


async def test_listing_filters_by_status_and_workspace(db: Database) -> None:
    """The read side shows only the statuses and workspaces asked for, with history."""
    service = EmailService(db)
    mine = await service.send(message(), workspace_id=1)
    await service.send(message(), workspace_id=2)
    tracker = EmailTracker(db)
    listed = await tracker.messages(statuses=[EmailStatus.QUEUED], workspace_ids=[1])
    assert [m.id for m in listed] == [mine]
    assert await tracker.messages(statuses=[EmailStatus.SENT], workspace_ids=[1]) == []
    assert await tracker.message(mine, workspace_ids=[2]) is None
    shown = await tracker.message(mine)
    assert shown is not None
    assert shown.history is not None
    assert [h.status for h in shown.history] == ["queued"]
    assert await tracker.counts(workspace_ids=[1, 2]) == {"queued": 2}


async def test_a_provider_id_shared_by_a_batch_matches_no_single_message(db: Database) -> None:
    """Two messages of one provider batch share its id: an event naming only that id is
    unmatched rather than applied to whichever message comes first."""
    first = await sent_message(db, "ada@example.com")
    second = await sent_message(db, "bo@example.com")
    result = await EmailTracker(db).apply([event("delivered", provider_message_id="pm-1")])
    assert result.unmatched == 1
    assert {(await row(db, first)).status, (await row(db, second)).status} == {"sent"}
