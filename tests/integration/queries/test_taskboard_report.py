"""GET /api/ops/queries on taskboard's own workload, with its monitor: a proven index."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from corestone.db.advisor import IndexAdvisor
from corestone.db.workload import from_statistics
from tests.integration.queries.taskboard_workload import report, run, taskboard


async def test_taskboard_lists_get_a_verified_index(postgres_url: str, tmp_path: Path) -> None:
    """The monitor's statistics of sorted task lists give a proven (workspace_id, …) index
    WHERE deleted_at IS NULL; every top statement plans with its real values; once
    applied, the next report does not suggest the index again."""
    setup = create_async_engine(postgres_url)
    async with setup.begin() as conn:
        await conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS hypopg")
    await setup.dispose()
    async with taskboard(postgres_url, tmp_path / "mail", slow_query_ms=0) as (client, infra):
        auth = await run(client, infra, tasks=6_000, rounds=2)
        found = await report(client, auth)
        assert found["sources"]["monitor"] == "ok"
        assert found["plans"]  # every statement is "slow": each of the top is planned
        assert [p["error"] for p in found["plans"]] == [None] * len(found["plans"])
        assert found["errors"] == {}
        assert found["top"]
        assert all(q["source"] == "monitor" for q in found["top"])
        on_tasks = [s for s in found["suggestions"] if s["table"] == "tasks"]
        assert on_tasks, found["suggestions"]
        first = on_tasks[0]
        assert first["verified"] is True
        assert first["columns"][0] == "workspace_id"
        assert first["where"] == "deleted_at IS NULL"
        assert first["gain"] >= infra.settings.query_advisor_min_gain
        assert set(first["fingerprints"]) <= {q["fingerprint"] for q in found["top"]}
        monitor = infra.db.monitor
        assert monitor is not None
        advisor = IndexAdvisor(infra.db.engine)
        result = await advisor.advise(from_statistics(monitor.statistics()))
        outcome = await advisor.apply(result)
        assert outcome
        assert [error for _, error in outcome] == [None] * len(outcome)
        again = await report(client, auth)
        assert first["statement"] not in {s["statement"] for s in again["suggestions"]}


async def test_on_sqlite_slow_statements_get_plans_and_problems(tmp_path: Path) -> None:
    """SQLite, no hypopg: the monitor's samples are planned with EXPLAIN QUERY PLAN, the
    sorted list's temp b-tree is named, and its index is offered unverified."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"
    async with taskboard(url, tmp_path / "mail", slow_query_ms=0) as (client, infra):
        auth = await run(client, infra, tasks=1_500, rounds=1)
        found = await report(client, auth, limit=20)
    assert found["dialect"] == "sqlite"
    assert found["hypopg"] is False
    assert found["plans"]
    assert all(p["error"] is None for p in found["plans"])
    assert any(p["plan"]["lines"] for p in found["plans"])
    problems = [p for ps in found["plan_problems"].values() for p in ps]
    assert any(p["kind"] == "sort" and p["table"] == "tasks" for p in problems)
    unverified = [s for s in found["suggestions"] if s["table"] == "tasks"]
    assert unverified
    assert not any(s["verified"] for s in unverified)
