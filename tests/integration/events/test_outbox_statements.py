"""The outbox's statements on PostgreSQL: compiled once, and reading what a batch needs.

Found by the events benchmark (bench/events.py, docs/benchmarks.md "Issue 14 — events"):

- recording an event built a multi-VALUES ``INSERT`` in a CTE, which has no cache key:
  SQLAlchemy compiled it anew for every transaction, and the outbox cost 2.5x the
  one-row write it was added to;
- on a young table (no statistics yet, as right after a deploy) the claim was planned as
  a sort of every pending row, each checked against all earlier rows of its aggregate,
  and the mark as a scan of every pending row: both grew with the backlog, ~300 ms per
  batch of 500 at a backlog of 10,000, the relay's whole throughput.

The second is checked by what PostgreSQL reports it read (``EXPLAIN ANALYZE`` of the very
statements the store sent, replayed in a transaction that is rolled back), not by time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import default
from sqlalchemy.ext.asyncio import AsyncSession

from corestone.db import Database
from corestone.events import EventBus
from corestone.events.outbox import ClaimedEvent, OutboxStore

from .conftest import create_tables, note, registry


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url)
    await database.start()
    await create_tables(database)
    yield database
    await database.aclose()


async def test_recording_an_event_reuses_one_compiled_insert(pg: Database) -> None:
    """The second transaction that records events is served from the compiled-statement cache."""
    bus = EventBus(pg, registry())
    outcomes: list[Any] = []

    def seen(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: Any
    ) -> None:
        if "INSERT INTO corestone_events_outbox" in statement:
            outcomes.append(context.cache_hit)

    event.listen(pg.engine.sync_engine, "after_cursor_execute", seen)
    try:
        for n in range(3):
            await bus.record(note(n=n), note(aggregate="2", n=n))
    finally:
        event.remove(pg.engine.sync_engine, "after_cursor_execute", seen)

    assert len(outcomes) == 3
    assert outcomes[1:] == [default.CACHE_HIT, default.CACHE_HIT]


async def _rows_read(db: Database, work: Callable[[Any], Awaitable[object]]) -> int:
    """Rows of the outbox PostgreSQL read for ``work(session)``'s statements.

    ``work`` runs in a transaction that is rolled back; then its statements are replayed
    under ``EXPLAIN (ANALYZE)`` in another, also rolled back: every scan of the outbox
    counts the rows it returned and the rows it removed by its filter, times its loops.
    """
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: Any) -> None:
        sent.append((statement, params))

    async with db.engine.connect() as conn:
        event.listen(conn.sync_connection, "before_cursor_execute", capture)
        async with AsyncSession(bind=conn) as session:
            await work(session)
            await session.rollback()
    read = 0
    async with db.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        replay = driver.transaction()
        await replay.start()
        try:
            for statement, params in sent:
                if "corestone_events_outbox" not in statement:
                    await driver.execute(statement, *params)  # the lock and planner settings
                    continue
                plan = await driver.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, *params)
                found = plan if isinstance(plan, list) else json.loads(plan)  # codec or text
                read += _outbox_rows(found[0]["Plan"])
        finally:
            await replay.rollback()
    return read


def _outbox_rows(node: dict[str, Any]) -> int:
    rows = 0
    if node.get("Relation Name") == "corestone_events_outbox" and "Scan" in node["Node Type"]:
        seen = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        rows += seen * node.get("Actual Loops", 1)
    for child in node.get("Plans", []):
        rows += _outbox_rows(child)
    return rows


async def test_a_claim_and_a_mark_read_rows_for_the_batch_not_the_backlog(pg: Database) -> None:
    """Batches of 10 over 2,000 pending and 2,000 sent rows, no statistics: a few hundred rows read.

    The claim walks the pending rows in order until it has its batch (at least a page of
    200), the mark finds its rows by key; before, each read every pending row (and the
    claim each aggregate's earlier rows for each of them).
    """
    bus = EventBus(pg, registry())
    store = OutboxStore()
    for first in range(0, 4000, 500):
        async with pg.transaction():
            await bus.record(*(note(aggregate=str(i % 3), n=i) for i in range(first, first + 500)))
    async with pg.transaction() as tx:  # the oldest half published: the sent history
        await tx.session.execute(
            text(
                "UPDATE corestone_events_outbox SET status = 'sent', sent_at = now(), "
                "position = seq WHERE seq <= 2000"
            )
        )

    async def claim(session: Any) -> list[ClaimedEvent]:
        return await store.claim(session, owner="r", limit=10, lease=timedelta(seconds=30))

    claim_read = await _rows_read(pg, claim)
    claimed = await pg.run_in_transaction(lambda tx: claim(tx.session))
    mark_read = await _rows_read(pg, lambda s: store.mark_sent(s, claimed, owner="r"))

    assert [row.seq for row in claimed] == list(range(2001, 2011))
    assert claim_read <= 300
    assert mark_read <= 50


def test_the_inbox_claim_is_a_statement_sqlalchemy_compiles_once() -> None:
    """``insert().on_conflict_do_nothing()`` has no cache key, so the inbox claim was
    compiled anew for every event a consumer handled (a third of its CPU in bench
    events); the statement it runs now has one, so it is compiled once per process."""
    from corestone.events.inbox import _CLAIM

    assert _CLAIM._generate_cache_key() is not None
