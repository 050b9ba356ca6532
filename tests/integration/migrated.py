"""Databases already at taskboard's head revision, copied from one migrated template.

Every taskboard app a test starts used to migrate its fresh database through every
revision: about a second on PostgreSQL and half that on SQLite, for each of several
hundred tests, which made it the largest single cost of the suite. Each pytest worker
now migrates one template per database kind, once, and each test gets a copy of it
(``CREATE DATABASE … TEMPLATE`` on PostgreSQL, a file copy on SQLite): the same schema a
migration makes, in a database of its own, for a fraction of the time. The app still
runs its ``schema`` component at start, which finds nothing to do. The migrations
themselves are tested where they are the subject (test_taskboard_schema.py, the e2e
upgrades), on empty databases.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

from corestone.db import Database, upgrade
from corestone.testing.services import postgres_admin_url, run_sync
from taskboard.app import MIGRATIONS

__all__ = ["MigratedTemplates"]


class MigratedTemplates:
    """One migrated template per database kind for this worker, made on first use."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._sqlite: Path | None = None
        self._postgres: str | None = None
        self._lock = threading.Lock()

    def copy_sqlite(self, target: Path) -> None:
        """Write a migrated SQLite database at ``target``."""
        with self._lock:
            if self._sqlite is None:
                path = self._directory / "taskboard.db"
                run_sync(lambda: _migrate(f"sqlite+aiosqlite:///{path}"))
                self._sqlite = path
        shutil.copyfile(self._sqlite, target)

    def postgres(self) -> str:
        """The name of the migrated PostgreSQL template (no connection is left open to it)."""
        with self._lock:
            if self._postgres is None:
                name = f"cs_template_{uuid.uuid4().hex[:12]}"
                run_sync(lambda: _admin(f'CREATE DATABASE "{name}"'))
                run_sync(lambda: _migrate(_postgres_url(name)))
                self._postgres = name
            return self._postgres

    def drop(self) -> None:
        if self._postgres is not None:
            statement = f'DROP DATABASE IF EXISTS "{self._postgres}" WITH (FORCE)'
            run_sync(lambda: _admin(statement))


async def _migrate(url: str) -> None:
    database = Database(url)
    await database.start()
    try:
        await upgrade(database, MIGRATIONS)
    finally:
        await database.aclose()


def _postgres_url(name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)


async def _admin(statement: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(postgres_admin_url()).set(drivername="postgresql")
    conn = await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
