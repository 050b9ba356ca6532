"""The saga recovery worker inside an Infrastructure: it never outlives shutdown."""

from __future__ import annotations

import asyncio

import pytest

from corestone import Infrastructure, Settings, ShutdownError
from corestone.sagas import (
    Saga,
    SagaOrchestrator,
    SagaRecoveryWorker,
    SagaRegistry,
    SagaStep,
    StepContext,
)
from tests.integration.saga_support import SAGAS, make_stuck

WORKER_TASK = "corestone-saga-recovery"


def worker_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == WORKER_TASK and not t.done()]


async def test_recovery_worker_never_outlives_a_short_stop_timeout(database_url: str) -> None:
    """Stop timeout < drain: the hung pass is cancelled and awaited before the database closes."""
    entered = asyncio.Event()
    cancelled: list[str] = []

    async def hang(ctx: StepContext) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(ctx.saga_id)
            raise

    saga = Saga("t.hang", [SagaStep("hang", hang, timeout_seconds=None)])
    settings = Settings(database_url=database_url, env="test", component_stop_timeout_seconds=0.05)
    infra = Infrastructure(settings)
    worker = SagaRecoveryWorker(
        SagaOrchestrator(infra.db, SagaRegistry([saga])), interval_seconds=0.01, drain_seconds=60
    )
    infra.add(worker)
    try:
        with pytest.raises(ShutdownError) as raised:
            async with infra:
                async with infra.db.engine.begin() as conn:
                    await conn.run_sync(SAGAS.create)
                stuck = await make_stuck(infra.db, saga)
                await asyncio.wait_for(entered.wait(), 30)
        assert list(raised.value.failures) == [worker.name]
        assert worker_tasks() == []
        assert cancelled == [stuck.id]
    finally:  # on failure, do not leave the hung pass behind for other tests
        leftovers = worker_tasks()
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
