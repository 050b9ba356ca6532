"""Plans captured on both databases and each named problem found on a real plan."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from corestone.db._catalog import Catalog, read_catalog
from corestone.db.plans import Plan, analyse, explain


def _p(engine: AsyncEngine, n: int = 1) -> str:
    return f"${n}" if engine.dialect.name == "postgresql" else "?"


async def _problems(
    engine: AsyncEngine, statement: str, parameters: tuple[object, ...] | None, **kw: bool
) -> tuple[Plan, list[tuple[str, str | None, tuple[str, ...]]]]:
    async with engine.connect() as conn:
        catalog: Catalog = await read_catalog(conn)
        await conn.rollback()
        plan = await explain(conn, statement, parameters, **kw)
    found = analyse(plan, statement, catalog)
    return plan, [(p.kind, p.table, p.columns) for p in found]


async def test_a_filter_on_an_unindexed_column_is_a_seq_scan(engine: AsyncEngine) -> None:
    """A selective filter on an unindexed column of a large table is named seq_scan."""
    plan, found = await _problems(engine, f"SELECT * FROM child WHERE a = {_p(engine)}", (5,))
    assert ("seq_scan", "child", ("a",)) in found
    assert plan.lines()


async def test_an_order_no_index_serves_is_a_sort(engine: AsyncEngine) -> None:
    """ORDER BY an unindexed column of many rows is named sort, with the column."""
    statement = f"SELECT * FROM child WHERE id > {_p(engine)} ORDER BY b LIMIT 10"
    _, found = await _problems(engine, statement, (5,))
    assert ("sort", "child", ("b",)) in found


async def test_a_join_on_an_unindexed_foreign_key_is_named(engine: AsyncEngine) -> None:
    """A join through child.parent_id (a foreign key no index leads) is named; an index ends it."""
    statement = (
        f"SELECT * FROM child c JOIN parent p ON c.parent_id = p.id WHERE p.name = {_p(engine)}"
    )
    _, found = await _problems(engine, statement, ("p5",))
    assert ("unindexed_foreign_key", "child", ("parent_id",)) in found
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE INDEX ix_child_parent ON child (parent_id)")
    _, after = await _problems(engine, statement, ("p5",))
    assert not [f for f in after if f[0] == "unindexed_foreign_key"]


async def test_an_indexed_lookup_has_no_problem(engine: AsyncEngine) -> None:
    """A primary-key lookup is not a problem at all."""
    _, found = await _problems(engine, f"SELECT * FROM child WHERE id = {_p(engine)}", (5,))
    assert found == []


async def test_a_misestimate_is_named_with_analyze(postgres_url: str, engine: AsyncEngine) -> None:
    """Correlated columns: the planner expects ~2 rows, gets 200; ANALYZE names it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL plans carry row estimates and actual rows")
    statement = "SELECT * FROM child WHERE x = $1 AND y = $2"
    plan, found = await _problems(engine, statement, (7, 7), analyze=True)
    assert plan.analyzed
    assert ("misestimate", "child", ()) in found
    plain, without = await _problems(engine, statement, (7, 7))
    assert not plain.analyzed
    assert not [f for f in without if f[0] == "misestimate"]


async def test_analyze_never_runs_a_write(engine: AsyncEngine) -> None:
    """Asked to ANALYZE an UPDATE, explain only plans it: no row changes."""
    statement = f"UPDATE child SET a = -1 WHERE id = {_p(engine)}"
    plan, _ = await _problems(engine, statement, (3,), analyze=True)
    assert not plan.analyzed
    async with engine.connect() as conn:
        value = (await conn.exec_driver_sql("SELECT a FROM child WHERE id = 3")).scalar_one()
    assert value == 3


async def test_a_normalised_text_gets_its_generic_plan(engine: AsyncEngine) -> None:
    """A pg_stat_statements text ($1, no values) is planned generically, not rejected."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite texts from the monitor always come with their values")
    plan, found = await _problems(engine, "SELECT * FROM child WHERE a = $1 AND b = $2", None)
    assert plan.generic
    assert [f[0] for f in found] == ["seq_scan"]
    async with engine.connect() as conn:  # the prepared statement did not leak
        left = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'corestone%'"
        )
        assert left.scalar_one() == 0


async def test_a_plan_over_its_timeout_is_cancelled(engine: AsyncEngine) -> None:
    """ANALYZE of a long SELECT stops at the statement_timeout; the connection goes on."""
    if engine.dialect.name != "postgresql":
        pytest.skip("EXPLAIN QUERY PLAN never runs the statement")
    async with engine.connect() as conn:
        with pytest.raises(DBAPIError):
            await explain(
                conn,
                "SELECT count(*) FROM generate_series(1, 100000000)",
                analyze=True,
                timeout_ms=50,
            )
        assert (await conn.exec_driver_sql("SELECT 1")).scalar_one() == 1


@pytest.mark.parametrize(
    "call", ["pg_try_advisory_lock(4242)", "pg_advisory_lock_shared(4242)", "bump_counter()"]
)
async def test_analyze_never_runs_a_volatile_function(engine: AsyncEngine, call: str) -> None:
    """ANALYZE of a SELECT calling a volatile function (a session advisory lock, which
    outlives the rollback; a user function that writes) only plans it: no lock held on
    the pooled connection, no row written."""
    if engine.dialect.name != "postgresql":
        pytest.skip("EXPLAIN QUERY PLAN never runs the statement")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE bumps (n INTEGER)")
        await conn.exec_driver_sql(
            "CREATE FUNCTION bump_counter() RETURNS integer LANGUAGE sql VOLATILE"
            " AS 'INSERT INTO bumps VALUES (1) RETURNING n'"
        )
    async with engine.connect() as conn:
        plan = await explain(conn, f"SELECT {call} FROM child WHERE id = $1", (1,), analyze=True)
        assert not plan.analyzed
        locks = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        assert locks.scalar_one() == 0
        await conn.rollback()


async def test_analyze_still_runs_a_select_of_stable_functions(engine: AsyncEngine) -> None:
    """A SELECT calling only stable or immutable functions (lower, now) is still analysed."""
    if engine.dialect.name != "postgresql":
        pytest.skip("EXPLAIN QUERY PLAN never runs the statement")
    statement = "SELECT lower(b), now(), to_char(now(), 'YYYY') FROM child WHERE id = $1"
    plan, _ = await _problems(engine, statement, (1,), analyze=True)
    assert plan.analyzed
