"""Driving one saga from its logged state to its end: forward, then back if it must.

Private to the orchestrator, which owns the lease around a drive. Every decision goes by
step key (:mod:`corestone.sagas._plan`), every state change is one fenced write, and a
lost lease or a commit whose outcome is unknown stops the drive where the log is.

What a dead run may have cut off is what its log's ``in_flight`` names: the external
steps started and not recorded. Only those (and the recorded steps) are compensated.
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

    async def drive(
        self, saga: Saga, state: SagaState, lost: asyncio.Event, *, strays_fail: bool
    ) -> SagaOutcome:
        """Run ``state`` to an end state; raises if the lease is lost or a commit unknown.

        ``strays_fail``: a ``CancelledError`` a step raises while this task is not being
        cancelled fails the step (``run``), instead of stopping the drive (recovery,
        which leaves the saga to a later pass).
        """
        failure: BaseException | None = None
        # A resumed run (after a crash, a cancellation, a lost lease) may have been cut
        # off inside an external step after its effect: the log names it in flight, and
        # if this run compensates before that step records again, it is compensated too.
        cut = _cut_off(saga, state)
        if missing := _missing(saga, state):
            state = await self._transition(
                state, status=FAILED, current_step=state.current_step, error=refusal(saga, missing)
            )
        elif state.attempts > self.max_attempts and state.status is RUNNING:
            state = await self._compensate(
                saga,
                state,
                first=cut,
                error=f"gave up after {state.attempts - 1} interrupted executions",
            )
        elif state.status is RUNNING:
            # A legacy row's guess becomes the log's list with the next in-flight write.
            state = replace(state, in_flight=tuple(cut))
            state, failure = await self._forward(saga, state, lost, cut, strays_fail)
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
                state, failure = await self._backward(saga, state, failure, lost, strays_fail)
        return SagaOutcome(state.id, state.type, state.status, state.results, state.error, failure)

    async def _forward(
        self,
        saga: Saga,
        state: SagaState,
        lost: asyncio.Event,
        cut: Sequence[str],
        strays_fail: bool,
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
            except asyncio.CancelledError as error:
                failure = _stray(step, error, strays_fail)
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
            in_flight=[],  # the plan names them now
            error=error,
        )

    async def _backward(
        self,
        saga: Saga,
        state: SagaState,
        failure: BaseException | None,
        lost: asyncio.Event,
        strays_fail: bool,
    ) -> tuple[SagaState, BaseException | None]:
        if state.to_compensate is None:
            # Reopened after a refusal, or logged before compensations were recorded by
            # key: plan now, with the steps the log names in flight.
            state = await self._compensate(saga, state, first=_cut_off(saga, state))
        while state.to_compensate:
            step = saga.step(state.to_compensate[0])
            if step is None:  # checked by _missing before any work; a bug if it happens
                raise RuntimeError(f"saga {state.id}: no step {state.to_compensate[0]!r}")
            error: Exception | None = None
            try:
                state = await self.steps.run(
                    saga, _unknown_never_retried(step), state, lost, compensating=True
                )
            except (SagaLeaseLostError, CommitUnknownError):
                raise
            except Exception as caught:  # noqa: BLE001 - recorded; an operator takes over
                error = caught
            except asyncio.CancelledError as caught:
                error = _stray(step, caught, strays_fail)
            if error is not None:
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
        in_flight: Sequence[str] | None = None,
        error: str | None = None,
    ) -> SagaState:
        async with self.database.transaction() as tx:
            new = await self.store.transition(
                tx.session, state, self.owner, status=status, current_step=current_step,
                to_compensate=to_compensate, in_flight=in_flight, error=error,
            )  # fmt: skip
        if new is None:
            raise SagaLeaseLostError(state.id)
        return new


def _stray(step: SagaStep, error: asyncio.CancelledError, strays_fail: bool) -> Exception:
    """A step's own ``CancelledError`` as its failure; re-raises a real cancellation.

    Real: this task is being cancelled (``cancelling()``). Not a failure either in a
    recovery drive (``strays_fail`` False), which leaves the saga to a later pass.
    """
    task = asyncio.current_task()
    if not strays_fail or (task is not None and task.cancelling()):
        raise error
    stray = RuntimeError(
        f"step {step.key} raised CancelledError while its task was not being cancelled"
    )
    stray.__cause__ = error
    return stray


def _cut_off(saga: Saga, state: SagaState) -> list[str]:
    """The external steps that may have taken effect without a record: the log's in flight.

    A row logged before the log kept ``in_flight`` (null) gets the old guess: every
    external step without a record.
    """
    if state.in_flight is None:
        return suspects(saga, state.results)
    return [key for key in state.in_flight if key not in state.results]


def _missing(saga: Saga, state: SagaState) -> list[str]:
    """Logged keys the definition lacks: recorded, in flight, or still to compensate."""
    if state.status is COMPENSATING and state.to_compensate is not None:
        return missing_steps(saga, state.to_compensate)
    return missing_steps(saga, [*state.results, *(state.in_flight or ())])


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
