"""Sagas read time only through the clocks they are given: lease times and retry deadlines.

On SQLite and PostgreSQL. The wall clock stamps the saga log (``locked_until``,
``created_at``); the monotonic clock bounds each step's retries. A test moves them
instead of sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from corestone.db import Database
from corestone.resilience import Retry
from corestone.sagas import Saga, SagaStatus, SagaStep, StepContext
from corestone.testing import ManualClock
from tests.integration.saga_support import open_db, orchestrator


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_db(database_url) as database:
        yield database


class Died(BaseException):
    """The process died here."""


async def test_leases_are_stamped_and_compared_on_the_injected_wall_clock(db: Database) -> None:
    """A saga leased at T is not claimable before T + lease on the recoverer's clock, then is."""
    started = datetime(2031, 1, 1, tzinfo=UTC)

    async def dies(ctx: StepContext) -> None:
        raise Died

    async def done(ctx: StepContext) -> int:
        return 1

    saga = Saga("t.clock", [SagaStep("a", dies)])
    with pytest.raises(Died):
        await orchestrator(db, saga, lease_seconds=30, wall_clock=lambda: started).run(saga, {})

    fixed = Saga("t.clock", [SagaStep("a", done)])
    early = orchestrator(db, fixed, wall_clock=lambda: started + timedelta(seconds=29))
    assert await early.recover() == []
    late = orchestrator(db, fixed, wall_clock=lambda: started + timedelta(seconds=31))
    (outcome,) = await late.recover()
    assert outcome.status is SagaStatus.COMPLETED
    stored = await late.get(outcome.id)
    assert stored is not None
    assert stored.created_at == started


async def test_a_step_retry_deadline_runs_on_the_orchestrators_clock(db: Database) -> None:
    """An attempt that takes 20 s on the injected clock ends a 10 s retry deadline: one try."""
    clock = ManualClock()
    tries: list[int] = []

    async def slow(ctx: StepContext) -> None:
        tries.append(ctx.attempt)
        clock.advance(20)
        raise ConnectionError("payments down")

    retry = Retry(
        attempts=5, initial_wait_seconds=0.001, max_wait_seconds=0.01, deadline_seconds=10
    )
    saga = Saga("t.deadline", [SagaStep("a", slow, retry=retry)])

    outcome = await orchestrator(db, saga, clock=clock).run(saga, {})

    assert outcome.status is SagaStatus.COMPENSATED
    assert tries == [1]
