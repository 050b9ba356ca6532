"""EmailService.send_bulk: one row per recipient, rendered for them, in one transaction."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from corestone.db import Database
from corestone.email import (
    BulkMail,
    EmailMessage,
    EmailSender,
    EmailService,
    EmailTemplates,
    EmailTracker,
    ProviderRoute,
    SuppressionReason,
    UnsubscribeHeaders,
    UnsubscribeTokens,
)
from corestone.email.bulk import recipient_key, render_bulk
from corestone.email.providers import MemoryProvider
from corestone.errors import InvalidInputError

from .conftest import OUTBOX, Time, history

TEMPLATES = EmailTemplates(
    strings={
        "news.subject.txt": "News for {{ name }}",
        "news.html": "<p>Hello {{ name }}, your plan is {{ plan }}.</p>",
        "news.txt": "Hello {{ name }}, your plan is {{ plan }}.",
    }
)
MAIL = BulkMail(sender=("Acme", "news@acme.example"), tags=("news",))


async def bulk_rows(db: Database, bulk_id: str) -> list[Any]:
    async with db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(
            select(OUTBOX).where(OUTBOX.c.bulk_id == bulk_id).order_by(OUTBOX.c.created_at)
        )
        return list(rows)


async def count_rows(db: Database) -> int:
    async with db.transaction(read_only=True) as tx:
        return int(await tx.session.scalar(select(func.count()).select_from(OUTBOX)) or 0)


def people(count: int) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"user{i}@example.org", {"name": f"User {i}", "plan": f"plan-{i}"}) for i in range(count)
    ]


async def test_a_bulk_of_n_stores_n_rows_each_rendered_for_its_recipient(
    db: Database, time: Time
) -> None:
    """120 recipients: 120 queued rows with the bulk's id, each with its own subject and body."""
    service = EmailService(db, now=time.wall)
    bulk_id = await service.send_bulk(TEMPLATES, "news", people(120), mail=MAIL)
    rows = await bulk_rows(db, bulk_id)
    assert len(rows) == 120
    by_to = {r.message["to"][0][0]: r for r in rows}
    for i in range(120):
        stored = by_to[f"user{i}@example.org"]
        assert stored.status == "queued"
        message = EmailMessage.from_dict(stored.message)
        assert message.subject == f"News for User {i}"
        assert message.html == f"<p>Hello User {i}, your plan is plan-{i}.</p>"
        assert message.text == f"Hello User {i}, your plan is plan-{i}."
        assert message.tags == ("news",)
        assert message.sender.email == "news@acme.example"
    assert await history(db, rows[0].id) == [("queued", None, None)]


async def test_hostile_merge_data_is_data_and_line_breaks_in_the_subject_are_refused(
    db: Database, time: Time
) -> None:
    """Template code in merge data renders as text, HTML is escaped, bodies may hold line
    breaks; a CR/LF that would reach the subject names the recipient and writes nothing."""
    service = EmailService(db, now=time.wall)
    hostile = [
        ("a@example.org", {"name": "{{ 7*7 }}", "plan": "{% include 'news.html' %}"}),
        ("b@example.org", {"name": "<script>x()</script>", "plan": "one\r\nBcc: eve@example.org"}),
    ]
    bulk_id = await service.send_bulk(
        EmailTemplates(strings={"t.subject.txt": "Hi", "t.html": "<p>{{ name }} {{ plan }}</p>"}),
        "t", hostile, mail=MAIL,
    )  # fmt: skip
    rows = {
        r.message["to"][0][0]: EmailMessage.from_dict(r.message)
        for r in await bulk_rows(db, bulk_id)
    }
    assert rows["a@example.org"].html == "<p>{{ 7*7 }} {% include &#39;news.html&#39; %}</p>"
    assert rows["b@example.org"].html == (
        "<p>&lt;script&gt;x()&lt;/script&gt; one\r\nBcc: eve@example.org</p>"
    )
    assert rows["b@example.org"].headers == {}
    before = await count_rows(db)
    with pytest.raises(InvalidInputError) as caught:
        await service.send_bulk(
            TEMPLATES, "news",
            [*people(2), ("c@example.org", {"name": "x\r\nBcc: eve@example.org", "plan": "p"})],
            mail=MAIL,
        )  # fmt: skip
    assert caught.value.field == "recipients[2].subject"
    assert caught.value.rule == "no_line_breaks"
    assert await count_rows(db) == before


@pytest.mark.parametrize(
    ("recipient", "field", "rule"),
    [
        (("not an address", {"name": "n", "plan": "p"}), "recipients[1].to[0]", "email"),
        (("ok@example.org", {"name": "n"}), "recipients[1].data (news.html)", "undefined"),
        (("ok@example.org", ["not", "a", "mapping"]), "recipients[1].data", "type"),
        (("user0@EXAMPLE.org", {"name": "n", "plan": "p"}), "recipients[1].to", "duplicate"),
        ((("Eve\r\nBcc: x@y.org", "e@example.org"), {"name": "n", "plan": "p"}),
         "recipients[1].to[0].name", "no_line_breaks"),
    ],
)  # fmt: skip
async def test_a_bad_recipient_is_named_by_index_and_field_and_nothing_is_written(
    db: Database, time: Time, recipient: Any, field: str, rule: str
) -> None:
    """The error names the recipient's index and field; no row of the bulk is stored."""
    with pytest.raises(InvalidInputError) as caught:
        await EmailService(db, now=time.wall).send_bulk(
            TEMPLATES, "news", [*people(1), recipient, *people(3)[1:]], mail=MAIL
        )
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert await count_rows(db) == 0


async def test_the_bulk_rolls_back_with_the_callers_transaction(db: Database, time: Time) -> None:
    """Inside a transaction that fails, not one of the bulk's rows stays."""
    service = EmailService(db, now=time.wall)
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await service.send_bulk(TEMPLATES, "news", people(30), mail=MAIL)
            raise RuntimeError("the caller's change failed")
    assert await count_rows(db) == 0


async def test_the_same_key_gives_the_same_bulk_and_stores_each_recipient_once(
    db: Database, time: Time
) -> None:
    """Sent again with its key (and one more recipient), a bulk returns its id and adds
    only the new recipient; each row's key is the bulk's and a digest of the address."""
    service = EmailService(db, now=time.wall)
    first = await service.send_bulk(TEMPLATES, "news", people(5), mail=MAIL, idempotency_key="n:1")
    again = await service.send_bulk(TEMPLATES, "news", people(6), mail=MAIL, idempotency_key="n:1")
    assert again == first
    rows = await bulk_rows(db, first)
    assert len(rows) == 6
    assert {r.idempotency_key for r in rows} == {
        recipient_key("n:1", f"user{i}@example.org") for i in range(6)
    }
    other = await service.send_bulk(TEMPLATES, "news", people(2), mail=MAIL, idempotency_key="n:2")
    assert other != first
    assert await count_rows(db) == 8


async def test_suppressed_recipients_are_stored_as_suppressed(db: Database, time: Time) -> None:
    """A suppressed address gets a ``suppressed`` row with the reason, never queued."""
    service = EmailService(db, now=time.wall)
    await service.suppress("USER1@example.org", SuppressionReason.COMPLAINT)
    bulk_id = await service.send_bulk(TEMPLATES, "news", people(3), mail=MAIL)
    rows = {r.message["to"][0][0]: r for r in await bulk_rows(db, bulk_id)}
    assert {to: r.status for to, r in rows.items()} == {
        "user0@example.org": "queued",
        "user1@example.org": "suppressed",
        "user2@example.org": "queued",
    }
    assert rows["user1@example.org"].next_attempt_at is None
    assert await history(db, rows["user1@example.org"].id) == [
        ("suppressed", None, "every recipient is suppressed: user1@example.org")
    ]


async def test_each_recipient_gets_their_own_unsubscribe_link(db: Database, time: Time) -> None:
    """With UnsubscribeHeaders every message carries a one-click link whose token names
    its own recipient."""
    tokens = UnsubscribeTokens(b"s" * 32)
    mail = BulkMail(
        sender="news@acme.example",
        unsubscribe=UnsubscribeHeaders(tokens, "https://acme.example/unsubscribe", "news"),
    )
    bulk_id = await EmailService(db, now=time.wall).send_bulk(
        TEMPLATES, "news", people(3), mail=mail
    )
    for stored in await bulk_rows(db, bulk_id):
        message = EmailMessage.from_dict(stored.message)
        assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = message.headers["List-Unsubscribe"]
        token = link.split("token=", 1)[1].rstrip(">").replace("%2E", ".").replace("%3D", "=")
        assert tokens.verify(token).address == message.to[0].email


def test_the_recipient_limit_and_an_empty_list_are_refused() -> None:
    """More recipients than the limit, or none at all, is refused before anything renders."""
    with pytest.raises(InvalidInputError) as caught:
        render_bulk(TEMPLATES, "news", people(4), MAIL, max_recipients=3)
    assert (caught.value.field, caught.value.rule) == ("recipients", "max_items")
    with pytest.raises(InvalidInputError) as caught:
        render_bulk(TEMPLATES, "news", [], MAIL)
    assert (caught.value.field, caught.value.rule) == ("recipients", "required")
    with pytest.raises(InvalidInputError) as caught:
        render_bulk(TEMPLATES, "news", people(1), MAIL, idempotency_key="k" * 190)
    assert caught.value.field == "idempotency_key"


async def test_progress_counts_a_bulk_by_status_until_it_is_done(db: Database, time: Time) -> None:
    """Before the sender: all pending; after: sent, failed and suppressed counted, done;
    another bulk's messages are not counted in it."""
    service = EmailService(db, now=time.wall)
    await service.suppress("user4@example.org", SuppressionReason.BOUNCE)
    bulk_id = await service.send_bulk(TEMPLATES, "news", people(5), mail=MAIL)
    await service.send_bulk(TEMPLATES, "news", people(2), mail=MAIL)  # another bulk
    tracker = EmailTracker(db)
    before = await tracker.bulk(bulk_id)
    assert before is not None
    assert (before.counts, before.total, before.pending, before.done) == (
        {"queued": 4, "suppressed": 1}, 5, 4, False
    )  # fmt: skip
    memory = MemoryProvider()
    memory.fail_next(1, retryable=False, reason="550 no such user")
    sender = EmailSender(db, [ProviderRoute(memory)], batch=4, now=time.wall)
    while await sender.run_once():
        pass
    after = await tracker.bulk(bulk_id)
    assert after is not None
    assert after.counts["suppressed"] == 1
    assert after.counts.get("failed", 0) + after.counts["sent"] == 4
    assert after.counts.get("failed", 0) in (0, 1)  # the failure may land on the other bulk
    assert after.done
    assert after.as_json()["done"] is True
    assert await tracker.bulk("00000000-0000-0000-0000-000000000000") is None
    listed = await tracker.messages(bulk_id=bulk_id, limit=50)
    assert len(listed) == 5
