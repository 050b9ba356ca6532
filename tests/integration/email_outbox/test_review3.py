"""Sender edges found after the email issue closed: overlong provider ids, a chunk whose
record fails while its siblings are still in their provider calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from corestone.db import Database
from corestone.email.providers.base import Outgoing, Sent

from .conftest import Time, make_sender, queue, row
from .fakes import FakeProvider


@dataclass
class LongIds(FakeProvider):
    """A provider (or a proxy in front of one) answering with a 300-character message id."""

    async def send(self, outgoing: Outgoing) -> Sent:
        await super().send(outgoing)
        return Sent(self.name, "x" * 300)


async def test_an_overlong_provider_message_id_is_clipped_not_a_failed_write(
    db: Database, time: Time
) -> None:
    """The column holds 255. PostgreSQL's array cast cut the id silently; SQLite stored all
    300, so the same provider's webhooks (looked up by the id clipped to 255) matched on
    one database and not on the other. Both now keep the first 255, as tracking looks up."""
    [message_id] = await queue(db, time)
    sender = make_sender(db, [LongIds("alpha")], time)
    assert await sender.run_once() == 1
    stored = await row(db, message_id)
    assert (stored.status, stored.provider_message_id) == ("sent", "x" * 255)


@dataclass
class SlowFor(FakeProvider):
    """Takes ``slow_seconds`` for the messages in ``slow``, no time for the others."""

    slow: frozenset[str] = frozenset()
    slow_seconds: float = 0.0

    async def send(self, outgoing: Outgoing) -> Sent:
        if outgoing.message_id in self.slow:
            await asyncio.sleep(self.slow_seconds)
        return await super().send(outgoing)


async def test_a_failed_record_waits_for_the_sibling_chunks_before_the_pass_raises(
    db: Database, time: Time
) -> None:
    """Two chunks of one round: the fast one's write of ``sent`` fails (the database
    refuses it), the slow one is still in its provider call. ``gather`` raised at once and
    left the slow chunk running unsupervised, its outcome written after the pass had
    ended (or never, if the process stopped). Now the pass raises only once every sibling
    has recorded its outcome."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the failure is injected with a PostgreSQL trigger")
    slow_id, failing_id = await queue(db, time, count=2)
    await _refuse_sent_history(db, failing_id)
    try:
        provider = SlowFor("alpha", slow=frozenset({slow_id}), slow_seconds=0.5)
        sender = make_sender(db, [provider], time, concurrency=2)
        with pytest.raises(Exception, match="injected"):
            await sender.run_once()
        assert (await row(db, slow_id)).status == "sent"
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER refuse_sent ON corestone_email_events"))
            await conn.execute(text("DROP FUNCTION refuse_sent()"))


async def _refuse_sent_history(db: Database, message_id: str) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.status = 'sent' AND NEW.message_id = '{message_id}' THEN "
                "RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_sent BEFORE INSERT ON corestone_email_events "
                "FOR EACH ROW EXECUTE FUNCTION refuse_sent()"
            )
        )
