"""Running one saga step (or one compensation) with its retry policy and its record.

Private to the orchestrator. A transactional step's work and the fenced write of its
completion share one transaction; an external step's completion is written right after
its action returns. See :mod:`corestone.db.saga_orchestrator` for the crash semantics.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from prometheus_client import Counter

from corestone.db.database import Database
from corestone.db.saga import Saga, SagaStep, StepContext
from corestone.db.saga_store import SagaState, SagaStatus, SagaStore
from corestone.db.transactions import Transaction
from corestone.errors import SagaLeaseLostError
from corestone.observability.logging import get_logger

__all__ = ["StepRunner"]

log = get_logger(__name__)

RUNNING, COMPENSATING = SagaStatus.RUNNING, SagaStatus.COMPENSATING
COMPLETED, COMPENSATED = SagaStatus.COMPLETED, SagaStatus.COMPENSATED


class StepRunner:
    """Runs a step's action or compensation and records the saga's next state."""

    def __init__(self, database: Database, store: SagaStore, owner: str, retries: Counter) -> None:
        self.database = database
        self._store = store
        self.owner = owner
        self._retries = retries

    async def run(
        self,
        saga: Saga,
        step: SagaStep,
        state: SagaState,
        lost: asyncio.Event,
        *,
        compensating: bool,
    ) -> SagaState:
        """One step forward (or one compensation back) with its retry policy."""

        async def attempt(number: int) -> SagaState:
            if lost.is_set():
                raise SagaLeaseLostError(state.id)
            return await self._attempt(saga, step, state, number, compensating)

        def retry_if(error: BaseException) -> bool:
            return not isinstance(error, SagaLeaseLostError) and step.retry_on(error)

        def on_retry(error: BaseException, number: int, wait: float) -> None:
            self._retries.labels(type=saga.name, step=step.key).inc()
            log.info("retrying saga step", saga_id=state.id, step=step.key, attempt=number)

        return await step.retry.run(attempt, retry_if=retry_if, on_retry=on_retry)

    async def _attempt(
        self, saga: Saga, step: SagaStep, state: SagaState, attempt: int, compensating: bool
    ) -> SagaState:
        index = state.current_step - 1 if compensating else state.current_step
        ctx = StepContext(
            saga_id=state.id,
            saga_type=saga.name,
            step_key=step.key,
            payload=state.payload,
            results=dict(state.results),
            attempt=attempt,
            database=self.database,
            result=state.results.get(step.key) if compensating else None,
        )
        if compensating:
            status = COMPENSATING if index else COMPENSATED
            next_step = index
        else:
            status = COMPLETED if index + 1 == len(saga.steps) else RUNNING
            next_step = index + 1

        async def act(ctx: StepContext) -> dict[str, Any] | None:
            async with asyncio.timeout(step.timeout_seconds):
                if compensating:
                    if step.compensate is not None:
                        await step.compensate(ctx)
                    return None  # results stay as they are
                result = await step.action(ctx)
            json.dumps(result)  # a result that cannot be stored fails the step
            return {**state.results, step.key: result}

        async def record(tx: Transaction, results: dict[str, Any] | None) -> SagaState:
            new = await self._store.transition(
                tx.session, state, self.owner, status=status, current_step=next_step,
                results=results,
            )  # fmt: skip
            if new is None:  # lost the lease: raising rolls back the transaction
                raise SagaLeaseLostError(state.id)
            return new

        if step.transactional:
            async with self.database.transaction() as tx:
                return await record(tx, await act(replace(ctx, tx=tx)))
        results = await act(ctx)
        async with self.database.transaction() as tx:
            return await record(tx, results)
