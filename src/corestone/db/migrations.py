"""Run Alembic migrations on a :class:`~corestone.db.Database`, safely from many processes.

Alembic is synchronous; this runs it on one of the engine's async connections through
``run_sync``. On PostgreSQL the upgrade holds a session advisory lock, so N processes
starting together upgrade once and the others wait, instead of racing on DDL.

The application's ``env.py`` must use the connection handed over in
``config.attributes["connection"]`` (see taskboard's migrations for a complete one).
"""

from __future__ import annotations

import zlib
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from corestone.db.database import Database

__all__ = ["alembic_config", "upgrade"]


def alembic_config(script_location: str) -> Config:
    """An Alembic config for ``script_location`` (a path or ``package:folder``)."""
    config = Config()
    config.set_main_option("script_location", script_location)
    return config


async def upgrade(database: Database, script_location: str, revision: str = "head") -> None:
    """Upgrade ``database`` to ``revision`` with the scripts at ``script_location``."""
    config = alembic_config(script_location)
    lock_id = zlib.crc32(script_location.encode()) & 0x7FFFFFFF
    async with database.engine.connect() as conn:
        if database.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
            await conn.commit()
        try:
            await conn.run_sync(_upgrade, config, revision)
            await conn.commit()
        finally:
            if database.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                await conn.commit()


def _upgrade(connection: Any, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
