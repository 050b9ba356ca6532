"""Models, repositories and a database fixture shared by the repository tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from sqlalchemy import Column, ForeignKey, MetaData, String, Table, UniqueConstraint
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from corestone import context
from corestone.cache import TieredCache
from corestone.db import (
    AuditedMixin,
    AuditEntry,
    Database,
    IdMixin,
    Repository,
    SoftDeleteMixin,
    TenantMixin,
    TimestampMixin,
    VersionMixin,
)
from corestone.observability import Metrics

KEY = b"test-signing-key-0123456789abcdef"


class RepoBase(AsyncAttrs, DeclarativeBase):
    metadata = MetaData()


class Widget(IdMixin, TimestampMixin, RepoBase):
    """No tenant, no soft delete, no version, no audit: the plain case."""

    __tablename__ = "widgets"
    name: Mapped[str] = mapped_column(String(50), unique=True)
    size: Mapped[int] = mapped_column(default=0)


class Item(
    IdMixin, TimestampMixin, TenantMixin, SoftDeleteMixin, VersionMixin, AuditedMixin, RepoBase
):
    """Every mixin at once."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("workspace_id", "code"),)
    __audit_exclude__ = frozenset({"secret"})

    title: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="open")
    rank: Mapped[int] = mapped_column(default=0)
    code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    secret: Mapped[str | None] = mapped_column(String(50), nullable=True)


tag_links = Table(
    "tag_links",
    RepoBase.metadata,
    Column("note_id", ForeignKey("notes.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True),
)


class Folder(IdMixin, TenantMixin, RepoBase):
    __tablename__ = "folders"
    name: Mapped[str] = mapped_column(String(50))
    notes: Mapped[list[Note]] = relationship(back_populates="folder")
    joined_notes: Mapped[list[Note]] = relationship(lazy="joined", viewonly=True)
    selectin_notes: Mapped[list[Note]] = relationship(lazy="selectin", viewonly=True)


class Note(IdMixin, TenantMixin, SoftDeleteMixin, RepoBase):
    __tablename__ = "notes"
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id"))
    title: Mapped[str] = mapped_column(String(50))
    folder: Mapped[Folder] = relationship(back_populates="notes")
    tags: Mapped[list[Tag]] = relationship(secondary=tag_links)


class Tag(IdMixin, TenantMixin, RepoBase):
    __tablename__ = "tags"
    label: Mapped[str] = mapped_column(String(50))


class WidgetRepository(Repository[Widget]):
    model = Widget
    filterable = ("name", "size")
    sortable = ("name", "size")
    default_sort = "name"
    upsert_keys = ("name",)


class ItemRepository(Repository[Item]):
    model = Item
    filterable = ("title", "status", "rank", "code", "created_at")
    sortable = ("title", "rank", "created_at", "status")
    default_sort = "-created_at"
    upsert_keys = ("workspace_id", "code")


class NoteRepository(Repository[Note]):
    model = Note
    filterable = ("title",)
    sortable = ("title",)


async def open_database(
    url: str, *, busy_timeout_ms: int = 5000, cache: TieredCache | None = None
) -> Database:
    database = Database(url, sqlite_busy_timeout_ms=busy_timeout_ms, metrics=Metrics(), cache=cache)
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(RepoBase.metadata.create_all)
        await conn.run_sync(lambda sync: AuditEntry.__table__.create(sync, checkfirst=True))
    return database


async def database_for(url: str, *, cache: TieredCache | None = None) -> AsyncIterator[Database]:
    database = await open_database(url, cache=cache)
    try:
        yield database
    finally:
        await database.aclose()


@contextmanager
def workspace(ws: int | None, actor: str | None = "user-1") -> Iterator[None]:
    with context.bind(workspace=ws, actor=actor, correlation=f"req-{ws}"):
        yield
