"""pg_stat_statements as the advisor's workload, on a PostgreSQL that preloads it.

.ci/run loads the library (``shared_preload_libraries``, one restart of PostgreSQL);
where it is not loaded the test skips locally and fails under ``CI=true``, as a missing
server does.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from corestone.db.report import build_report
from corestone.db.workload import pg_stat_statements_status, read_pg_stat_statements

BY_B = "SELECT id, b FROM child WHERE b = $1"


async def _require_the_view(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        why = await pg_stat_statements_status(conn)
        if why == "CREATE EXTENSION pg_stat_statements has not been run in this database":
            await conn.exec_driver_sql("CREATE EXTENSION pg_stat_statements")
            why = None
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"pg_stat_statements must answer under CI: {why}")
        pytest.skip(why)


async def test_a_query_run_here_is_read_back_with_its_calls(pg_engine: AsyncEngine) -> None:
    """Seven runs of one filter with seven values are one pg_stat_statements entry, its
    text normalised to $1, with the calls counted, this database's only."""
    await _require_the_view(pg_engine)
    async with pg_engine.connect() as conn:
        for value in range(7):
            await conn.exec_driver_sql("SELECT id, b FROM child WHERE b = $1", (f"b{value}",))
        workload = await read_pg_stat_statements(conn, limit=50)

    assert workload is not None
    [entry] = [q for q in workload if q.query == BY_B]
    assert entry.calls >= 7
    assert entry.operation == "select"
    assert entry.source == "pg_stat_statements"


async def test_the_report_proves_an_index_for_a_query_only_the_view_saw(
    pg_engine: AsyncEngine,
) -> None:
    """With no monitor in this process, the report's workload is the view: the filter on
    child.b gets a hypopg-proven suggestion through its generic plan, and the view is
    reported as answering."""
    await _require_the_view(pg_engine)
    async with pg_engine.connect() as conn:
        for value in range(7):
            await conn.exec_driver_sql("SELECT id, b FROM child WHERE b = $1", (f"b{value}",))

    report = await build_report(pg_engine)

    assert report["sources"]["pg_stat_statements"] == "ok"
    proven = [s for s in report["suggestions"] if s["columns"] == ["b"] and s["verified"]]
    assert proven, report["suggestions"]
    assert proven[0]["cost_after"] < proven[0]["cost_before"]
