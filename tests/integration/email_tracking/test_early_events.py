"""A provider's webhook that comes before the sender has written ``sent``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from corestone.db import Database
from corestone.email.providers.base import Outgoing, Sent
from corestone.email.tracking import EmailTracker
from tests.integration.email_outbox.conftest import Time, make_sender, queue, row
from tests.integration.email_outbox.fakes import FakeProvider

from .test_tracking import event


@dataclass
class ReportsAtOnce(FakeProvider):
    """A provider whose webhook reaches us while its API call has not yet returned."""

    tracker: EmailTracker | None = None
    reports: list[str] = field(default_factory=list)

    async def send(self, outgoing: Outgoing) -> Sent:
        sent = await super().send(outgoing)
        assert self.tracker is not None
        for number, status in enumerate(self.reports):
            await self.tracker.apply(
                [event(status, event_id=f"{outgoing.message_id}-{number}",
                       message_id=outgoing.message_id)]
            )  # fmt: skip
        return sent


@pytest.mark.parametrize(
    ("reports", "expected"),
    [(["delivered"], "delivered"), (["delivered", "bounced"], "bounced"), ([], "sent")],
)
async def test_an_event_before_the_sent_write_is_not_overwritten_by_sent(
    db: Database, reports: list[str], expected: str
) -> None:
    """The webhook found the message still ``sending`` and only added history; the sender's
    ``sent`` then stood for good and hid the delivery or the bounce. It now takes the
    furthest event of its attempt in the same transaction."""
    time = Time()
    provider = ReportsAtOnce("sendgrid", tracker=EmailTracker(db, now=time.wall), reports=reports)
    [message_id] = await queue(db, time)
    sender = make_sender(db, [provider], time)
    assert await sender.run_once() == 1
    assert (await row(db, message_id)).status == expected


async def test_events_of_an_earlier_attempt_do_not_promote_a_resend(db: Database) -> None:
    """Only events after this attempt's ``sending`` count: a bounce reported for an earlier
    attempt (then requeued by an operator) does not make the new ``sent`` a bounce."""
    time = Time()
    provider = ReportsAtOnce("sendgrid", tracker=EmailTracker(db, now=time.wall))
    [message_id] = await queue(db, time)
    tracker = EmailTracker(db, now=time.wall)
    await tracker.apply([event("bounced", event_id="old", message_id=message_id)])
    sender = make_sender(db, [provider], time)
    assert await sender.run_once() == 1
    assert (await row(db, message_id)).status == "sent"
