"""The query report on taskboard's own workload: a suggestion hypopg verified, then gone."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from corestone.db.advisor import IndexAdvisor
from corestone.db.report import ReportOptions, build_report
from tests.integration.queries.taskboard_workload import run, taskboard


async def test_taskboard_lists_get_a_verified_index(postgres_url: str, tmp_path: Path) -> None:
    """Sorted task lists of a large workspace get a proven index on (workspace_id, …);
    once --apply created it, the next report does not suggest it again."""
    setup = create_async_engine(postgres_url)
    async with setup.begin() as conn:
        await conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS hypopg")
    await setup.dispose()
    async with taskboard(postgres_url, tmp_path / "mail") as (client, infra):
        workload = await run(client, infra, tasks=6_000, rounds=2)
        options = ReportOptions.from_settings(infra.settings, limit=10)
        report = await build_report(infra.db.engine, workload=workload, options=options)
        on_tasks = [s for s in report["suggestions"] if s["table"] == "tasks"]
        assert on_tasks, report["suggestions"]
        first = on_tasks[0]
        assert first["verified"] is True
        assert first["columns"][0] == "workspace_id"
        assert first["where"] == "deleted_at IS NULL"
        assert first["gain"] >= options.advisor.min_gain
        advisor = IndexAdvisor(infra.db.engine, options.advisor)
        result = await advisor.advise(workload)
        assert [error for _, error in await advisor.apply(result)] == [None] * len(
            [s for s in result.suggestions if s.verified]
        )
        again = await build_report(infra.db.engine, workload=workload, options=options)
        assert first["statement"] not in {s["statement"] for s in again["suggestions"]}
