"""OutboxStore's fenced writes and claims on SQLite and PostgreSQL (one statement on the latter)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from corestone.db import Database
from corestone.email.outbox import EmailStatus, OutboxStore, Outcome

from .conftest import OUTBOX, Time, history, make_sender, queue, row
from .fakes import FakeProvider

LEASE = timedelta(seconds=30)


async def test_a_per_row_value_is_written_only_where_given_and_each_detail_on_its_event(
    db: Database, time: Time
) -> None:
    """``per_row`` may name some rows only: the others keep their value (``UPDATE … FROM``)."""
    ids = await queue(db, time, 3)
    store = OutboxStore(now=time.wall)
    async with db.transaction() as tx:
        await tx.session.execute(update(OUTBOX).values(provider_message_id="before"))
        rows = await store.claim_due(
            tx.session, owner="me", limit=5, lease=LEASE, pg=db.dialect == "postgresql"
        )
    async with db.transaction() as tx:
        held = await store.finish(
            tx.session, rows, Outcome(EmailStatus.SENT, "alpha"), owner="me",
            per_row={"provider_message_id": {ids[0]: "p-0", ids[1]: None}},
            details={ids[1]: "second"},
        )  # fmt: skip
    assert held == set(ids)
    stored = [await row(db, i) for i in ids]
    assert [r.provider_message_id for r in stored] == ["p-0", None, "before"]
    assert {r.status for r in stored} == {"sent"}
    assert {r.lease_owner for r in stored} == {None}
    assert (await history(db, ids[1]))[-1] == ("sent", "alpha", "second")
    assert (await history(db, ids[0]))[-1] == ("sent", "alpha", None)


async def test_a_fenced_write_skips_rows_of_another_owner_and_writes_no_event_for_them(
    db: Database, time: Time
) -> None:
    """A row another owner holds is left as it is by the one-statement fenced write, and
    gets no history row: only what the write changed is recorded."""
    ids = await queue(db, time, 2)
    store = OutboxStore(now=time.wall)
    pg = db.dialect == "postgresql"
    async with db.transaction() as tx:
        [first] = await store.claim_due(tx.session, owner="one", limit=1, lease=LEASE, pg=pg)
        [second] = await store.claim_due(tx.session, owner="two", limit=1, lease=LEASE, pg=pg)
    async with db.transaction() as tx:
        held = await store.begin_attempt(
            tx.session, [first, second], owner="one", provider="alpha", lease=LEASE
        )
    assert held == {first.id}
    assert [s for s, _, _ in await history(db, second.id)] == ["queued"]
    assert [s for s, _, _ in await history(db, first.id)] == ["queued", "sending"]
    assert {first.id, second.id} == set(ids)


async def test_more_expired_sending_rows_than_a_batch_are_resolved_pass_after_pass(
    db: Database, time: Time
) -> None:
    """Expired leases are looked for once a poll interval, and at once again after a full batch."""
    ids = await queue(db, time, 3)
    store = OutboxStore(now=time.wall)
    async with db.transaction() as tx:
        rows = await store.claim_due(
            tx.session, owner="dead", limit=5, lease=LEASE, pg=db.dialect == "postgresql"
        )
        await store.begin_attempt(tx.session, rows, owner="dead", provider="alpha", lease=LEASE)
    alpha = FakeProvider("alpha")
    sender = make_sender(db, [alpha], time, batch=2, poll_seconds=3600.0)
    time.advance(31)
    assert await sender.run_once() == 2  # a full batch of stale rows: look again next pass
    assert await sender.run_once() == 1  # without waiting for the poll interval
    assert {(await row(db, i)).status for i in ids} == {"unknown"}
    assert alpha.calls == 0
