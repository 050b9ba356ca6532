"""Running one saga step (or one compensation) with its retry policy and its record.

Private to the orchestrator. A transactional step's work and the fenced write of its
completion share one transaction. An external step is first logged as in flight (its
key added to ``in_flight``, a fenced write of its own, once per run of the step) and its
completion is written right after its action returns, once its result has been checked
to be storable JSON; that write takes the key out of ``in_flight`` again. So a process
that dies inside the action leaves a log naming the step. An external action that
returned has taken effect, recorded or not: the runner remembers that, so the
orchestrator compensates the step if its record never lands. See
:mod:`corestone.sagas.orchestrator` for the crash semantics.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from typing import Any

from prometheus_client import Counter

from corestone.clock import Clock
from corestone.db.database import Database
from corestone.db.transactions import Transaction
from corestone.errors import SagaLeaseLostError
from corestone.observability.logging import get_logger
from corestone.sagas.saga import Saga, SagaStep, StepContext
from corestone.sagas.store import SagaState, SagaStatus, SagaStore, check_json

__all__ = ["StepRunner"]

log = get_logger(__name__)

RUNNING, COMPENSATING = SagaStatus.RUNNING, SagaStatus.COMPENSATING
COMPLETED, COMPENSATED = SagaStatus.COMPLETED, SagaStatus.COMPENSATED


class StepRunner:
    """Runs a step's action or compensation and records the saga's next state."""

    def __init__(
        self, database: Database, store: SagaStore, owner: str, retries: Counter, clock: Clock
    ) -> None:
        self.database = database
        self._store = store
        self.owner = owner
        self._retries = retries
        self._clock = clock
        self._effects: set[tuple[str, str]] = set()

    def forget(self, saga_id: str, step_key: str) -> bool:
        """Whether the step's external action returned during the last :meth:`run`.

        True means it took effect, whether or not its record landed. Forgets it: call
        once after every forward run of a step.
        """
        returned = (saga_id, step_key) in self._effects
        self._effects.discard((saga_id, step_key))
        return returned

    async def run(
        self,
        saga: Saga,
        step: SagaStep,
        state: SagaState,
        lost: asyncio.Event,
        *,
        compensating: bool,
    ) -> SagaState:
        """One step forward (or one compensation back) with its retry policy.

        The policy's deadline runs on the orchestrator's clock, whatever clock the
        step's ``Retry`` was built with.
        """
        current = state

        async def attempt(number: int) -> SagaState:
            nonlocal current
            if lost.is_set():
                raise SagaLeaseLostError(state.id)
            if not (compensating or step.transactional or step.key in (current.in_flight or ())):
                current = await self._mark_in_flight(current, step.key)
            return await self._attempt(saga, step, current, number, compensating)

        def retry_if(error: BaseException) -> bool:
            return not isinstance(error, SagaLeaseLostError) and step.retry_on(error)

        def on_retry(error: BaseException, number: int, wait: float) -> None:
            self._retries.labels(type=saga.name, step=step.key).inc()
            log.info("retrying saga step", saga_id=state.id, step=step.key, attempt=number)

        retry = replace(step.retry, clock=self._clock)
        return await retry.run(attempt, retry_if=retry_if, on_retry=on_retry)

    async def _mark_in_flight(self, state: SagaState, key: str) -> SagaState:
        """Log ``key`` as in flight before its external action runs (fenced, own transaction)."""
        async with self.database.transaction() as tx:
            new = await self._store.transition(
                tx.session, state, self.owner, status=state.status,
                current_step=state.current_step, in_flight=[*(state.in_flight or ()), key],
            )  # fmt: skip
        if new is None:
            raise SagaLeaseLostError(state.id)
        return new

    async def _attempt(
        self, saga: Saga, step: SagaStep, state: SagaState, attempt: int, compensating: bool
    ) -> SagaState:
        # Copies: a step that mutates what it is given must not rewrite the log (the next
        # record writes ``state.results`` back) nor what later steps see.
        ctx = StepContext(
            saga_id=state.id,
            saga_type=saga.name,
            step_key=step.key,
            payload=copy.deepcopy(state.payload),
            results=copy.deepcopy(dict(state.results)),
            attempt=attempt,
            database=self.database,
            result=copy.deepcopy(state.results.get(step.key)) if compensating else None,
            recorded=compensating and step.key in state.results,
            compensating=compensating,
        )
        left = (state.to_compensate or ())[1:]

        async def act(ctx: StepContext) -> dict[str, Any] | None:
            async with asyncio.timeout(step.timeout_seconds):
                if compensating:
                    if step.compensate is not None:
                        await step.compensate(ctx)
                    return None  # results stay as they are
                result = await step.action(ctx)
            if not step.transactional:  # its effect counts from here (a rollback undoes a tx)
                self._effects.add((state.id, step.key))
            try:
                check_json(result)
            except (TypeError, ValueError) as error:
                raise ValueError(f"the result cannot be stored as JSON: {error}") from error
            return {**state.results, step.key: result}

        async def record(tx: Transaction, results: dict[str, Any] | None) -> SagaState:
            in_flight: list[str] | None = None
            if results is None:  # one compensation done
                status, count = (COMPENSATING if left else COMPENSATED), len(left)
            else:
                done = all(other.key in results for other in saga.steps)
                status, count = (COMPLETED if done else RUNNING), len(results)
                in_flight = [key for key in (state.in_flight or ()) if key != step.key]
            new = await self._store.transition(
                tx.session, state, self.owner, status=status, current_step=count,
                results=results, to_compensate=left if compensating else None,
                in_flight=in_flight,
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
