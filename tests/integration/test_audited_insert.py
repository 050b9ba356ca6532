"""The audited single-row create: one statement on PostgreSQL, the generic path's entry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import BigInteger, String, text
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone import ConflictError, InvalidInputError
from corestone.db import (
    AuditedMixin,
    Database,
    IdMixin,
    Repository,
    SoftDeleteMixin,
    TenantMixin,
    TimestampMixin,
    UTCDateTime,
    VersionMixin,
    _writes,
    audit_entries,
)
from corestone.testing import QueryCounter
from tests.integration.repo_models import ItemRepository, database_for, workspace


class _Base(DeclarativeBase):
    pass


def _shout(context: DefaultExecutionContext) -> str:
    return str(context.get_current_parameters()["title"]).upper()


def _colour() -> str:
    return "teal"


class Event(
    IdMixin, TimestampMixin, TenantMixin, VersionMixin, SoftDeleteMixin, AuditedMixin, _Base
):
    """Every type the server may write the JSON of, a redacted field, awkward names."""

    __tablename__ = "audited_insert_events"
    __audit_exclude__ = frozenset({"secret"})

    title: Mapped[str] = mapped_column(String(100))
    colour: Mapped[str] = mapped_column(String(10), default=_colour)
    starts: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done: Mapped[bool] = mapped_column(default=False)
    big: Mapped[int | None] = mapped_column(BigInteger)
    secret: Mapped[str | None] = mapped_column(String(50))
    cs_at: Mapped[str | None] = mapped_column(String(20))
    """Named like the statement's own audit parameter."""


class EventRepository(Repository[Event]):
    model = Event


class Shouted(IdMixin, TenantMixin, AuditedMixin, _Base):
    """A default that reads the statement's parameters from the execution context."""

    __tablename__ = "audited_insert_shouted"

    title: Mapped[str] = mapped_column(String(100))
    shout: Mapped[str] = mapped_column(String(100), default=_shout)


class ShoutedRepository(Repository[Shouted]):
    model = Shouted


class Dated(IdMixin, TenantMixin, AuditedMixin, _Base):
    """A field whose audit JSON only Python writes (a date)."""

    __tablename__ = "audited_insert_dated"

    day: Mapped[date]


class DatedRepository(Repository[Dated]):
    model = Dated


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        async with database.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.create_all)
        yield database


async def _log(db: Database, ws: int = 1) -> list[dict[str, Any]]:
    async with db.transaction() as tx:
        entries = await audit_entries(tx, workspace_id=ws, limit=500)
    return [e.as_dict() for e in reversed(entries)]


_AWKWARD = [
    # No fraction, a fraction with trailing zeros, a year below 1000, another offset.
    datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
    datetime(2026, 3, 4, 5, 6, 7, 120000, tzinfo=UTC),
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 3, 4, 23, 30, 0, 1, tzinfo=timezone(timedelta(hours=-5))),
    None,
]


def _values(n: int, starts: datetime | None) -> dict[str, Any]:
    return {
        "title": f'it\'s "{n}" ünïcode \\ {{}}',
        "starts": starts,
        "done": n % 2 == 0,
        "big": -(2**62) if n % 2 else None,
        "secret": "hush",
        "cs_at": f"named {n}",
    }


def _update_paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the loop's body with the one-statement audited update, then without it."""
    yield
    monkeypatch.setattr(_writes, "can_audit_in_sql", lambda info, values: False)
    yield


def _without_ids(entry: dict[str, Any]) -> dict[str, Any]:
    changes = {
        name: pair
        for name, pair in entry["changes"].items()
        if name not in ("id", "created_at")  # the new row's id and time differ per row
    }
    return {**entry, "id": None, "at": None, "entity_id": None, "changes": changes}


async def test_a_create_with_audit_is_one_statement_on_postgresql(db: Database) -> None:
    """On PostgreSQL the row and its audit entry take one statement inside the transaction."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite keeps INSERT … RETURNING then the audit INSERT")
    with workspace(1), QueryCounter(db.engine) as counter:
        async with db.transaction() as tx:
            item = await ItemRepository(tx).create({"title": "a", "rank": 3})
    assert [e for e in counter.events if e.startswith("sql:")] == ["sql:WITH"]
    assert counter.events.count("commit") == 1
    assert (item.title, item.rank, item.version, item.status) == ("a", 3, 1, "open")
    [entry] = await _log(db)
    assert (entry["action"], entry["entity_id"]) == ("create", str(item.id))


async def test_the_entry_is_the_one_the_generic_path_writes(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created with and without the one-statement path, the entries are equal field by field."""
    fast: list[Event] = []
    with workspace(1, actor="alice"):
        for n, starts in enumerate(_AWKWARD):
            async with db.transaction() as tx:
                fast.append(await EventRepository(tx).create(_values(n, starts)))
        monkeypatch.setattr(_writes, "can_insert_in_sql", lambda info, row: False)
        for n, starts in enumerate(_AWKWARD):
            async with db.transaction() as tx:
                await EventRepository(tx).create(_values(n, starts))
    log = await _log(db)
    assert len(log) == 2 * len(_AWKWARD)
    by_sql, by_python = log[: len(_AWKWARD)], log[len(_AWKWARD) :]
    assert [_without_ids(e) for e in by_sql] == [_without_ids(e) for e in by_python]
    for entry, event in zip(by_sql, fast, strict=True):
        assert entry["changes"]["id"] == {"before": None, "after": event.id}
        assert entry["changes"]["created_at"] == {
            "before": None,
            "after": event.created_at.isoformat(),
        }
    first = by_sql[0]
    assert (first["actor_id"], first["correlation_id"], first["workspace_id"]) == (
        "alice",
        "req-1",
        1,
    )
    assert first["changes"]["secret"] == {"before": "<redacted>", "after": "<redacted>"}
    assert first["changes"]["colour"] == {"before": None, "after": "teal"}
    assert first["changes"]["starts"]["after"] == "2026-03-04T05:06:07+00:00"
    assert by_sql[1]["changes"]["starts"]["after"] == "2026-03-04T05:06:07.120000+00:00"
    assert "version" not in first["changes"]
    assert "updated_at" not in first["changes"]


async def test_an_update_of_a_timestamp_writes_the_generic_paths_entry(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A UTC timestamp changed in one statement is logged as Python's isoformat logs it."""
    logs = []
    for _ in _update_paths(monkeypatch):
        with workspace(1):
            async with db.transaction() as tx:
                event = await EventRepository(tx).create(_values(0, _AWKWARD[0]))
            for starts in _AWKWARD[1:]:
                async with db.transaction() as tx:
                    await EventRepository(tx).update(event.id, {"starts": starts})
        logs.append([e["changes"] for e in (await _log(db))[-len(_AWKWARD) + 1 :]])
    assert logs[0] == logs[1]
    assert logs[0][0] == {
        "starts": {
            "before": "2026-03-04T05:06:07+00:00",
            "after": "2026-03-04T05:06:07.120000+00:00",
        }
    }


async def test_an_infinite_timestamp_is_logged_as_asyncpg_reads_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's ±infinity is logged as the datetime the generic path reads back."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no infinite timestamps")
    logs = []
    for _ in _update_paths(monkeypatch):
        with workspace(1):
            async with db.transaction() as tx:
                event = await EventRepository(tx).create(_values(0, None))
            for stored, new in (("infinity", None), ("-infinity", _AWKWARD[0])):
                async with db.transaction() as tx:
                    await tx.session.execute(
                        text(f"UPDATE audited_insert_events SET starts = '{stored}'")
                    )
                async with db.transaction() as tx:
                    await EventRepository(tx).update(event.id, {"starts": new})
        logs.append([e["changes"] for e in (await _log(db))[-2:]])
    assert (
        logs[0]
        == logs[1]
        == [
            {"starts": {"before": "9999-12-31T23:59:59.999999+00:00", "after": None}},
            {
                "starts": {
                    "before": "0001-01-01T00:00:00+00:00",
                    "after": "2026-03-04T05:06:07+00:00",
                }
            },
        ]
    )


async def test_a_field_only_python_can_audit_takes_the_generic_path(db: Database) -> None:
    """A date is logged in Python's JSON form, on both databases (two statements on PostgreSQL)."""
    with workspace(1), QueryCounter(db.engine) as counter:
        async with db.transaction() as tx:
            dated = await DatedRepository(tx).create({"day": date(2026, 1, 2)})
    assert [e for e in counter.events if e.startswith("sql:INSERT")] == ["sql:INSERT"] * 2
    [entry] = await _log(db)
    assert entry["changes"] == {
        "id": {"before": None, "after": dated.id},
        "workspace_id": {"before": None, "after": 1},
        "day": {"before": None, "after": "2026-01-02"},
    }


async def test_a_default_that_reads_the_context_takes_the_generic_path(db: Database) -> None:
    """``get_current_parameters()`` needs the INSERT as the statement: two statements, one row."""
    with workspace(1), QueryCounter(db.engine) as counter:
        async with db.transaction() as tx:
            shouted = await ShoutedRepository(tx).create({"title": "hey"})
    assert shouted.shout == "HEY"
    assert [e for e in counter.events if e.startswith("sql:INSERT")] == ["sql:INSERT"] * 2
    [entry] = await _log(db)
    assert entry["changes"]["shout"] == {"before": None, "after": "HEY"}


async def test_the_created_row_is_the_sessions_and_rolls_back_with_its_entry(
    db: Database,
) -> None:
    """The returned row is in the session; a rolled-back savepoint takes row and entry back."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"title": "kept"})
            assert item in tx.session
            assert item not in tx.session.dirty
            assert await items.get(item.id) is item
            with pytest.raises(RuntimeError):
                async with db.transaction():  # nested: a savepoint
                    await items.create({"title": "gone"})
                    raise RuntimeError("undo")
            updated = await items.update(item.id, {"title": "kept, changed"})
            assert updated is item
    log = await _log(db)
    assert [(e["action"], e["changes"]["title"]) for e in log] == [
        ("create", {"before": None, "after": "kept"}),
        ("update", {"before": "kept", "after": "kept, changed"}),
    ]


async def test_a_hostile_create_is_refused_before_any_statement(db: Database) -> None:
    """Another workspace, a managed field or a bad value is a 422 naming it, and writes nothing."""
    bad = [
        ({"title": "x", "workspace_id": 2}, "workspace_id"),
        ({"title": "x", "version": 5}, "version"),
        ({"title": "x" * 101}, "title"),
        ({"title": "x", "starts": datetime(2026, 1, 1)}, "starts"),
        ({"title": "x", "big": 2**63}, "big"),
    ]
    with workspace(1):
        for values, field in bad:
            with QueryCounter(db.engine) as counter, pytest.raises(InvalidInputError) as caught:
                async with db.transaction() as tx:
                    await EventRepository(tx).create(values)
            assert caught.value.field == field
            assert not [e for e in counter.events if e.startswith(("sql:INSERT", "sql:WITH"))]
    assert await _log(db) == []


async def test_a_duplicate_is_a_conflict_and_logs_nothing(db: Database) -> None:
    """A unique violation in the one statement is ConflictError, with no entry left behind."""
    with workspace(1):
        async with db.transaction() as tx:
            await ItemRepository(tx).create({"title": "a", "code": "same"})
        with pytest.raises(ConflictError):
            async with db.transaction() as tx:
                await ItemRepository(tx).create({"title": "b", "code": "same"})
    assert [e["changes"]["title"]["after"] for e in await _log(db)] == ["a"]
