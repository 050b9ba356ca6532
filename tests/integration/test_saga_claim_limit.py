"""Recovery claims at most ``limit`` stuck sagas per pass, on SQLite and PostgreSQL.

On PostgreSQL, ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` may run
its subquery again for each row scanned, each run skipping the rows the previous one
locked: one pass then took every stuck saga (6 with a limit of 2), starving the other
recoverers and running far more sagas at once than asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from corestone.db import Database
from corestone.sagas import Saga, SagaStep, StepContext
from corestone.sagas.store import SagaStore
from tests.integration.saga_support import make_stuck, open_db


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_db(database_url) as database:
        yield database


async def _noop(ctx: StepContext) -> None:
    return None


async def test_one_claim_takes_at_most_limit_stuck_sagas(db: Database) -> None:
    """Six stuck sagas, limit two: two claimed, then two more, then two more, then none."""
    saga = Saga("t.claim", [SagaStep("a", _noop)])
    for _ in range(6):
        await make_stuck(db, saga)
    store = SagaStore(30)

    taken: list[int] = []
    for owner in ("p1", "p2", "p3", "p4"):
        async with db.transaction() as tx:
            claimed = await store.claim_stuck(
                tx.session, types=[saga.name], owner=owner, limit=2,
                postgresql=db.dialect == "postgresql",
            )  # fmt: skip
        taken.append(len(claimed))

    assert taken == [2, 2, 2, 0]
