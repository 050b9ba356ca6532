"""The http suite's peer: a minimal FastAPI + SQLAlchemy (asyncpg) app, as a new user writes it.

No auth, no cache, no audit: ``GET /tasks/{id}`` (one row by primary key), ``GET
/tasks?after=&limit=20`` (a keyset page) and ``POST /tasks`` (one insert), on its own
table ``bench_http_minimal_tasks`` shaped like taskboard's tasks, in the database at
``BENCH_HTTP_DATABASE_URL``. At start-up it recreates the table with
``BENCH_HTTP_ROWS`` rows (ids 1..n). It is served by :func:`corestone.web.serve`, the
server taskboard runs on, so both have the same server settings (HTTP parser, event
loop, no access log) and the figures differ by the request path only. The pool has
taskboard's default size (10 + 10 overflow).

Run: ``python -m bench._http_minimal_app --port P`` (the suite does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import BigInteger, DateTime, Identity, String, Text, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.observability.health import HealthRegistry
from corestone.web import serve

__all__ = ["create_app", "main"]


class _Base(DeclarativeBase):
    pass


class MinimalTask(_Base):
    __tablename__ = "bench_http_minimal_tasks"
    __mapper_args__: dict[str, Any] = {"eager_defaults": True}  # noqa: RUF012 (SQLAlchemy's)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="open")
    assignee_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TaskIn(BaseModel):
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=10_000)] = ""


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    workspace_id: int
    title: str
    description: str
    status: str
    assignee_id: int | None
    version: int
    created_at: datetime
    updated_at: datetime


class TaskList(BaseModel):
    items: list[TaskOut]
    next_cursor: int | None


def create_app(database_url: str, rows: int) -> FastAPI:
    """The app; its lifespan (re)creates and fills the table, and disposes of the pool."""
    engine = create_async_engine(database_url, pool_size=10, max_overflow=10)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await _fill(engine, rows)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "pass"}

    @app.get("/tasks/{task_id}")
    async def get_task(task_id: int) -> TaskOut:
        async with sessions() as session:
            task = await session.get(MinimalTask, task_id)
        if task is None:
            raise HTTPException(status_code=404)
        return TaskOut.model_validate(task)

    @app.get("/tasks")
    async def list_tasks(
        after: int = 0, limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> TaskList:
        query = select(MinimalTask).where(MinimalTask.id > after).order_by(MinimalTask.id)
        async with sessions() as session:
            found = (await session.scalars(query.limit(limit))).all()
        items = [TaskOut.model_validate(task) for task in found]
        return TaskList(items=items, next_cursor=items[-1].id if len(items) == limit else None)

    @app.post("/tasks", status_code=201)
    async def create_task(body: TaskIn) -> TaskOut:
        async with sessions.begin() as session:
            task = MinimalTask(workspace_id=1, **body.model_dump())
            session.add(task)
        return TaskOut.model_validate(task)

    return app


async def _fill(engine: AsyncEngine, rows: int) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.drop_all)
        await conn.run_sync(_Base.metadata.create_all)
        await conn.execute(
            text(
                "INSERT INTO bench_http_minimal_tasks "
                "(workspace_id, title, description, status, version) "
                "SELECT 1, 'task ' || n, repeat('x', 200), 'open', 1 "
                "FROM generate_series(1, :rows) AS n"
            ),
            {"rows": rows},
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._http_minimal_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ["BENCH_HTTP_DATABASE_URL"], int(os.environ["BENCH_HTTP_ROWS"]))
    asyncio.run(serve(app, health=HealthRegistry(), host="127.0.0.1", port=args.port))


if __name__ == "__main__":
    main()
