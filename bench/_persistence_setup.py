"""The persistence suite's fixtures: a throwaway database, the task table, its rows, timers.

The table is what a task tracker stores (bigint identity id, workspace, title, a
description of a few hundred bytes, status, version, two timestamps). Every contender
writes the same rows into the same table, so the figures differ only by the code path.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import String, Text, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Mapped, mapped_column

from corestone.db import (
    AuditedMixin,
    Base,
    IdMixin,
    Repository,
    TenantMixin,
    TimestampMixin,
    VersionMixin,
    utc_now,
)

__all__ = [
    "SERVER_URL",
    "SIGNING_KEY",
    "WORKSPACE",
    "AuditedTask",
    "AuditedTaskRepository",
    "BenchDatabase",
    "BenchTask",
    "PeerTaskRepository",
    "Stopwatch",
    "TaskRepository",
    "bench_database",
    "copy_columns",
    "copy_records",
    "median_us",
    "task_rows",
]

SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
WORKSPACE = 1
SIGNING_KEY = b"bench-persistence-cursor-key"


class BenchTask(IdMixin, TimestampMixin, TenantMixin, VersionMixin, Base):
    """The benchmark's task row: no soft delete and no audit, so every path does the same."""

    __tablename__ = "bench_tasks"

    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")


class AuditedTask(IdMixin, TimestampMixin, TenantMixin, VersionMixin, AuditedMixin, Base):
    """The same row with an audit log, for the audited-update overhead."""

    __tablename__ = "bench_audited_tasks"

    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")


class TaskRepository(Repository[BenchTask]):
    model = BenchTask
    filterable = ("status",)
    sortable = ("created_at",)
    default_sort = ()  # the id tiebreak alone: ORDER BY id, like the raw statements
    max_limit = 500


class AuditedTaskRepository(Repository[AuditedTask]):
    model = AuditedTask


class PeerTaskRepository(SQLAlchemyAsyncRepository[BenchTask]):
    """advanced-alchemy's repository over the same model, with its defaults."""

    model_type = BenchTask


def copy_columns() -> list[str]:
    return ["workspace_id", "title", "description", "status", "version", "created_at", "updated_at"]


_STATUSES = ("open", "in_progress", "blocked", "done")
_WORDS = (
    "review", "the", "deployment", "plan", "and", "update",
    "the", "runbook", "before", "the", "release", "window",
)  # fmt: skip


def task_rows(count: int) -> list[dict[str, Any]]:
    """``count`` distinct task rows as dicts: what an API handler would have after parsing."""
    rows = []
    for i in range(count):
        words = " ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(24))
        rows.append(
            {
                "workspace_id": WORKSPACE,
                "title": f"Task {i}: {_WORDS[i % len(_WORDS)]} {_WORDS[(i * 7) % len(_WORDS)]}",
                "description": f"{words} (#{i})",
                "status": _STATUSES[i % len(_STATUSES)],
            }
        )
    return rows


def copy_records(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows as COPY/executemany records, with the defaults the ORM paths fill in."""
    now: datetime = utc_now()
    return [
        (r["workspace_id"], r["title"], r["description"], r["status"], 1, now, now) for r in rows
    ]


class Stopwatch:
    """Collects per-call nanoseconds; the median resists the odd GC pause or checkpoint."""

    def __init__(self) -> None:
        self.samples: list[int] = []

    async def time(self, call: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter_ns()
        result = await call()
        self.samples.append(time.perf_counter_ns() - started)
        return result


def median_us(watch: Stopwatch) -> float:
    return statistics.median(watch.samples) / 1000


class BenchDatabase:
    """A fresh PostgreSQL database with the tables, an engine and a raw asyncpg DSN."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(False)

    def session(self) -> AsyncSession:
        return self.sessions()

    async def truncate(self, table: str = "bench_tasks") -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {table} RESTART IDENTITY"))

    async def analyze(self) -> None:
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE bench_tasks"))

    async def raw(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)


@asynccontextmanager
async def bench_database() -> AsyncIterator[BenchDatabase]:
    """Create ``bench_persistence_<random>``, yield it, and drop it even on error."""
    name = f"bench_persistence_{secrets.token_hex(4)}"
    server = make_url(SERVER_URL)
    admin_dsn = server.set(drivername="postgresql").render_as_string(False)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = server.set(database=name).render_as_string(False)
        engine = create_async_engine(url, pool_size=5)
        try:
            tables = [
                Base.metadata.tables[t]
                for t in ("bench_tasks", "bench_audited_tasks", "corestone_audit_log")
            ]
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all, tables=tables)
            yield BenchDatabase(url, engine)
        finally:
            await engine.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
