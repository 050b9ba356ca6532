"""The one-statement audited update with column names that look like its own labels."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db import (
    AuditedMixin,
    Database,
    IdMixin,
    Repository,
    TenantMixin,
    VersionMixin,
    audit_entries,
)
from tests.integration.repo_models import database_for, workspace


class _Base(AsyncAttrs, DeclarativeBase):
    pass


class Move(IdMixin, TenantMixin, VersionMixin, AuditedMixin, _Base):
    __tablename__ = "audited_moves"

    status: Mapped[str] = mapped_column(String(20))
    old_status: Mapped[str | None] = mapped_column(String(20), nullable=True)


class MoveRepository(Repository[Move]):
    model = Move


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        async with database.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.create_all)
        yield database


async def test_a_column_named_old_something_is_updated_and_audited(db: Database) -> None:
    """Columns ``status`` and ``old_status`` update and audit like any others."""
    with workspace(1):
        async with db.transaction() as tx:
            move = await MoveRepository(tx).create({"status": "open"})
        async with db.transaction() as tx:
            updated = await MoveRepository(tx).update(
                move.id, {"status": "done", "old_status": "open"}
            )
            assert (updated.status, updated.old_status, updated.version) == ("done", "open", 2)
        async with db.transaction() as tx:
            stored = (await tx.session.execute(select(Move.status, Move.old_status))).one()
            log = [e.changes for e in await audit_entries(tx, workspace_id=1)]
    assert tuple(stored) == ("done", "open")
    assert {
        "status": {"before": "open", "after": "done"},
        "old_status": {"before": None, "after": "open"},
    } in log


class Stamp(IdMixin, TenantMixin, VersionMixin, AuditedMixin, _Base):
    __tablename__ = "audited_stamps"

    title: Mapped[str] = mapped_column(String(20))
    cs_at: Mapped[str | None] = mapped_column(String(20), nullable=True)
    cs_actor: Mapped[str | None] = mapped_column(String(20), nullable=True)


class StampRepository(Repository[Stamp]):
    model = Stamp


async def test_columns_named_like_the_statements_parameters_are_left_alone(db: Database) -> None:
    """An update of ``title`` leaves columns ``cs_at`` and ``cs_actor`` as they were."""
    with workspace(1, actor="alice"):
        async with db.transaction() as tx:
            stamp = await StampRepository(tx).create({"title": "a", "cs_at": "x", "cs_actor": "y"})
        async with db.transaction() as tx:
            updated = await StampRepository(tx).update(stamp.id, {"title": "b"})
            assert (updated.title, updated.cs_at, updated.cs_actor) == ("b", "x", "y")
        async with db.transaction() as tx:
            stored = (await tx.session.execute(select(Stamp.cs_at, Stamp.cs_actor))).one()
            log = [e.changes for e in await audit_entries(tx, workspace_id=1)]
    assert tuple(stored) == ("x", "y")
    assert log[0] == {"title": {"before": "a", "after": "b"}}
