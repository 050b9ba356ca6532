"""Fixtures for tracking: the outbox tables plus the receipts, on each database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from corestone.db import Database
from corestone.email.tracking import EmailReceiptRecord
from tests.integration.email_outbox.conftest import TABLES

ALL_TABLES: list[Any] = [*TABLES, EmailReceiptRecord.__table__]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.start()
    async with database.engine.begin() as conn:
        for table in ALL_TABLES:
            await conn.run_sync(table.create, checkfirst=True)
    yield database
    await database.aclose()
