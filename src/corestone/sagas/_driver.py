"""Driving one saga from its logged state to its end: forward, then back if it must.

Private to the orchestrator, which owns the lease around a drive. Every decision goes by
step key (:mod:`corestone.sagas._plan`), every state change is one fenced write, and a
lost lease or a commit whose outcome is unknown stops the drive where the log is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import replace

from corestone.db.database import Database
from corestone.errors import CommitUnknownError, SagaLeaseLostError
from corestone.observability.logging import get_logger
from corestone.sagas._plan import (
    compensation_plan,
    missing_steps,
    refusal,
    suspects,
    unrecorded,
)
from corestone.sagas._steps import StepRunner
from corestone.sagas.saga import Saga, SagaOutcome, SagaStep
from corestone.sagas.store import SagaState, SagaStatus, SagaStore

__all__ = ["SagaDriver"]

log = get_logger(__name__)

RUNNING, COMPENSATING = SagaStatus.RUNNING, SagaStatus.COMPENSATING
COMPLETED, COMPENSATED, FAILED = SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED


class SagaDriver:
    """Takes a saga from its state to completed, compensated or failed, step by step."""

    def __init__(
        self,
        database: Database,
        store: SagaStore,
        steps: StepRunner,
        owner: str,
        max_attempts: int,
    ) -> None:
        self.database = database
        self.store = store
        self.steps = steps
        self.owner = owner
        self.max_attempts = max_attempts

    async def drive(self, saga: Saga, state: SagaState, lost: asyncio.Event) -> SagaOutcome:
        """Run ``state`` to an end state; raises if the lease is lost or a commit unknown."""
        failure: BaseException | None = None
        if missing := _missing(saga, state):
            state = await self._transition(
                state, status=FAILED, current_step=state.current_step, error=refusal(saga, missing)
            )
        elif state.attempts > self.max_attempts and state.status is RUNNING:
            state = await self._compensate(
                saga,
                state,
                first=suspects(saga, state.results),
                error=f"gave up after {state.attempts - 1} interrupted executions",
            )
        elif state.status is RUNNING:
            # A resumed run (after a crash, a cancellation, a lost lease) may have been cut
            # off inside an external step after its effect: if this run compensates before
            # that step records again, that step is compensated too.
            cut = suspects(saga, state.results) if state.attempts > 1 else []
            state, failure = await self._forward(saga, state, lost, cut)
        if state.status is COMPENSATING:
            if state.attempts > self.max_attempts + 1:
                state = await self._transition(
                    state,
                    status=FAILED,
                    current_step=state.current_step,
                    error=f"compensation gave up after {state.attempts - 1} executions; "
                    f"{state.error}",
                )
            else:
                state, failure = await self._backward(saga, state, failure, lost)
        return SagaOutcome(state.id, state.type, state.status, state.results, state.error, failure)

    async def _forward(
        self, saga: Saga, state: SagaState, lost: asyncio.Event, cut: Sequence[str]
    ) -> tuple[SagaState, BaseException | None]:
        for step in unrecorded(saga, state.results):
            failure: Exception | None = None
            try:
                state = await self.steps.run(
                    saga, _unknown_never_retried(step), state, lost, compensating=False
                )
            except (SagaLeaseLostError, CommitUnknownError):
                raise  # stop: the log says what committed; recovery goes on from there
            except Exception as error:  # noqa: BLE001 - a failed step is compensated
                failure = error
            finally:
                took_effect = self.steps.forget(state.id, step.key)
            if failure is not None:
                log.warning(
                    "saga step failed", saga_id=state.id, step=step.key, error=repr(failure)
                )
                own = took_effect or step.compensate_on_failure
                state = await self._compensate(
                    saga,
                    state,
                    first=[*cut, step.key] if own else cut,
                    error=f"step {step.key}: {_describe(failure)}",
                )
                return state, failure
        if state.status is RUNNING:  # every step had a record already (a shorter definition)
            state = await self._transition(state, status=COMPLETED, current_step=len(state.results))
        return state, None

    async def _compensate(
        self, saga: Saga, state: SagaState, *, first: Collection[str], error: str | None = None
    ) -> SagaState:
        """Record the compensations to run (by key, next first) and start compensating."""
        plan = compensation_plan(saga, state.results, first=first)
        return await self._transition(
            state,
            status=COMPENSATING if plan else COMPENSATED,
            current_step=len(plan),
            to_compensate=plan,
            error=error,
        )

    async def _backward(
        self, saga: Saga, state: SagaState, failure: BaseException | None, lost: asyncio.Event
    ) -> tuple[SagaState, BaseException | None]:
        if state.to_compensate is None:
            # Reopened after a refusal, or logged before compensations were recorded by
            # key: plan now, with the steps that may have been in flight.
            state = await self._compensate(saga, state, first=suspects(saga, state.results))
        while state.to_compensate:
            step = saga.step(state.to_compensate[0])
            if step is None:  # checked by _missing before any work; a bug if it happens
                raise RuntimeError(f"saga {state.id}: no step {state.to_compensate[0]!r}")
            try:
                state = await self.steps.run(
                    saga, _unknown_never_retried(step), state, lost, compensating=True
                )
            except (SagaLeaseLostError, CommitUnknownError):
                raise
            except Exception as error:  # noqa: BLE001 - recorded; an operator takes over
                log.error("saga compensation failed", saga_id=state.id, step=step.key)
                state = await self._transition(
                    state,
                    status=FAILED,
                    current_step=state.current_step,
                    error=f"compensation of {step.key}: {_describe(error)}; after {state.error}",
                )
                return state, error
        if state.status is COMPENSATING:  # nothing was left to undo
            state = await self._transition(state, status=COMPENSATED, current_step=0)
        return state, failure

    async def _transition(
        self,
        state: SagaState,
        *,
        status: SagaStatus,
        current_step: int,
        to_compensate: Sequence[str] | None = None,
        error: str | None = None,
    ) -> SagaState:
        async with self.database.transaction() as tx:
            new = await self.store.transition(
                tx.session, state, self.owner, status=status, current_step=current_step,
                to_compensate=to_compensate, error=error,
            )  # fmt: skip
        if new is None:
            raise SagaLeaseLostError(state.id)
        return new


def _missing(saga: Saga, state: SagaState) -> list[str]:
    """Recorded keys the definition lacks: the ones still to run over, or compensate."""
    if state.status is COMPENSATING and state.to_compensate is not None:
        return missing_steps(saga, state.to_compensate)
    return missing_steps(saga, state.results)


def _unknown_never_retried(step: SagaStep) -> SagaStep:
    """``step`` with a retry predicate that never retries :class:`CommitUnknownError`.

    Whatever the step's own ``retry_on`` says: the work may have committed, so running
    it again could apply it twice. The run stops instead.
    """
    retry_on = step.retry_on

    def predicate(error: BaseException) -> bool:
        return not isinstance(error, CommitUnknownError) and retry_on(error)

    return replace(step, retry_on=predicate)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
