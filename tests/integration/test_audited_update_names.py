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
