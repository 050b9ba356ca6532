"""`taskboard db upgrade` as real processes, several at once on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from corestone.db import Database

pytestmark = pytest.mark.e2e


def test_concurrent_upgrades_migrate_once(postgres_url: str) -> None:
    """Three processes upgrading together all succeed and leave one schema at head."""
    env = {**os.environ, "CORESTONE_DATABASE_URL": postgres_url, "CORESTONE_ENV": "test"}
    command = [sys.executable, "-m", "taskboard.cli", "db", "upgrade"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err.decode()
        assert b"schema up to date" in out
        assert b"Traceback" not in err

    async def inspect() -> tuple[list[str], list[str]]:
        db = Database(postgres_url)
        await db.start()
        try:
            async with db.transaction(read_only=True) as tx:
                versions = list(
                    await tx.session.scalars(text("SELECT version_num FROM alembic_version"))
                )
                tables = list(
                    await tx.session.scalars(
                        text(
                            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                        )
                    )
                )
        finally:
            await db.aclose()
        return versions, tables

    versions, tables = asyncio.run(inspect())
    assert len(versions) == 1
    assert {"users", "workspaces", "memberships", "tasks", "api_tokens"} <= set(tables)
