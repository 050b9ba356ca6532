"""Relationship loading through a scoped session never returns another workspace's rows.

The data is deliberately hostile: links cross workspaces (my folder holds their notes, my
note carries their tag) and some of my notes are soft-deleted. Every query shape — eager
loads (joined, selectin, subquery), lazy loads, many-to-many, ``has()``/``any()``, joins,
aliases, subqueries — must come back with my live rows only. These are the shapes where
SQLAlchemy's global-filter recipe is known to leak (issues #7862, #10245, #13070).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, joinedload, selectinload, subqueryload

from corestone.db import Database, utc_now
from tests.integration.repo_models import (
    Folder,
    Note,
    NoteRepository,
    Tag,
    database_for,
    tag_links,
    workspace,
)

MINE, THEIRS = 1, 2
LEAK = "LEAK"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        async with database.transaction() as tx:
            s = tx.session
            s.add_all(
                [
                    Folder(id=1, workspace_id=MINE, name="mine"),
                    Folder(id=2, workspace_id=THEIRS, name=LEAK),
                ]
            )
            await s.flush()
            s.add_all(
                [
                    Note(id=1, workspace_id=MINE, folder_id=1, title="mine"),
                    Note(id=2, workspace_id=THEIRS, folder_id=1, title=LEAK),
                    Note(id=3, workspace_id=MINE, folder_id=1, title=LEAK, deleted_at=utc_now()),
                    Note(id=4, workspace_id=THEIRS, folder_id=2, title=LEAK),
                    Note(id=5, workspace_id=MINE, folder_id=2, title="mine-in-their-folder"),
                    Tag(id=1, workspace_id=MINE, label="mine"),
                    Tag(id=2, workspace_id=THEIRS, label=LEAK),
                ]
            )
            await s.flush()
            await s.execute(
                tag_links.insert(),
                [
                    {"note_id": 1, "tag_id": 1},
                    {"note_id": 1, "tag_id": 2},
                    {"note_id": 4, "tag_id": 2},
                ],
            )
        yield database


def _walk(value: Any, seen: list[Any]) -> None:
    """Collect every value and loaded entity reachable through already-loaded relationships."""
    if isinstance(value, list | tuple):
        for item in value:
            _walk(item, seen)
    elif isinstance(value, Folder | Note | Tag):
        if any(v is value for v in seen):
            return
        seen.append(value)
        for name in ("notes", "joined_notes", "selectin_notes", "tags", "folder"):
            loaded = value.__dict__.get(name)
            if loaded is not None:
                _walk(loaded, seen)
    else:
        seen.append(value)


def _leaks(result: Any) -> list[str]:
    seen: list[Any] = []
    _walk(result, seen)
    leaks = []
    for value in seen:
        if isinstance(value, Folder | Note | Tag):
            if value.workspace_id != MINE or getattr(value, "deleted_at", None) is not None:
                leaks.append(f"{type(value).__name__} {value.id}")
        elif value == LEAK:
            leaks.append(repr(value))
    return leaks


Shape = Callable[[AsyncSession], Awaitable[Any]]


async def _all(session: AsyncSession, stmt: Any) -> list[Any]:
    rows = (await session.execute(stmt)).unique().all()
    return [
        row[0] if len(row) == 1 and isinstance(row[0], Folder | Note | Tag) else tuple(row)
        for row in rows
    ]


SHAPES: dict[str, Shape] = {
    "plain select": lambda s: _all(s, select(Note)),
    "selectinload o2m": lambda s: _all(s, select(Folder).options(selectinload(Folder.notes))),
    "joinedload o2m": lambda s: _all(s, select(Folder).options(joinedload(Folder.notes))),
    "subqueryload o2m": lambda s: _all(s, select(Folder).options(subqueryload(Folder.notes))),
    "lazy=joined o2m": lambda s: _all(s, select(Folder)),
    "lazy=selectin o2m": lambda s: _all(s, select(Folder)),
    "joinedload m2o": lambda s: _all(s, select(Note).options(joinedload(Note.folder))),
    "selectinload m2o": lambda s: _all(s, select(Note).options(selectinload(Note.folder))),
    "selectinload m2m": lambda s: _all(s, select(Note).options(selectinload(Note.tags))),
    "joinedload m2m": lambda s: _all(s, select(Note).options(joinedload(Note.tags))),
    "nested eager": lambda s: _all(
        s, select(Folder).options(selectinload(Folder.notes).joinedload(Note.tags))
    ),
    "any() o2m": lambda s: _all(s, select(Folder.name).where(Folder.notes.any(Note.title == LEAK))),
    "any() m2m": lambda s: _all(s, select(Note.title).where(Note.tags.any(Tag.label == LEAK))),
    "has() m2o": lambda s: _all(s, select(Note.title).where(Note.folder.has(Folder.name == LEAK))),
    "relationship join": lambda s: _all(s, select(Folder.name, Note.title).join(Folder.notes)),
    "explicit join": lambda s: _all(
        s, select(Folder.name, Note.title).join(Note, Note.folder_id == Folder.id)
    ),
    "outer join": lambda s: _all(
        s, select(Note.title, Folder.name).outerjoin(Folder, Note.folder_id == Folder.id)
    ),
    "aliased": lambda s: _all(s, select(aliased(Note).title)),
    "exists subquery": lambda s: _all(
        s,
        select(Folder.name).where(exists().where(Note.folder_id == Folder.id, Note.title == LEAK)),
    ),
    "scalar subquery": lambda s: _all(
        s,
        select(
            Folder.name,
            select(func.count(Note.id)).where(Note.folder_id == Folder.id).scalar_subquery(),
        ),
    ),
    "in subquery": lambda s: _all(
        s,
        select(Folder.name).where(Folder.id.in_(select(Note.folder_id).where(Note.title == LEAK))),
    ),
    "subqueryload under any()": lambda s: _all(
        s,
        select(Folder)
        .where(Folder.notes.any(Note.title == "mine"))
        .options(subqueryload(Folder.notes)),
    ),
    "count": lambda s: _all(s, select(func.count()).select_from(Note).where(Note.title == LEAK)),
    "session.get other": lambda s: s.get(Note, 2),
    "session.get deleted": lambda s: s.get(Note, 3),
}


# Criteria shapes: my live rows match none of these, so any result is a leak.
EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "any() o2m": [],
    "any() m2m": [],
    "has() m2o": [],
    "exists subquery": [],
    "in subquery": [],
    "count": [(0,)],
    "scalar subquery": [("mine", 1)],
}


async def test_query_shapes_see_only_my_live_rows(db: Database) -> None:
    """No shape returns a row, value or count of another workspace or of a deleted row."""
    failures: dict[str, list[str]] = {}
    with workspace(MINE):
        for name, shape in SHAPES.items():
            async with db.transaction() as tx:
                NoteRepository(tx)  # scopes the session
                result = await shape(tx.session)
                problems = _leaks(result)
                if name in EXPECTED and result != EXPECTED[name]:
                    problems.append(f"expected {EXPECTED[name]!r}, got {result!r}")
                if problems:
                    failures[name] = problems
    assert failures == {}


async def test_lazy_loads_are_scoped(db: Database) -> None:
    """Lazy loads (awaitable_attrs) of collections and many-to-one references are scoped."""
    with workspace(MINE):
        async with db.transaction() as tx:
            NoteRepository(tx)
            folder = await tx.session.get(Folder, 1)
            assert folder is not None
            assert [n.title for n in await folder.awaitable_attrs.notes] == ["mine"]
            note = await tx.session.get(Note, 1)
            assert note is not None
            assert [t.label for t in await note.awaitable_attrs.tags] == ["mine"]
            stray = await tx.session.get(Note, 5)  # my note, filed in their folder
            assert stray is not None
            assert await stray.awaitable_attrs.folder is None


async def test_the_other_workspace_sees_its_own(db: Database) -> None:
    """From the other side the same session sees exactly their rows: the filter is not 'none'."""
    with workspace(THEIRS):
        async with db.transaction() as tx:
            NoteRepository(tx)
            titles = sorted(n.title for n in (await tx.session.scalars(select(Note))).all())
            assert titles == [LEAK, LEAK]
            folder = (
                (await tx.session.scalars(select(Folder).options(selectinload(Folder.notes))))
                .unique()
                .one()
            )
            assert [n.id for n in folder.notes] == [4]
