"""taskboard's own workload, recorded statement by statement, for the query report.

Seeds one workspace with ``tasks`` tasks through the bulk API, then runs the task list
the way the UI does (filters, sorts, ``limit=50``) ``rounds`` times while an engine
event listener records each statement text with its calls, time and last values: the
workload the query monitor collects once it runs in the process. The docs' report
(docs/queries-advisor.md) is this module's output on PostgreSQL with hypopg::

    uv run python -m tests.integration.queries.taskboard_workload postgresql+asyncpg://…/db
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from corestone import Infrastructure, Settings
from corestone.db.workload import WorkloadQuery
from taskboard.app import create_app

LISTS = ("status=done", "assignee_id={me}", "sort=-updated_at", "status=open&sort=title", "")
_STARTED = "_workload_started"


@contextmanager
def recording(engine: AsyncEngine) -> Iterator[list[WorkloadQuery]]:
    """Record what ``engine`` sends inside the block; the list fills when it ends."""
    seen: dict[str, list[Any]] = {}
    sync = engine.sync_engine

    def before(*args: Any) -> None:
        setattr(args[4], _STARTED, time.perf_counter())

    def after(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, context: Any, *_: Any
    ) -> None:
        started = getattr(context, _STARTED, None)
        if started is None:  # began before the recording did
            return
        elapsed = (time.perf_counter() - started) * 1000
        entry = seen.setdefault(statement, [0, 0.0, parameters])
        entry[0] += 1
        entry[1] += elapsed
        entry[2] = parameters

    event.listen(sync, "before_cursor_execute", before)
    event.listen(sync, "after_cursor_execute", after)
    found: list[WorkloadQuery] = []
    try:
        yield found
    finally:
        event.remove(sync, "before_cursor_execute", before)
        event.remove(sync, "after_cursor_execute", after)
    for n, (statement, (calls, total, parameters)) in enumerate(seen.items(), 1):
        head = statement.lstrip(" (").split(None, 1)[0].lower()
        operation = head if head in ("select", "insert", "update", "delete") else "other"
        query = " ".join(statement.split())
        found.append(
            WorkloadQuery(
                f"s{n}", query, statement, operation, calls, total, total / calls,
                parameters=parameters,
            )
        )  # fmt: skip


@asynccontextmanager
async def taskboard(
    url: str, mail: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Infrastructure]]:
    """taskboard on ``url``, in process, and a client for it."""
    infra = Infrastructure(Settings(database_url=url, env="test", email_file_dir=str(mail)))
    app = create_app(infra)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            yield client, infra


async def run(
    client: httpx.AsyncClient, infra: Infrastructure, *, tasks: int = 30_000, rounds: int = 20
) -> list[WorkloadQuery]:
    """Seed ``tasks`` tasks, then record ``rounds`` rounds of the task lists."""
    r = await client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    me = r.json()["user"]["id"]
    ws = (await client.post("/api/workspaces", json={"name": "Big"}, headers=auth)).json()["id"]
    statuses = ("open", "in_progress", "done")
    for batch in range(0, tasks, 500):
        items = [
            {
                "title": f"task {n}",
                "status": statuses[n % 3],
                "assignee_id": me if n % 50 == 0 else None,
            }
            for n in range(batch, min(batch + 500, tasks))
        ]
        r = await client.post(
            f"/api/workspaces/{ws}/tasks/bulk", json={"items": items}, headers=auth
        )
        assert r.status_code == 201, r.text
    async with infra.db.engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")
        await conn.commit()
    with recording(infra.db.engine) as workload:
        for _ in range(rounds):
            for query in LISTS:
                path = f"/api/workspaces/{ws}/tasks?{query.format(me=me)}&limit=50"
                r = await client.get(path, headers=auth)
                assert r.status_code == 200, r.text
    return workload


async def _main(url: str) -> None:
    from corestone._queries_cli import _report_lines
    from corestone.db.report import ReportOptions, build_report

    async with taskboard(url, Path("var/mail")) as (client, infra):
        workload = await run(client, infra)
        report = await build_report(
            infra.db.engine,
            workload=workload,
            options=ReportOptions.from_settings(infra.settings, limit=10),
        )
    report["sources"]["monitor"] = "statements recorded in process (engine events)"
    print("\n".join(_report_lines(report)))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
