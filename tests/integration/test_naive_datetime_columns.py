"""A column declared without a time zone takes naive values; an aware one is a named 422."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import DateTime, MetaData
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db import Database, IdMixin, Repository
from corestone.errors import InvalidInputError
from corestone.observability import Metrics


class _Base(DeclarativeBase):
    metadata = MetaData()


class Meeting(IdMixin, _Base):
    __tablename__ = "naive_meetings"
    starts: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))


class Meetings(Repository[Meeting]):
    model = Meeting


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, metrics=Metrics())
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    yield database
    await database.aclose()


async def test_a_naive_value_is_written_by_every_write_path(db: Database) -> None:
    """create, create_many and update store a naive value in a zone-less column (no 500)."""
    when = dt.datetime(2026, 12, 2, 9, 30)
    async with db.transaction() as tx:
        one = await Meetings(tx).create({"starts": when})
        await Meetings(tx).create_many([{"starts": when}, {"starts": when}])
        await Meetings(tx).update(one.id, {"starts": when + dt.timedelta(hours=1)})
    async with db.transaction(read_only=True) as tx:
        found = await Meetings(tx).get(one.id)
        count = await Meetings(tx).count()
    assert found.starts == when + dt.timedelta(hours=1)
    assert count == 3


async def test_an_aware_value_for_a_zone_less_column_is_refused_by_name(db: Database) -> None:
    """An aware datetime for a zone-less column is InvalidInputError naming the field and rule."""
    aware = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)
    with pytest.raises(InvalidInputError) as refused:
        async with db.transaction() as tx:
            await Meetings(tx).create({"starts": aware})
    assert (refused.value.field, refused.value.rule) == ("starts", "timezone")
