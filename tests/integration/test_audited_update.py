"""The audited single-row update: one statement on PostgreSQL, every guarantee kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Numeric
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone import NotFoundError, StaleVersionError
from corestone.db import (
    AuditedMixin,
    Database,
    IdMixin,
    Repository,
    TenantMixin,
    VersionMixin,
    audit_entries,
)
from corestone.testing import QueryCounter
from tests.integration.repo_models import ItemRepository, database_for, workspace


class _Base(DeclarativeBase):
    pass


class Invoice(IdMixin, TenantMixin, VersionMixin, AuditedMixin, _Base):
    """Fields whose audit JSON only Python writes (a date, a decimal)."""

    __tablename__ = "audited_update_invoices"

    due: Mapped[date]
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class InvoiceRepository(Repository[Invoice]):
    model = Invoice


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


async def _log(db: Database, ws: int = 1) -> list[dict[str, Any]]:
    async with db.transaction() as tx:
        entries = await audit_entries(tx, workspace_id=ws, limit=500)
    return [e.as_dict() for e in reversed(entries)]


async def _item(db: Database, ws: int = 1) -> int:
    with workspace(ws):
        async with db.transaction() as tx:
            item = await ItemRepository(tx).create({"title": "a", "rank": 1, "secret": "s1"})
    return int(item.id)


async def test_audited_update_is_one_statement_on_postgresql(db: Database) -> None:
    """On PostgreSQL the lock, the update and the audit row take one statement."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite keeps the lock-read, UPDATE and audit INSERT (three statements)")
    id_ = await _item(db)
    with workspace(1), QueryCounter(db.engine) as counter:
        async with db.transaction() as tx:
            item = await ItemRepository(tx).update(id_, {"title": "b"}, expected_version=1)
    statements = [e for e in counter.events if e.startswith("sql:")]
    assert statements == ["sql:WITH"]
    assert (item.title, item.version) == ("b", 2)


async def test_audited_update_records_before_after_actor_and_correlation(db: Database) -> None:
    """The audit row has the changed fields only, redactions, the actor and correlation id."""
    id_ = await _item(db)
    with workspace(1, actor="alice"):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.update(id_, {"title": "b", "rank": 1, "secret": "s2"})
            await items.update(id_, {"code": None})  # no change: no entry
    assert item.title == "b"
    update = (await _log(db))[-1]
    assert (update["action"], update["actor_id"], update["correlation_id"]) == (
        "update",
        "alice",
        "req-1",
    )
    assert (update["entity"], update["entity_id"], update["workspace_id"]) == ("Item", str(id_), 1)
    assert update["changes"] == {
        "title": {"before": "a", "after": "b"},
        "secret": {"before": "<redacted>", "after": "<redacted>"},
    }
    assert len(await _log(db)) == 2  # create + one update


async def test_audited_update_keeps_version_scope_and_soft_delete_rules(db: Database) -> None:
    """Stale versions, other workspaces and soft-deleted rows are refused and log nothing."""
    id_ = await _item(db)
    with workspace(1):
        async with db.transaction() as tx:
            await ItemRepository(tx).update(id_, {"rank": 2})
        with pytest.raises(StaleVersionError) as caught:
            async with db.transaction() as tx:
                await ItemRepository(tx).update(id_, {"rank": 3}, expected_version=1)
        assert caught.value.current_version == 2
    with workspace(2), pytest.raises(NotFoundError):
        async with db.transaction() as tx:
            await ItemRepository(tx).update(id_, {"rank": 4})
    with workspace(1):
        async with db.transaction() as tx:
            await ItemRepository(tx).delete(id_)
        with pytest.raises(NotFoundError):
            async with db.transaction() as tx:
                await ItemRepository(tx).update(id_, {"rank": 5})
        with pytest.raises(NotFoundError):
            async with db.transaction() as tx:
                await ItemRepository(tx).update(id_ + 1000, {"rank": 5})
    assert [e["action"] for e in await _log(db)] == ["create", "update", "delete"]
    assert await _log(db, 2) == []


async def test_fields_only_python_can_audit_take_the_generic_path(db: Database) -> None:
    """A date or decimal change is logged in Python's JSON form on both databases."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    with workspace(1):
        async with db.transaction() as tx:
            invoices = InvoiceRepository(tx)
            invoice = await invoices.create({"due": date(2026, 1, 2), "amount": Decimal("1.50")})
            await invoices.update(
                invoice.id, {"due": date(2026, 2, 3), "amount": Decimal("2.00")}, expected_version=1
            )
    update = (await _log(db))[-1]
    assert update["changes"] == {
        "due": {"before": "2026-01-02", "after": "2026-02-03"},
        "amount": {"before": "1.50", "after": "2.00"},
    }


async def test_audited_update_refreshes_the_loaded_instance(db: Database) -> None:
    """An instance already in the session is the one returned, with the new values."""
    id_ = await _item(db)
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            loaded = await items.get(id_)
            updated = await items.update(id_, {"title": "fresh", "rank": 9})
            assert updated is loaded
            assert (loaded.title, loaded.rank, loaded.version) == ("fresh", 9, 2)
            assert loaded not in tx.session.dirty
