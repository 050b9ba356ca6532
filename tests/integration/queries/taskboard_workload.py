"""taskboard's own workload under its query monitor, and the report it makes.

Seeds one workspace with ``tasks`` tasks through the bulk API, resets the monitor's
statistics (the seeding is not the workload), then lists the tasks the way the UI does
(filters, sorts, ``limit=50``) ``rounds`` times, and asks ``GET /api/ops/queries`` for
the report. The report in docs/queries.md is this module's output on PostgreSQL with
hypopg::

    uv run python -m tests.integration.queries.taskboard_workload postgresql+asyncpg://…/db
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from corestone import Infrastructure, Settings
from taskboard.app import create_app
from tests.integration.lifespan import lifespan_of

LISTS = ("status=done", "assignee_id={me}", "sort=-updated_at", "status=open&sort=title", "")


@asynccontextmanager
async def taskboard(
    url: str, mail: Path, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Infrastructure]]:
    """taskboard on ``url`` with its query monitor on (``options``: more settings), in
    process, and a client for it."""
    settings = Settings(
        database_url=url, env="test", email_file_dir=str(mail), query_monitor=True, **options
    )
    infra = Infrastructure(settings)
    app = create_app(infra)
    async with lifespan_of(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            yield client, infra


async def run(
    client: httpx.AsyncClient, infra: Infrastructure, *, tasks: int = 30_000, rounds: int = 20
) -> dict[str, str]:
    """Seed ``tasks`` tasks, reset the monitor, run ``rounds`` rounds of the task lists;
    return the auth headers of the user who did."""
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
    monitor = infra.db.monitor
    assert monitor is not None
    monitor.reset()
    for _ in range(rounds):
        for query in LISTS:
            path = f"/api/workspaces/{ws}/tasks?{query.format(me=me)}&limit=50"
            r = await client.get(path, headers=auth)
            assert r.status_code == 200, r.text
    return auth


async def report(client: httpx.AsyncClient, auth: dict[str, str], limit: int = 10) -> Any:
    """``GET /api/ops/queries``'s JSON."""
    r = await client.get(f"/api/ops/queries?limit={limit}", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


async def _main(url: str) -> None:
    from corestone._queries_cli import _report_lines

    async with taskboard(url, Path("var/mail")) as (client, infra):
        auth = await run(client, infra)
        found = await report(client, auth)
    print("\n".join(_report_lines(found)))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
