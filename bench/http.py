"""http suite: taskboard's request path against a minimal FastAPI + SQLAlchemy app (issue 11).

``uv run python -m bench http [--quick]`` starts every server itself on 127.0.0.1 spare
ports, seeds them over HTTP, loads them one at a time with wrk and stops them (SIGTERM,
then SIGKILL), whatever happens:

- taskboard on the embedded default (SQLite in a temporary directory), one process;
- taskboard on PostgreSQL (a database ``bench_http_<random>``, created and dropped) and
  Redis (a cache namespace of its own, deleted after), one process, and ``--workers 2``
  when ``taskboard serve`` offers it;
- the minimal app (``bench/_http_minimal_app.py``) on its own table in the same database.

Operations: GET a task (cached), GET a task with taskboard's task cache off, a list of
20 after a cursor, create, PATCH with ``If-Match``; list 20 again at 64 connections for
the pool's steady state. Every PostgreSQL connection passes through a relay
(``bench/_http_proxy.py``) that counts round trips and new connections during each timed
run. A row that cannot run yet (no ``--workers``, no switch for the task cache) keeps
its keys with null figures, and its checks are not met, with a note.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from bench._http_checks import add_checks
from bench._http_load import Load, measure, wrk_path
from bench._http_proxy import PgProxy
from bench._http_rows import COLUMNS, NARROW, ROWS, WIDE, record, row_key
from bench._http_seed import (
    TASKS,
    minimal_operations,
    seed_minimal,
    seed_taskboard,
    taskboard_operations,
)
from bench._http_servers import (
    TASK_CACHE_OFF,
    ServerSpec,
    launch,
    minimal_spec,
    taskboard_spec,
    wait_ready,
    workers_supported,
)
from bench._http_stores import PG_HOST, PG_PORT, REDIS_URL, postgres_database, redis_namespace
from bench._report import Report

__all__ = ["run"]

_REQUESTS = {  # the row's operation → the seeded request that performs it
    "get": "get",
    "get_cached": "get",
    "get_uncached": "get",
    "list20": "list20",
    "create": "create",
    "patch": "patch",
}
_PHASES = (
    ("get", NARROW),
    ("list20", NARROW),
    ("create", NARROW),
    ("patch", NARROW),
    ("list20", WIDE),
)


@dataclass(frozen=True, slots=True)
class _Target:
    """One server to start, the relay in front of its database, and the rows it serves."""

    spec: ServerSpec
    proxy: PgProxy | None
    rows: tuple[tuple[str, str, int], ...]


async def run(quick: bool) -> Report:
    wrk_path()  # fail before starting anything when wrk is missing
    load_before = os.getloadavg()
    report = Report(suite="http", columns=COLUMNS)
    seconds, warmup_seconds = (1, 1) if quick else (10, 3)
    logs = Path(tempfile.mkdtemp(prefix="bench-http-"))
    failed = False
    try:
        async with AsyncExitStack() as stack:
            stack.enter_context(_cancelled_by_sigterm())
            loads = await _measure_all(
                stack, logs, seconds=seconds, warmup_seconds=warmup_seconds, quick=quick
            )
        failed = any(load.failed for load in loads.values())
    finally:
        if not failed:  # the servers' logs say why requests failed: kept only then
            shutil.rmtree(logs, ignore_errors=True)
    missing = record(report, loads)
    add_checks(report, loads, missing)
    load_after = os.getloadavg()
    report.notes += [
        f"wrk: 1 thread, {NARROW} connections ({WIDE} for the pool row), "
        f"{warmup_seconds} s warm-up ({'once per server' if quick else 'per row'}) then "
        f"{seconds} s timed; requests/s counts only 2xx/3xx answers",
        f"each server seeded with {TASKS} tasks (200-byte descriptions); GET cycles through "
        "100 of them, PATCH through 150 others (never two PATCHes of one task at once)",
        "DB round trips/req: Sync, Query and Flush messages the PostgreSQL relay saw during "
        "the timed run (read once the server drained) ÷ requests handled (completed + the one "
        "per connection in flight when wrk stopped); PG conns opened: connections the relay "
        "accepted then",
        f"the minimal app runs on corestone.web.serve, taskboard's server (uvicorn; uvloop "
        f"{'installed' if find_spec('uvloop') else 'absent'}, httptools "
        f"{'installed' if find_spec('httptools') else 'absent'}); wrk, the relay (in this "
        "process) and every server share this machine",
        f"load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end, "
        f"on {os.cpu_count()} CPUs",
        *(f"missing: {row} — {why}" for row, why in missing.items()),
    ]
    if failed:
        report.notes.append(f"some requests failed: the servers' logs are kept in {logs}")
    return report


@contextmanager
def _cancelled_by_sigterm() -> Iterator[None]:
    """SIGTERM cancels the suite like Ctrl-C does, so its servers and stores are cleaned up."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _measure_all(
    stack: AsyncExitStack, logs: Path, *, seconds: int, warmup_seconds: int, quick: bool
) -> dict[str, Load]:
    """Start every server at once, seed them all, then run the rows phase by phase.

    Within a phase (one operation at one concurrency) the minimal app goes first and the
    taskboards follow back to back, so a ratio compares runs seconds apart, not the two
    ends of the suite. Idle servers make no database round trips, so all stay up
    until the end and stop together.
    """
    targets = await _targets(stack, logs)
    servers = [launch(target.spec, logs) for target in targets]
    for server in servers:
        stack.push_async_callback(server.stop)
    await wait_ready(servers)
    seeds = await asyncio.gather(
        *(
            seed_taskboard(server.url)
            for target, server in zip(targets, servers, strict=True)
            if target.spec.name != "minimal_pg"
        )
    )
    taskboards = iter(seeds)
    requests = [
        minimal_operations(seed_minimal())
        if target.spec.name == "minimal_pg"
        else taskboard_operations(next(taskboards))
        for target in targets
    ]
    schedule = sorted(
        ((index, row) for index, target in enumerate(targets) for row in target.rows),
        key=lambda item: _PHASES.index((_REQUESTS[item[1][1]], item[1][2])),
    )
    loads: dict[str, Load] = {}
    warmed: set[int] = set()
    for index, (row, operation, connections) in schedule:
        proxy = targets[index].proxy
        wide = connections == WIDE
        # --quick warms each server once (pool, prepared statements, the cache); the pool
        # row is a steady phase, so it always has a warm-up of its own and at least 2 s.
        loads[row_key(row, operation, connections)] = await measure(
            servers[index].url,
            requests[index][_REQUESTS[operation]],
            connections=connections,
            seconds=max(seconds, 2) if wide else seconds,
            warmup_seconds=warmup_seconds if wide or not quick or index not in warmed else 0,
            counts=proxy.counts if proxy is not None else None,
        )
        warmed.add(index)
    await asyncio.gather(*(server.stop() for server in servers))
    return loads


async def _targets(stack: AsyncExitStack, logs: Path) -> list[_Target]:
    """The servers of this run; each PostgreSQL taskboard has its own database and
    cache namespace (ids repeat across databases), the minimal app shares taskboard's."""
    common = {
        "CORESTONE_SECRET_KEY": secrets.token_urlsafe(32),  # one key: cursors valid on all
        "CORESTONE_SHUTDOWN_TIMEOUT_SECONDS": "5",
    }

    async def database() -> str:
        return await stack.enter_async_context(postgres_database())

    async def pg_env(proxy: PgProxy, name: str) -> dict[str, str]:
        return {
            **common,
            "CORESTONE_DATABASE_URL": _pg_url(proxy.port, name),
            "CORESTONE_REDIS_URL": REDIS_URL,
            "CORESTONE_CACHE_NAMESPACE": await stack.enter_async_context(redis_namespace()),
        }

    async def relay() -> PgProxy:
        return await stack.enter_async_context(PgProxy(PG_HOST, PG_PORT))

    def rows_of(server: str, *, skip: str = "") -> tuple[tuple[str, str, int], ...]:
        return tuple(row for row in ROWS if row[0] == server and row[1] != skip)

    pg_proxy, minimal_proxy, shared = await relay(), await relay(), await database()
    targets = [
        _Target(
            minimal_spec(
                "minimal_pg", database_url=_pg_url(minimal_proxy.port, shared), rows=TASKS
            ),
            minimal_proxy,
            rows_of("minimal_pg"),
        ),
        _Target(
            taskboard_spec("taskboard_pg", logs / "pg", env=await pg_env(pg_proxy, shared)),
            pg_proxy,
            rows_of("taskboard_pg", skip="get_uncached"),
        ),
    ]
    if TASK_CACHE_OFF is not None:
        proxy = await relay()
        env = {**await pg_env(proxy, await database()), **TASK_CACHE_OFF}
        targets.append(
            _Target(
                taskboard_spec("taskboard_pg_nocache", logs / "nocache", env=env),
                proxy,
                (("taskboard_pg", "get_uncached", NARROW),),
            )
        )
    if workers_supported():
        proxy = await relay()
        env = await pg_env(proxy, await database())
        targets.append(
            _Target(
                taskboard_spec("taskboard_pg_workers2", logs / "workers2", env=env, workers=2),
                proxy,
                rows_of("taskboard_pg_workers2"),
            )
        )
    targets.append(
        _Target(
            taskboard_spec("taskboard_sqlite", logs / "sqlite", env=common),
            None,
            rows_of("taskboard_sqlite"),
        )
    )
    return targets


def _pg_url(port: int, database: str) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:{port}/{database}"
