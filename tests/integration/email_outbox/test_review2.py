"""Hostile review 2: bulk keys across workspaces, provider reasons the database refuses."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from corestone.db import Database
from corestone.email import BulkMail, EmailService, EmailTemplates
from corestone.email.bulk import recipient_key
from corestone.errors import EmailProviderError

from .conftest import OUTBOX, Time, make_sender, queue, row
from .fakes import FakeProvider

TEMPLATES = EmailTemplates(
    strings={"news.subject.txt": "News for {{ name }}", "news.txt": "Hello {{ name }}."}
)
MAIL = BulkMail(sender=("Acme", "news@acme.example"))


async def test_the_same_bulk_key_in_two_workspaces_stores_each_workspaces_messages(
    db: Database, time: Time
) -> None:
    """Two tenants who both key their December newsletter "news:2026-12" and share one
    subscriber: each tenant's message is stored and sent. Keys derived from the key and
    address alone made the second tenant's row a silent ON CONFLICT no-op, and both
    tenants got the same bulk id (the second tenant's newsletter never went out)."""
    service = EmailService(db, now=time.wall)
    shared = [("same@example.org", {"name": "Sam"})]
    first = await service.send_bulk(
        TEMPLATES, "news", shared, mail=MAIL, idempotency_key="news:2026-12", workspace_id=1
    )
    second = await service.send_bulk(
        TEMPLATES, "news", shared, mail=MAIL, idempotency_key="news:2026-12", workspace_id=2
    )
    assert first != second
    async with db.transaction(read_only=True) as tx:
        rows = list(await tx.session.execute(select(OUTBOX.c.workspace_id, OUTBOX.c.bulk_id)))
    assert sorted((r.workspace_id, r.bulk_id) for r in rows) == sorted([(1, first), (2, second)])
    again = await service.send_bulk(
        TEMPLATES, "news", shared, mail=MAIL, idempotency_key="news:2026-12", workspace_id=2
    )
    assert again == second  # still idempotent within a workspace


async def test_a_provider_reason_with_nul_is_stored_not_a_failed_pass(
    db: Database, time: Time
) -> None:
    """A provider whose error body holds a NUL byte (a broken proxy, a hostile endpoint):
    the reason goes into last_error and the history's detail; PostgreSQL's text refuses
    NUL, so the fenced write failed and the whole pass raised, leaving every row of the
    round leased until its lease expired, again and again."""
    alpha = FakeProvider(
        "alpha", fail_next=[EmailProviderError("alpha", "bad\x00gateway", retryable=False)]
    )
    [message_id] = await queue(db, time)
    sender = make_sender(db, [alpha], time)
    await sender.run_once()
    stored = await row(db, message_id)
    assert stored.status == "failed"
    assert "\x00" not in stored.last_error
    assert "gateway" in stored.last_error


async def test_two_sends_of_one_keyed_bulk_in_other_orders_do_not_deadlock(
    db: Database, time: Time
) -> None:
    """A bulk retried with its key while the first call's transaction is still open, its
    recipients in another order (a set, a query without ORDER BY): each transaction
    inserts keys the other waits for. Rows were inserted in list order, so PostgreSQL
    found a deadlock and failed one caller; in key order one simply waits for the other.
    (The first call is two calls in one transaction here only to fix the interleaving.)"""
    if db.dialect != "postgresql":
        pytest.skip("row locks on a unique index: PostgreSQL (SQLite has one writer)")
    service = EmailService(db, now=time.wall)
    x, y = ("x@example.org", {"name": "X"}), ("y@example.org", {"name": "Y"})
    # Which of x, y sorts first by key is fixed by the digest; take them in the other order.
    scope = "1"
    first, second = sorted([x, y], key=lambda r: recipient_key("k", r[0], scope=scope))
    go = asyncio.Event()

    async def retry() -> str:
        await go.wait()
        return await service.send_bulk(
            TEMPLATES, "news", [second, first], mail=MAIL, idempotency_key="k", workspace_id=1
        )

    other = asyncio.create_task(retry())  # made outside, so not in the transaction below
    async with db.transaction() as tx:
        await service.send_bulk(
            TEMPLATES, "news", [first], mail=MAIL, idempotency_key="k", transaction=tx,
            workspace_id=1,
        )  # fmt: skip
        go.set()
        await asyncio.sleep(0.5)  # the retry has inserted `second` and waits for `first`
        await service.send_bulk(
            TEMPLATES, "news", [second], mail=MAIL, idempotency_key="k", transaction=tx,
            workspace_id=1,
        )  # fmt: skip
    await other
    async with db.transaction(read_only=True) as check:
        assert len(list(await check.session.execute(select(OUTBOX.c.id)))) == 2


@pytest.mark.parametrize("brk", ["\u2028", "\x85", "\x0b"])
def test_an_unsubscribe_endpoint_with_any_line_break_is_refused_before_storing(brk: str) -> None:
    """unsubscribe.py checked the endpoint for CR, LF and NUL only; U+2028, NEL or VT
    went into every stored message's List-Unsubscribe header (added after build's
    checks), and each provider then refused each message: a whole bulk failed at
    delivery instead of the call failing."""
    from corestone.email import UnsubscribeHeaders, UnsubscribeTokens
    from corestone.email.bulk import render_bulk

    mail = BulkMail(
        sender="news@acme.example",
        unsubscribe=UnsubscribeHeaders(
            UnsubscribeTokens(b"s" * 32), f"https://acme.example/u{brk}Bcc: x@evil.example", "n"
        ),
    )
    with pytest.raises(ValueError, match="unsubscribe endpoint"):
        render_bulk(TEMPLATES, "news", [("a@example.org", {"name": "A"})], mail)
