"""The saga orchestrator: runs steps, records each one by key, compensates, recovers.

What happens on a crash at each point is tabled in docs/sagas.md ("What happens on a
crash"); in short, nothing is lost, and nothing half done stays that way once recovery
has run. The log (``corestone_sagas``) records completed steps by key, so recovery after
a deploy resumes by key: a recorded step never runs again, an unrecorded one runs in the
current definition's order, and a recorded key the definition lacks fails the saga with
an error naming it. Compensations to run are recorded by key too, next first.

A run holds a lease on its row (``locked_until``, renewed by every state write and by a
heartbeat every third of the lease). Recovery only takes sagas whose lease expired, and
every state write is fenced by owner, status and counter, so a process that lost its
lease can never record over the new owner (its transactional step rolls back). A commit
whose outcome is unknown (:class:`~corestone.errors.CommitUnknownError`) stops the run
as a lost lease does, never retried and never compensated on a guess. ``attempts``
counts executions; past ``max_attempts`` (a saga that kills its process every time)
recovery compensates instead, the step the log names in flight included, or marks a
compensation ``failed``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from corestone.clock import Clock, monotonic
from corestone.db.database import Database
from corestone.db.models import utc_now
from corestone.db.transactions import current_transaction
from corestone.errors import (
    CommitUnknownError,
    InvalidInputError,
    NotFoundError,
    SagaLeaseLostError,
)
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.sagas._driver import SagaDriver
from corestone.sagas._steps import StepRunner
from corestone.sagas.saga import Saga, SagaOutcome, SagaRegistry
from corestone.sagas.store import SagaState, SagaStatus, SagaStore, check_json

__all__ = ["SagaOrchestrator"]

log = get_logger(__name__)


class SagaOrchestrator:
    """Runs the sagas of a :class:`SagaRegistry` on one database, durably.

    One per process (it names itself as the lease owner). Sagas run in the caller's task;
    :meth:`recover` resumes those another process left behind, and
    :class:`~corestone.sagas.recovery.SagaRecoveryWorker` calls it periodically.

    Time comes only from the clocks given: ``clock`` (monotonic seconds) bounds every
    step's retries, ``wall_clock`` (aware UTC datetimes) stamps the log and its leases.
    """

    def __init__(
        self,
        database: Database,
        registry: SagaRegistry,
        *,
        metrics: Metrics | None = None,
        lease_seconds: float = 30.0,
        max_attempts: int = 5,
        owner: str | None = None,
        clock: Clock = monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if lease_seconds <= 0 or max_attempts < 1:
            raise ValueError("lease_seconds must be positive and max_attempts at least 1")
        self.database = database
        self.registry = registry
        self.owner = owner or f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self._store = SagaStore(lease_seconds, now=wall_clock)
        m = metrics if metrics is not None else Metrics()
        self._finished = m.counter(
            "saga_finished_total",
            "Sagas that reached an end state (completed, compensated, failed).",
            ["type", "status"],
        )
        self._started = m.counter("saga_started_total", "Sagas started.", ["type"])
        self._recovered = m.counter(
            "saga_recovered_total", "Sagas taken over by recovery.", ["type"]
        )
        steps = StepRunner(
            database,
            self._store,
            self.owner,
            m.counter("saga_step_retries_total", "Step attempts retried.", ["type", "step"]),
            clock,
        )
        self._driver = SagaDriver(database, self._store, steps, self.owner, max_attempts)

    async def run(self, saga: Saga | str, payload: Mapping[str, Any]) -> SagaOutcome:
        """Start a saga and run it to its end: completed, compensated, or failed.

        The saga must be registered, so that recovery in any process can resume it. Call
        it outside any transaction: each step commits on its own. Cancelled midway (a
        shutdown, a client gone), the run releases its lease and recovery resumes it.
        Raises :class:`SagaLeaseLostError` if another process took the saga over.
        """
        definition = self._definition(saga.name if isinstance(saga, Saga) else saga)
        if current_transaction() is not None:
            raise RuntimeError("run a saga outside a transaction: each step commits on its own")
        try:
            check_json(payload)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(
                f"a saga payload must be JSON: {error}", field="payload", rule="json"
            ) from error
        inserted: list[SagaState] = []
        try:
            async with self.database.transaction() as tx:
                state = await self._store.insert(
                    tx.session, saga_type=definition.name, payload=payload, owner=self.owner
                )
                inserted.append(state)
        except asyncio.CancelledError:
            # Cancelled in or after COMMIT (closing the session): the row may exist, leased
            # to us. Hand it to recovery now, as a run cancelled later does.
            for row in inserted:
                await asyncio.gather(asyncio.shield(self._release(row.id)), return_exceptions=True)
            raise
        self._started.labels(type=definition.name).inc()
        log.info("saga started", saga_id=state.id, saga_type=definition.name)
        return await self._execute(definition, state, strays_fail=True)

    async def get(self, saga_id: str) -> SagaState | None:
        """The saga's row as it is now, or None."""
        async with self.database.transaction(read_only=True) as tx:
            return await self._store.get(tx.session, saga_id)

    async def recover(self, *, limit: int = 10) -> list[SagaOutcome]:
        """Claim up to ``limit`` stuck sagas of known types and run each to its end.

        Stuck means ``running`` or ``compensating`` with an expired lease. Claimed sagas
        run concurrently; one that another process takes over meanwhile is left out.
        """
        if not len(self.registry):
            return []
        claimed: list[SagaState] = []
        try:
            async with self.database.transaction() as tx:
                claimed = await self._store.claim_stuck(
                    tx.session,
                    types=self.registry.names,
                    owner=self.owner,
                    limit=limit,
                    postgresql=self.database.dialect == "postgresql",
                )
        except asyncio.CancelledError:
            # Cancelled in or after COMMIT (a shutdown mid-pass): what we may have claimed
            # goes back to recovery now, not once our lease runs out.
            await asyncio.gather(
                *(asyncio.shield(self._release(state.id)) for state in claimed),
                return_exceptions=True,
            )
            raise
        for state in claimed:
            self._recovered.labels(type=state.type).inc()
            log.warning(
                "recovering saga",
                saga_id=state.id,
                saga_type=state.type,
                status=state.status.value,
                step=state.current_step,
                attempts=state.attempts,
            )
        results = await asyncio.gather(
            *(self._execute(self._definition(s.type), s, strays_fail=False) for s in claimed),
            return_exceptions=True,
        )
        outcomes: list[SagaOutcome] = []
        for state, result in zip(claimed, results, strict=True):
            if isinstance(result, SagaOutcome):
                outcomes.append(result)
            elif isinstance(result, SagaLeaseLostError):
                log.warning("saga taken over during recovery", saga_id=state.id)
            elif isinstance(result, Exception | asyncio.CancelledError):
                # The row keeps its state; it is retried once the lease expires. A
                # CancelledError here is a step's own (had this pass been cancelled, gather
                # would have raised): one saga's failure must not end the pass, or the worker.
                log.error("saga recovery failed", saga_id=state.id, error=repr(result))
            else:
                raise result
        return outcomes

    async def retry_compensation(self, saga_id: str) -> SagaOutcome:
        """Compensate a ``failed`` saga again, from the compensation that failed.

        For operators, once the cause is fixed (the refund API is back, a row was
        repaired). Raises NotFoundError unless the saga exists and is ``failed``.
        """
        known = await self.get(saga_id)
        if known is None or known.status is not SagaStatus.FAILED:
            raise NotFoundError(f"no failed saga {saga_id}")
        self._definition(known.type)  # only types this process can run
        async with self.database.transaction() as tx:
            state = await self._store.reopen_failed(tx.session, saga_id, self.owner)
        if state is None:  # another operator got there first
            raise NotFoundError(f"no failed saga {saga_id}")
        log.warning("retrying saga compensation", saga_id=saga_id, step=state.current_step)
        return await self._execute(self._definition(state.type), state, strays_fail=True)

    def _definition(self, name: str) -> Saga:
        saga = self.registry.get(name)
        if saga is None:
            raise ValueError(f"saga {name!r} is not registered with this orchestrator")
        return saga

    async def _execute(self, saga: Saga, state: SagaState, *, strays_fail: bool) -> SagaOutcome:
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(state.id, lost))
        try:
            outcome = await self._driver.drive(saga, state, lost, strays_fail=strays_fail)
        except asyncio.CancelledError:
            # The steps' transactions have rolled back by now; hand the saga to recovery
            # at once instead of after the lease (a shutdown, a client that went away).
            await asyncio.gather(asyncio.shield(self._release(state.id)), return_exceptions=True)
            raise
        except CommitUnknownError:
            # Keep the lease: a commit the server may still be finishing must be visible
            # before another process reads the log and resumes from it.
            log.warning("saga stopped: a commit's outcome is unknown", saga_id=state.id)
            raise
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        self._finished.labels(type=saga.name, status=outcome.status.value).inc()
        log.info(
            "saga finished", saga_id=outcome.id, saga_type=saga.name, status=outcome.status.value
        )
        return outcome

    async def _release(self, saga_id: str) -> None:
        try:
            async with asyncio.timeout(5):
                async with self.database.transaction() as tx:
                    await self._store.release(tx.session, saga_id, self.owner)
        except Exception as error:  # noqa: BLE001 - the lease then simply expires
            log.warning("saga lease release failed", saga_id=saga_id, error=repr(error))
        else:
            log.info("saga interrupted; released for recovery", saga_id=saga_id)

    async def _heartbeat(self, saga_id: str, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with self.database.transaction() as tx:
                    held = await self._store.renew(tx.session, saga_id, self.owner)
            except Exception as error:  # noqa: BLE001 - the next beat may get through
                log.warning("saga lease renewal failed", saga_id=saga_id, error=repr(error))
                continue
            if not held:
                lost.set()
                return
