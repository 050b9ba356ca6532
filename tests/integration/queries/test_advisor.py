"""The index advisor on real databases: suggestions proven by hypopg, drops, --apply."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from corestone.db.advisor import AdvisorOptions, IndexAdvisor
from corestone.db.workload import WorkloadQuery


def _query(statement: str, parameters: Any = None, fingerprint: str = "f1") -> WorkloadQuery:
    return WorkloadQuery(
        fingerprint, statement, statement, "select", 100, 1000.0, 10.0, parameters=parameters
    )


BY_A = _query("SELECT * FROM child WHERE a = $1", (5,))


async def test_an_unindexed_filter_gets_a_verified_suggestion(pg_engine: AsyncEngine) -> None:
    """A filter on child.a gets CREATE INDEX ... (a), with the cost measured before and after."""
    report = await IndexAdvisor(pg_engine).advise([BY_A])
    assert report.hypopg
    [suggestion] = report.suggestions
    assert suggestion.verified
    assert suggestion.columns == ("a",)
    assert suggestion.statement.startswith("CREATE INDEX CONCURRENTLY")
    assert suggestion.cost_before is not None
    assert suggestion.cost_after is not None
    assert suggestion.cost_after < suggestion.cost_before * 0.7
    assert suggestion.gain is not None
    assert "seq_scan" in suggestion.problems
    async with pg_engine.connect() as conn:  # nothing was created, nothing hypothetical left
        found = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'ix_%'"
        )
        assert found.scalar_one() == 0
        assert (
            await conn.exec_driver_sql("SELECT count(*) FROM hypopg_list_indexes")
        ).scalar_one() == 0


async def test_once_the_index_exists_the_suggestion_is_gone(pg_engine: AsyncEngine) -> None:
    """Creating the suggested index makes the next run suggest nothing for that query."""
    advisor = IndexAdvisor(pg_engine)
    [suggestion] = (await advisor.advise([BY_A])).suggestions
    async with pg_engine.begin() as conn:
        await conn.exec_driver_sql(suggestion.statement.replace(" CONCURRENTLY", ""))
        await conn.exec_driver_sql("ANALYZE child")
    assert (await advisor.advise([BY_A])).suggestions == ()


async def test_a_query_an_index_serves_gets_none(pg_engine: AsyncEngine) -> None:
    """A primary-key lookup, and a wider index's prefix, get no suggestion."""
    async with pg_engine.begin() as conn:
        await conn.exec_driver_sql("CREATE INDEX ix_wide ON child (b, a)")
    workload = [
        _query("SELECT * FROM child WHERE id = $1", (5,)),
        _query("SELECT * FROM child WHERE b = $1", ("b5",), "f2"),
    ]
    assert (await IndexAdvisor(pg_engine).advise(workload)).suggestions == ()


async def test_an_order_and_a_constant_make_a_partial_multicolumn_index(
    pg_engine: AsyncEngine,
) -> None:
    """Equality first, then the ORDER BY; a constant IS NULL becomes the partial WHERE."""
    query = _query(
        "SELECT * FROM child WHERE x = $1 AND deleted_at IS NULL ORDER BY b LIMIT 20", (3,)
    )
    [suggestion] = (await IndexAdvisor(pg_engine).advise([query])).suggestions
    assert suggestion.verified
    assert suggestion.columns == ("x", "b")
    assert suggestion.where == "deleted_at IS NULL"
    assert suggestion.statement.endswith("(x, b) WHERE deleted_at IS NULL")


async def test_a_gain_under_the_threshold_is_not_recommended(pg_engine: AsyncEngine) -> None:
    """With min_gain at 99.9% the same proven index is not good enough."""
    advisor = IndexAdvisor(pg_engine, AdvisorOptions(min_gain=0.999))
    assert (await advisor.advise([BY_A])).suggestions == ()


async def test_duplicate_prefix_and_unused_indexes_are_drop_candidates(
    pg_engine: AsyncEngine,
) -> None:
    """An exact duplicate, a prefix of a wider index and a never-scanned one are reported."""
    async with pg_engine.begin() as conn:
        await conn.exec_driver_sql("CREATE INDEX ix_a ON child (a)")
        await conn.exec_driver_sql("CREATE INDEX ix_a_again ON child (a)")
        await conn.exec_driver_sql("CREATE INDEX ix_b ON child (b)")
        await conn.exec_driver_sql("CREATE INDEX ix_b_x ON child (b, x)")
        await conn.exec_driver_sql("CREATE INDEX ix_y ON child (y)")
        await conn.exec_driver_sql("CREATE UNIQUE INDEX ux_name ON parent (name)")
    drops = {d.index: d for d in (await IndexAdvisor(pg_engine).advise([])).drops}
    assert drops["ix_a_again"].reason == "duplicate"
    assert drops["ix_a_again"].covered_by == "ix_a"
    assert drops["ix_b"].reason == "prefix"
    assert drops["ix_b"].covered_by == "ix_b_x"
    assert drops["ix_y"].reason == "unused"
    assert "ux_name" not in drops
    assert "child_pkey" not in drops


async def test_apply_creates_the_index_concurrently(pg_engine: AsyncEngine) -> None:
    """--apply runs CREATE INDEX CONCURRENTLY (outside a transaction); the index is valid."""
    advisor = IndexAdvisor(pg_engine)
    report = await advisor.advise([BY_A])
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(pg_engine.sync_engine, "before_cursor_execute", record)
    try:
        outcome = await advisor.apply(report)
    finally:
        event.remove(pg_engine.sync_engine, "before_cursor_execute", record)
    assert [error for _, error in outcome] == [None]
    assert any(s.startswith("CREATE INDEX CONCURRENTLY") for s in sent)
    async with pg_engine.connect() as conn:
        valid = await conn.exec_driver_sql(
            "SELECT ix.indisvalid FROM pg_index ix JOIN pg_class c ON c.oid = ix.indexrelid"
            " WHERE c.relname = 'ix_child_a'"
        )
        assert valid.scalar_one() is True


async def test_odd_names_are_quoted_in_every_statement(pg_engine: AsyncEngine) -> None:
    """A table and column named with spaces and quotes are proposed and applied, quoted."""
    async with pg_engine.begin() as conn:
        await conn.exec_driver_sql('CREATE TABLE "Odd ""T""" ("we ird" int, pad text)')
        await conn.exec_driver_sql(
            'INSERT INTO "Odd ""T""" SELECT g, repeat(\'x\', 50) FROM generate_series(1, 20000) g'
        )
        await conn.exec_driver_sql('ANALYZE "Odd ""T"""')
    query = _query('SELECT * FROM "Odd ""T""" WHERE "we ird" = $1', (7,))
    advisor = IndexAdvisor(pg_engine)
    report = await advisor.advise([query])
    [suggestion] = report.suggestions
    assert suggestion.table == 'Odd "T"'
    assert '"we ird"' in suggestion.statement
    assert [error for _, error in await advisor.apply(report)] == [None]
    assert (await advisor.advise([query])).suggestions == ()


async def test_without_hypopg_suggestions_are_unverified(engine: AsyncEngine) -> None:
    """SQLite (and PostgreSQL without hypopg): a flagged table's candidate, marked unverified."""
    query = _query(
        "SELECT * FROM child WHERE a = " + ("$1" if engine.dialect.name == "postgresql" else "?"),
        (5,),
    )
    report = await IndexAdvisor(engine).advise([query])
    assert not report.hypopg
    [suggestion] = report.suggestions
    assert not suggestion.verified
    assert suggestion.cost_before is None
    assert suggestion.columns == ("a",)
    assert [p.kind for p in report.problems["f1"]] == ["seq_scan"]
    assert await IndexAdvisor(engine).apply(report) == []


async def test_a_duplicate_index_is_reported_on_both_databases(engine: AsyncEngine) -> None:
    """Two indexes on the same column: the second is a drop candidate, on SQLite too."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE INDEX ix_1 ON child (a, b)")
        await conn.exec_driver_sql("CREATE INDEX ix_2 ON child (a, b)")
    drops = (await IndexAdvisor(engine).advise([])).drops
    assert [(d.index, d.reason, d.covered_by) for d in drops if d.reason != "unused"] == [
        ("ix_2", "duplicate", "ix_1")
    ]


async def test_a_statement_that_fails_to_plan_is_an_error_not_a_crash(
    pg_engine: AsyncEngine,
) -> None:
    """A workload entry naming a table that is gone is reported under errors; others go on."""
    workload = [_query("SELECT * FROM gone WHERE a = $1", (1,), "bad"), BY_A]
    report = await IndexAdvisor(pg_engine).advise(workload)
    assert "gone" in report.errors["bad"]
    assert [s.columns for s in report.suggestions] == [("a",)]


@pytest.mark.parametrize("operation", ["insert", "other"])
async def test_inserts_and_others_are_not_advised(pg_engine: AsyncEngine, operation: str) -> None:
    """Only SELECT, UPDATE and DELETE are planned for indexes."""
    query = WorkloadQuery(
        "f", "q", "SELECT * FROM child WHERE a = $1", operation, 1, 1, 1, parameters=(5,)
    )
    assert (await IndexAdvisor(pg_engine).advise([query])).suggestions == ()


async def test_a_normalised_text_is_verified_with_its_generic_plan(pg_engine: AsyncEngine) -> None:
    """A pg_stat_statements text (no values) is proven through its generic plan too."""
    query = _query("SELECT * FROM child WHERE a = $1 AND b = $2")
    [suggestion] = (await IndexAdvisor(pg_engine).advise([query])).suggestions
    assert suggestion.verified
    assert suggestion.columns[0] in ("a", "b")


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.02, 0.05, 0.1, 0.2])
async def test_a_cancelled_run_leaves_no_hypothetical_index_or_statement(
    postgres_url: str, pg_engine: AsyncEngine, delay: float
) -> None:
    """Cancelled at any await, advise raises CancelledError; the pooled connection it used
    is left without hypothetical indexes or prepared statements of the advisor's."""
    one = create_async_engine(postgres_url, pool_size=1, max_overflow=0)
    workload = [_query("SELECT * FROM child WHERE a = $1 AND b = $2"), BY_A]
    run = asyncio.ensure_future(IndexAdvisor(one).advise(workload))
    await asyncio.sleep(delay)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):  # anything else fails the test
        await run
    async with one.connect() as conn:
        left = await conn.exec_driver_sql("SELECT count(*) FROM hypopg_list_indexes")
        assert left.scalar_one() == 0
        prepared = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'corestone%'"
        )
        assert prepared.scalar_one() == 0
    await one.dispose()


async def test_an_invalid_index_left_by_a_failed_build_is_reported_not_created(
    pg_engine: AsyncEngine,
) -> None:
    """A concurrent build that failed left an INVALID index with the suggestion's name:
    apply's CREATE ... IF NOT EXISTS skips it, and apply says so instead of "created";
    the advisor lists it as a drop candidate."""
    async with pg_engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(Exception, match="could not create unique index"):
            await auto.exec_driver_sql("CREATE UNIQUE INDEX CONCURRENTLY ix_child_a ON child (a)")
    advisor = IndexAdvisor(pg_engine)
    report = await advisor.advise([BY_A])
    [suggestion] = report.suggestions
    assert " ix_child_a ON child " in suggestion.statement
    [(_, error)] = await advisor.apply(report)
    assert error is not None
    assert "INVALID" in error
    drops = {d.index: d for d in report.drops}
    assert drops["ix_child_a"].reason == "invalid"


async def test_another_index_with_the_name_is_not_taken_for_the_suggestion(
    pg_engine: AsyncEngine,
) -> None:
    """An index on other columns that happens to be named like the suggestion: apply says
    so rather than "created" (IF NOT EXISTS would skip it silently)."""
    async with pg_engine.begin() as conn:
        await conn.exec_driver_sql("CREATE INDEX ix_child_a ON parent (name)")
    advisor = IndexAdvisor(pg_engine)
    report = await advisor.advise([BY_A])
    [(_, error)] = await advisor.apply(report)
    assert error is not None
    assert "another index is named ix_child_a" in error


async def test_a_table_of_another_schema_is_not_taken_for_ours(engine: AsyncEngine) -> None:
    """archive.child, seq-scanned on a: no index is proposed on the current schema's child
    (which the query never reads), verified or not."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has attached databases, not schemas of one database")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE SCHEMA archive")
        await conn.exec_driver_sql("CREATE TABLE archive.child AS SELECT * FROM child")
        await conn.exec_driver_sql("ANALYZE archive.child")
    query = _query("SELECT * FROM archive.child WHERE a = $1", (5,))
    report = await IndexAdvisor(engine).advise([query])
    assert report.suggestions == ()
    same = await IndexAdvisor(engine).advise([_query("SELECT * FROM public.child WHERE a = $1")])
    assert [s.columns for s in same.suggestions] == [("a",)]


async def test_a_hypothetical_index_waits_no_longer_than_the_plan_timeout(
    postgres_url: str, pg_engine: AsyncEngine
) -> None:
    """A migration locks the table between the plan and hypopg_create_index (which opens
    the table): the advisor gives up at its statement_timeout and says so, instead of
    waiting for the lock (a report request, and every caller queued behind it, hung)."""
    taken, release = threading.Event(), threading.Event()

    async def hold_lock() -> None:
        conn = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE child IN ACCESS EXCLUSIVE MODE")
                taken.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        finally:
            await conn.close()

    holder = threading.Thread(target=asyncio.run, args=(hold_lock(),))

    def lock_before_hypopg(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if "hypopg_create_index" in statement and not holder.is_alive():
            holder.start()
            assert taken.wait(10)

    event.listen(pg_engine.sync_engine, "before_cursor_execute", lock_before_hypopg)
    try:
        report = await IndexAdvisor(pg_engine, AdvisorOptions(timeout_ms=300)).advise([BY_A])
    finally:
        event.remove(pg_engine.sync_engine, "before_cursor_execute", lock_before_hypopg)
        release.set()
        holder.join(30)
    assert report.suggestions == ()
    assert "statement timeout" in report.errors["f1"]
