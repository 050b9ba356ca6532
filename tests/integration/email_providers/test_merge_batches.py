"""A bulk send through the sender to each provider's local server: one request per chunk.

Each fake renders what it received the way its provider would (SendGrid substitutions,
Mailgun recipient variables, SES template data), so these tests check that every
recipient gets exactly the message stored for them, from a few provider requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from corestone.db import Database
from corestone.email import (
    BulkMail,
    EmailMessage,
    EmailSender,
    EmailService,
    EmailTemplates,
    ProviderRoute,
    UnsubscribeHeaders,
    UnsubscribeTokens,
)
from corestone.email.providers import MailgunProvider, SendGridProvider, SesProvider
from corestone.email.providers.base import EmailProvider
from corestone.resilience import BreakerRegistry
from tests.integration.email_outbox.conftest import EVENTS, OUTBOX
from tests.integration.email_outbox.conftest import (
    db as db,
)  # the fixture: a database with the tables
from tests.integration.email_providers.conftest import (
    AWS_KEY_ID,
    AWS_REGION,
    AWS_SECRET,
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    SENDGRID_KEY,
)
from tests.integration.email_providers.fakes import (
    FakeHttpServer,
    MailgunFake,
    Rendered,
    SendGridFake,
    SesFake,
)

TEMPLATES = EmailTemplates(
    strings={
        "news.subject.txt": "News for {{ name }}",
        "news.html": "<p>Hello {{ name }}</p><p>{{ note }}</p>",
    }
)
TOKENS = UnsubscribeTokens(b"unsubscribe-secret-0123456789")
MAIL = BulkMail(
    sender=("Acme", "news@acme.example"),
    metadata={"campaign": "spring"},
    unsubscribe=UnsubscribeHeaders(TOKENS, "https://acme.example/unsubscribe", "news"),
)
HOSTILE = ["{{ 7*7 }}", "{% include 'x' %}", "{{{html}}}", "<script>x()</script>",
           "line\r\nBcc: eve@example.org", "%% 50%", "plain"]  # fmt: skip
PLACEHOLDERS = ["a", "-corestone-html-", "b", "%recipient.text%", "{{subject}}", "c", "d"]
"""Each provider's own placeholder syntax: SendGrid's tag and Mailgun's variable make a
message go alone; SES takes every value as data."""
ALONE = {"sendgrid": 1, "mailgun": 1, "ses": 0}

# (fake, provider made for it, the key under which the fake's events name our id, kind)
Made = tuple[FakeHttpServer, EmailProvider, str, str]


def sendgrid(fake: Any) -> EmailProvider:
    return SendGridProvider(SENDGRID_KEY, base_url=fake.url, max_batch=3)


def mailgun(fake: Any) -> EmailProvider:
    provider = MailgunProvider(MAILGUN_KEY, MAILGUN_DOMAIN, base_url=fake.url)
    provider.max_batch = 3
    return provider


def ses(fake: Any) -> EmailProvider:
    provider = SesProvider(AWS_KEY_ID, AWS_SECRET, region=AWS_REGION, endpoint_url=fake.url)
    provider.max_batch = 3
    return provider


KINDS: dict[str, tuple[Callable[[], FakeHttpServer], Callable[[Any], EmailProvider], str]] = {
    "sendgrid": (lambda: SendGridFake(SENDGRID_KEY), sendgrid, "corestone_id"),
    "mailgun": (lambda: MailgunFake(MAILGUN_KEY, MAILGUN_DOMAIN), mailgun, "corestone-id"),
    "ses": (lambda: SesFake(AWS_KEY_ID, AWS_SECRET, AWS_REGION), ses, "corestone-id"),
}


@pytest.fixture(params=sorted(KINDS))
async def made(request: pytest.FixtureRequest) -> AsyncIterator[Made]:
    """One provider's local server and a provider for it that takes 3 messages a call."""
    new_fake, new_provider, id_key = KINDS[request.param]
    fake = new_fake()
    await fake.start()
    provider = new_provider(fake)
    try:
        yield fake, provider, id_key, request.param
    finally:
        await provider.aclose()
        await fake.stop()


def sender(db: Database, provider: EmailProvider) -> EmailSender:
    return EmailSender(
        db, [ProviderRoute(provider)], breakers=BreakerRegistry(), tries_per_provider=2,
        retry_wait_seconds=0.001, max_retry_wait_seconds=0.01, backoff_initial_seconds=60.0,
    )  # fmt: skip


async def rows(db: Database) -> dict[str, Any]:
    async with db.transaction(read_only=True) as tx:
        return {r.id: r for r in await tx.session.execute(select(OUTBOX))}


async def bulk_of_seven(
    db: Database, notes: list[str] = HOSTILE
) -> list[tuple[str, dict[str, str]]]:
    recipients = [(f"u{i}@example.org", {"name": f"U{i}", "note": notes[i]}) for i in range(7)]
    await EmailService(db).send_bulk(TEMPLATES, "news", recipients, mail=MAIL)
    return recipients


def delivered_by_id(fake: Any, id_key: str) -> dict[str, Rendered]:
    found: list[Rendered] = fake.delivered
    return {d.ids[id_key]: d for d in found}


async def test_a_bulk_goes_out_one_request_per_chunk_each_recipient_their_own(
    db: Database, made: Made
) -> None:
    """Seven recipients, three a call: three requests (two merged, one single), and each
    recipient receives exactly their stored subject, bodies, unsubscribe link and id."""
    fake, provider, id_key, _ = made
    await bulk_of_seven(db)
    assert await sender(db, provider).run_once() == 7

    assert len(fake.requests) == 3
    await check_delivered(db, fake, id_key)


async def test_a_providers_own_placeholder_in_merge_data_arrives_as_written(
    db: Database, made: Made
) -> None:
    """All seven in one chunk: a value holding the provider's own placeholder syntax makes
    that message go in a request of its own (SES: a value is data anyway); every
    recipient still receives exactly what was rendered for them."""
    fake, provider, id_key, kind = made
    provider.max_batch = 50  # type: ignore[misc]
    await bulk_of_seven(db, PLACEHOLDERS)
    await sender(db, provider).run_once()
    assert len(fake.requests) == 1 + ALONE[kind]
    await check_delivered(db, fake, id_key)


async def check_delivered(db: Database, fake: FakeHttpServer, id_key: str) -> None:
    """Every row sent, and each recipient got exactly their stored message."""
    stored = await rows(db)
    assert {r.status for r in stored.values()} == {"sent"}
    assert all(r.provider_message_id for r in stored.values())
    delivered = delivered_by_id(fake, id_key)
    assert set(delivered) == set(stored)
    for message_id, row in stored.items():
        message = EmailMessage.from_dict(row.message)
        got = delivered[message_id]
        assert got.to == [message.to[0].email]
        assert (got.subject, got.html) == (message.subject, message.html)
        if got.text is not None:  # SendGrid and SES carry the derived text too
            assert got.text == message.text
        assert got.headers["List-Unsubscribe"] == message.headers["List-Unsubscribe"]
        token = message.headers["List-Unsubscribe"].split("token=")[1].rstrip(">")
        assert TOKENS.verify(token.replace("%2E", ".")).address == message.to[0].email


async def test_a_throttled_chunk_is_retried_and_the_others_are_not_touched(
    db: Database, made: Made
) -> None:
    """A 429 on the first request: that chunk's messages record the reason and go on the
    retry; every message ends sent, once."""
    fake, provider, id_key, _ = made
    fake.fail_next(
        429, {"message": "slow down", "errors": [{"message": "slow down"}]},
        {"Retry-After": "0", "x-amzn-errortype": "TooManyRequestsException"},
    )  # fmt: skip
    await bulk_of_seven(db, [f"note {i}" for i in range(7)])
    await sender(db, provider).run_once()

    assert len(fake.requests) == 4
    stored = await rows(db)
    assert {r.status for r in stored.values()} == {"sent"}
    assert sorted(delivered_by_id(fake, id_key)) == sorted(stored)
    async with db.transaction(read_only=True) as tx:
        retried = await tx.session.execute(
            select(EVENTS.c.message_id, EVENTS.c.detail).where(EVENTS.c.status == "queued",
                                                               EVENTS.c.detail.is_not(None))
        )  # fmt: skip
        reasons = {r.message_id: r.detail for r in retried}
    assert len(reasons) in (1, 3)  # the first chunk: merged (3) or, for a lone one, 1
    assert all("429" in reason for reason in reasons.values())


async def test_ses_maps_each_entry_of_a_bulk_to_its_own_message(db: Database) -> None:
    """SES reports per entry: a rejected recipient fails alone, a throttled one is retried
    (alone, so through SendEmail) and sent, the other entries of the request are sent."""
    fake = SesFake(AWS_KEY_ID, AWS_SECRET, AWS_REGION)
    await fake.start()
    provider = ses(fake)
    try:
        fake.entry_status["u0@example.org"] = "MESSAGE_REJECTED"
        fake.entry_status["u1@example.org"] = "ACCOUNT_THROTTLED"
        await bulk_of_seven(db)
        await sender(db, provider).run_once()
    finally:
        await provider.aclose()
        await fake.stop()
    by_to = {r.message["to"][0][0]: r for r in (await rows(db)).values()}
    assert by_to["u0@example.org"].status == "failed"
    assert by_to["u0@example.org"].last_error.startswith("MESSAGE_REJECTED")
    throttled = by_to["u1@example.org"]
    assert throttled.status == "sent"
    async with db.transaction(read_only=True) as tx:
        details = await tx.session.scalars(
            select(EVENTS.c.detail).where(EVENTS.c.message_id == throttled.id)
        )
        assert any((d or "").startswith("ACCOUNT_THROTTLED") for d in details)
    assert {by_to[f"u{i}@example.org"].status for i in range(2, 7)} == {"sent"}
