"""Bulk writes on tables whose names need quoting, on SQLite and PostgreSQL (issue 10 #11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import MetaData, String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db import Database, IdMixin, Repository
from corestone.observability import Metrics


class OddBase(DeclarativeBase):
    metadata = MetaData()


class MixedCase(IdMixin, OddBase):
    __tablename__ = "MixedCase"
    name: Mapped[str] = mapped_column(String(50))


class Spaced(IdMixin, OddBase):
    __tablename__ = 'odd "name" here'
    name: Mapped[str] = mapped_column(String(50))


class SchemaBase(DeclarativeBase):
    metadata = MetaData()


class InSchema(IdMixin, SchemaBase):
    __tablename__ = "Rows"
    __table_args__ = {"schema": "Odd Schema"}  # noqa: RUF012 - SQLAlchemy reads it as is
    name: Mapped[str] = mapped_column(String(50))


class MixedCaseRepository(Repository[MixedCase]):
    model = MixedCase


class SpacedRepository(Repository[Spaced]):
    model = Spaced


class InSchemaRepository(Repository[InSchema]):
    model = InSchema


class Inserts:
    """Counts INSERT statements: on PostgreSQL create_many sends rows by COPY instead."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            self.count += 1


async def _database(url: str, metadata: MetaData, schema: str | None = None) -> Database:
    database = Database(url, metrics=Metrics())
    await database.start()
    async with database.engine.begin() as conn:
        if schema is not None:
            await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await conn.run_sync(metadata.create_all)
    return database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await _database(database_url, OddBase.metadata)
    yield database
    await database.aclose()


@pytest.mark.parametrize("repository", [MixedCaseRepository, SpacedRepository])
async def test_create_many_on_a_table_name_that_needs_quoting(
    db: Database, repository: type[Repository[Any]]
) -> None:
    """create_many works on a table named in mixed case, or with a space and a quote."""
    inserts = Inserts(db)
    async with db.transaction() as tx:
        ids = await repository(tx).create_many([{"name": f"n{i}"} for i in range(3)])
    async with db.transaction() as tx:
        rows = await repository(tx).get_many(ids)
    assert [row.name for row in rows] == ["n0", "n1", "n2"]
    if db.dialect == "postgresql":
        assert inserts.count == 0  # the COPY path, with the sequence found


async def test_create_many_on_a_schema_qualified_table(postgres_url: str) -> None:
    """create_many works on a mixed-case table in a schema whose name has a space."""
    db = await _database(postgres_url, InSchema.metadata, schema="Odd Schema")
    try:
        inserts = Inserts(db)
        async with db.transaction() as tx:
            ids = await InSchemaRepository(tx).create_many([{"name": "a"}, {"name": "b"}])
        async with db.transaction() as tx:
            assert [r.name for r in await InSchemaRepository(tx).get_many(ids)] == ["a", "b"]
        assert inserts.count == 0
    finally:
        await db.aclose()
