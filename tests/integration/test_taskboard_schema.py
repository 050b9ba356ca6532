"""taskboard's migrations produce exactly the schema its models declare, on both databases.

A model change without a migration (or a migration that drifts from the model) shows up
here as a diff, before it shows up as a failing INSERT in production.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from corestone.db import Base, Database, upgrade
from taskboard.app import MIGRATIONS
from taskboard.domain import models  # noqa: F401 - registers taskboard's tables


# Tests of other modules may declare their own models on corestone's Base; only the
# tables taskboard's migrations own are compared.
def _owned_tables() -> set[str]:
    return {
        mapper.local_table.name  # type: ignore[attr-defined]
        for mapper in Base.registry.mappers
        if mapper.class_.__module__.startswith(("taskboard.", "corestone."))
    } | {"alembic_version"}


def _owned(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    table = obj if type_ == "table" else getattr(obj, "table", None)
    table_name = name if type_ == "table" else getattr(table, "name", None)
    return table_name is None or table_name in _owned_tables()


def _diff(connection: Any) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": _owned}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_match_models(database_url: str) -> None:
    """After every migration has run, the schema differs from taskboard's models in nothing."""
    db = Database(database_url)
    await db.start()
    try:
        await upgrade(db, MIGRATIONS)
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await db.aclose()
    assert diff == []


async def test_downgrade_to_base_and_up_again(database_url: str) -> None:
    """Migrations downgrade to an empty base, and upgrading again gives the models' schema."""
    db = Database(database_url)
    await db.start()
    try:
        await upgrade(db, MIGRATIONS)
        async with db.engine.connect() as conn:
            await conn.run_sync(_downgrade_to_base)
            await conn.commit()
        await upgrade(db, MIGRATIONS)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await db.aclose()


async def test_memberships_keep_their_rows_when_they_get_ids(database_url: str) -> None:
    """Upgrading past 0004 keeps every membership and numbers each with a distinct id."""
    db = Database(database_url)
    await db.start()
    try:
        await upgrade(db, MIGRATIONS, revision="0003")
        async with db.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO users (name, email) VALUES ('A', 'a@x'), ('B', 'b@x')")
            )
            await conn.execute(text("INSERT INTO workspaces (name) VALUES ('W')"))
            await conn.execute(
                text(
                    "INSERT INTO memberships (workspace_id, user_id, role) "
                    "SELECT w.id, u.id, CASE u.email WHEN 'a@x' THEN 'owner' ELSE 'member' END "
                    "FROM workspaces w, users u"
                )
            )
        await upgrade(db, MIGRATIONS)
        async with db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT m.id, u.email, m.role FROM memberships m "
                        "JOIN users u ON u.id = m.user_id ORDER BY u.email"
                    )
                )
            ).all()
            assert await conn.run_sync(_diff) == []
    finally:
        await db.aclose()
    assert [(email, role) for _, email, role in rows] == [("a@x", "owner"), ("b@x", "member")]
    assert len({id_ for id_, _, _ in rows}) == 2


def _downgrade_to_base(connection: Any) -> None:
    from alembic import command

    from corestone.db.migrations import alembic_config

    config = alembic_config(MIGRATIONS)
    config.attributes["connection"] = connection
    command.downgrade(config, "base")
