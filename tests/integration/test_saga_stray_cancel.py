"""Cancellation and sagas: a stray CancelledError never stops recovery; a real one releases.

On SQLite and PostgreSQL. A step may await something another task cancelled (a shared
future, a pooled request): the CancelledError it gets is its own failure, not a request
to stop the recovery pass or the worker. A run that is really cancelled hands its saga
to recovery at once, wherever the cancellation lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corestone.db import Database, current_transaction
from corestone.observability.health import HealthStatus
from corestone.sagas import (
    Saga,
    SagaRecoveryWorker,
    SagaStatus,
    SagaStep,
    StepContext,
)
from corestone.sagas.store import SagaStore
from tests.integration.saga_support import Trail, make_stuck, open_db, orchestrator, row_keys


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_db(database_url) as database:
        yield database


async def _stray_cancel(ctx: StepContext) -> None:
    cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cancelled.cancel()  # as if another task cancelled what this step waits for
    await cancelled


async def test_a_stray_cancelled_error_in_one_saga_does_not_end_the_recovery_pass(
    db: Database,
) -> None:
    """The other sagas of the pass still finish, and recover() returns instead of raising."""
    trail = Trail()
    poison = Saga("t.poison", [SagaStep("a", _stray_cancel)])
    good = Saga("t.good", [SagaStep("a", trail.action("a"))])
    await make_stuck(db, poison)
    healthy = await make_stuck(db, good)

    outcomes = await orchestrator(db, poison, good).recover()

    assert [(o.id, o.status) for o in outcomes] == [(healthy.id, SagaStatus.COMPLETED)]


async def test_a_stray_cancelled_error_does_not_stop_the_recovery_worker(db: Database) -> None:
    """The worker keeps passing (and stays healthy) after a step raised CancelledError."""
    passes = 0
    again = asyncio.Event()

    async def poison_step(ctx: StepContext) -> None:
        nonlocal passes
        passes += 1
        if passes >= 2:
            again.set()
        await _stray_cancel(ctx)

    saga = Saga("t.poison", [SagaStep("a", poison_step)])
    await make_stuck(db, saga)
    worker = SagaRecoveryWorker(orchestrator(db, saga, max_attempts=100), interval_seconds=0.01)
    await worker.start()
    try:
        await asyncio.wait_for(again.wait(), 10)
        assert worker.running
        assert (await worker.check()).status is HealthStatus.PASS
    finally:
        await worker.aclose()


async def test_a_worker_whose_task_ended_unexpectedly_is_not_healthy(db: Database) -> None:
    """If the worker's loop ever ends while it should run, its health check says so."""
    worker = SagaRecoveryWorker(
        orchestrator(db, Saga("t.x", [SagaStep("a", _stray_cancel)])), interval_seconds=0.01
    )
    ended = asyncio.Event()

    async def dies(*, limit: int = 10) -> list[object]:
        ended.set()
        raise asyncio.CancelledError  # escapes the loop, which only catches Exception

    worker.orchestrator.recover = dies  # type: ignore[method-assign,assignment]
    await worker.start()
    try:
        await asyncio.wait_for(ended.wait(), 10)
        assert not worker.running  # the loop raised right after setting the event
        check = await worker.check()
        assert check.status is HealthStatus.WARN
        assert "stopped" in (check.output or "")
    finally:
        await worker.aclose()


def _cancel_after_commit(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Make ``SagaStore.<method>`` cancel its caller's task right after its COMMIT."""
    original = getattr(SagaStore, method)

    async def then_cancel(self: SagaStore, session: Any, **values: Any) -> Any:
        written = await original(self, session, **values)

        async def cancel_the_caller() -> None:  # runs after COMMIT, in the caller's task
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)

        transaction = current_transaction()
        assert transaction is not None
        transaction.after_commit(cancel_the_caller)
        return written

    monkeypatch.setattr(SagaStore, method, then_cancel)


async def test_a_run_cancelled_once_its_row_committed_is_released_at_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled after the new saga row committed (closing its session): no wait for recovery."""
    trail = Trail()
    saga = Saga("t.late", [SagaStep("a", trail.action("a"))])
    _cancel_after_commit(monkeypatch, "insert")
    with pytest.raises(asyncio.CancelledError):
        await orchestrator(db, saga).run(saga, {})
    monkeypatch.undo()

    (outcome,) = await orchestrator(db, saga).recover()
    assert outcome.status is SagaStatus.COMPLETED
    assert trail.calls == [("do", "a")]


async def test_a_recovery_pass_cancelled_once_its_claim_committed_releases_the_sagas(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass cancelled right after claiming (a shutdown) leaves its sagas claimable at once."""
    trail = Trail()
    saga = Saga("t.late", [SagaStep("a", trail.action("a"))])
    stuck = await make_stuck(db, saga)
    _cancel_after_commit(monkeypatch, "claim_stuck")
    with pytest.raises(asyncio.CancelledError):
        await orchestrator(db, saga).recover()
    monkeypatch.undo()

    (outcome,) = await orchestrator(db, saga).recover()
    assert (outcome.id, outcome.status) == (stuck.id, SagaStatus.COMPLETED)
    assert trail.calls == [("do", "a")]


async def test_a_stray_cancelled_error_in_run_is_a_step_failure(db: Database) -> None:
    """A step's own CancelledError (its task not cancelled) compensates, and run returns."""
    trail = Trail()
    saga = Saga(
        "t.stray",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge", _stray_cancel, trail.undo("charge")),
        ],
    )

    outcome = await orchestrator(db, saga).run(saga, {})

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("do", "reserve"), ("undo", "reserve")]
    assert outcome.error is not None
    assert "step charge" in outcome.error
    with pytest.raises(Exception, match="CancelledError") as raised:
        outcome.raise_for_status()
    assert isinstance(raised.value.__cause__, asyncio.CancelledError)


async def test_a_stray_cancelled_error_in_a_transactional_step_rolls_it_back_and_fails_it(
    db: Database,
) -> None:
    """The step's row rolls back with its record, the saga compensates, and run returns."""
    trail = Trail()

    async def writes_then_strays(ctx: StepContext) -> None:
        await trail.action("charge", row=True)(ctx)
        await _stray_cancel(ctx)

    saga = Saga(
        "t.stray_tx",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge", writes_then_strays, trail.undo("charge"), transactional=True),
        ],
    )

    outcome = await orchestrator(db, saga).run(saga, {})

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("do", "reserve"), ("do", "charge"), ("undo", "reserve")]
    assert await row_keys(db) == []


async def test_a_stray_cancelled_error_in_a_compensation_during_run_fails_the_saga(
    db: Database,
) -> None:
    """A compensation's own CancelledError marks the saga failed; run returns, raising nothing."""
    trail = Trail()
    saga = Saga(
        "t.stray_undo",
        [
            SagaStep("reserve", trail.action("reserve"), _stray_cancel),
            SagaStep("charge", trail.action("charge", fail=ValueError("declined"))),
        ],
    )

    outcome = await orchestrator(db, saga).run(saga, {})

    assert outcome.status is SagaStatus.FAILED
    assert outcome.error is not None
    assert "compensation of reserve" in outcome.error
