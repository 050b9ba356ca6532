"""COPY (create_many, upsert_many on PostgreSQL) stores what INSERT stores, value for value."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import JSON, Numeric, String, UniqueConstraint, text
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db import Database, IdMixin, Repository, TenantMixin
from tests.integration.repo_models import database_for, workspace


class _Base(AsyncAttrs, DeclarativeBase):
    pass


class Blob(IdMixin, TenantMixin, _Base):
    __tablename__ = "copy_blobs"
    __table_args__ = (UniqueConstraint("workspace_id", "code"),)

    code: Mapped[str] = mapped_column(String(20))
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(10, 2), nullable=True)


class BlobRepository(Repository[Blob]):
    model = Blob
    upsert_keys = ("workspace_id", "code")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        async with database.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.create_all)
        yield database


async def test_a_json_none_is_stored_as_json_null_by_every_write(db: Database) -> None:
    """A None for a JSON column is JSON ``null`` (not SQL NULL) whether INSERT or COPY wrote it."""
    rows = [{"code": f"c{i}", "data": None} for i in range(3)]
    with workspace(1):
        async with db.transaction() as tx:
            blobs = BlobRepository(tx)
            await blobs.create({"code": "one", "data": None})
            await blobs.create_many(rows[:2])
            await blobs.upsert_many([rows[2], {"code": "one", "data": None}])
        async with db.transaction() as tx:
            result = await tx.session.execute(text("SELECT code, data IS NULL FROM copy_blobs"))
            is_sql_null = {code: bool(null) for code, null in result}
    assert is_sql_null == {"one": False, "c0": False, "c1": False, "c2": False}


async def test_a_decimal_is_stored_as_insert_stores_it(db: Database) -> None:
    """A Decimal reaches a NUMERIC column exactly (never through a float) by COPY as by INSERT."""
    amount = Decimal("1.005")  # rounds to 1.01 as a decimal, to 1.00 as the float 1.00499…
    with workspace(1):
        async with db.transaction() as tx:
            blobs = BlobRepository(tx)
            await blobs.create({"code": "one", "amount": amount})
            await blobs.create_many([{"code": "many", "amount": amount}])
            await blobs.upsert_many([{"code": "ups", "amount": amount}])
        async with db.transaction() as tx:
            result = await tx.session.execute(text("SELECT code, amount FROM copy_blobs"))
            stored = {code: Decimal(str(value)) for code, value in result}
    assert stored["many"] == stored["ups"] == stored["one"]
