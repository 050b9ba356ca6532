"""Saga recovery in the background: a component that resumes sagas other runs left behind.

A process that dies mid-saga leaves its row ``running`` or ``compensating`` with a lease
that stops being renewed. :class:`SagaRecoveryWorker` asks the orchestrator every
``interval_seconds`` to claim such sagas (at most ``batch`` per pass) and run them to
their end. Any number of workers may run against one database — claims are atomic and
every state write is fenced by owner — so taskboard runs one in each ``serve`` process
by default and in ``taskboard worker`` processes at scale.
"""

from __future__ import annotations

import importlib

from corestone.background import PassLoop
from corestone.errors import InvalidInputError
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger
from corestone.sagas.orchestrator import SagaOrchestrator
from corestone.sagas.saga import SagaOutcome, SagaRegistry

__all__ = ["SagaRecoveryWorker", "load_registry"]

log = get_logger(__name__)


class SagaRecoveryWorker:
    """Periodic, bounded saga recovery; a component (``start`` / ``aclose``).

    ``aclose`` lets a pass in progress finish for up to ``drain_seconds``, then cancels
    it; a saga cut off that way keeps its recorded state and is recovered (by this or
    another process) once its lease expires.
    """

    name = "saga-recovery"

    def __init__(
        self,
        orchestrator: SagaOrchestrator,
        *,
        interval_seconds: float = 10.0,
        batch: int = 10,
        drain_seconds: float = 5.0,
    ) -> None:
        if interval_seconds <= 0 or batch < 1:
            raise ValueError("interval_seconds must be positive and batch at least 1")
        self.orchestrator = orchestrator
        self.interval_seconds = interval_seconds
        self.batch = batch
        self.drain_seconds = drain_seconds
        self._recovered = 0
        # Waiting first leaves the process time to migrate its schema, and a saga a
        # crashed predecessor left is not claimable before its lease expires anyway.
        self._passes = PassLoop(
            self.name, self._pass, poll_seconds=interval_seconds, drain_seconds=drain_seconds
        )

    @property
    def running(self) -> bool:
        return self._passes.running

    async def recover_once(self) -> list[SagaOutcome]:
        """One pass: claim up to ``batch`` stuck sagas and run them to their end."""
        return await self.orchestrator.recover(limit=self.batch)

    async def check(self) -> CheckResult:
        """Health: ``warn`` while the last pass failed (the database is still checked on its own).

        Observed value: sagas recovered since start. ``warn`` too if the worker's loop
        ended while it should run: nothing would recover sagas in this process any more.
        """
        if self._passes.died:
            return CheckResult(
                HealthStatus.WARN,
                self._recovered,
                "sagas",
                output="the recovery worker stopped unexpectedly",
            )
        if (error := self._passes.last_error) is not None:
            return CheckResult(
                HealthStatus.WARN, self._recovered, "sagas", output=f"last pass: {error}"
            )
        return CheckResult(HealthStatus.PASS, self._recovered, "sagas")

    async def start(self) -> None:
        """Begin passes in the background, the first after one interval."""
        self._passes.start()

    async def aclose(self) -> None:
        """Stop after the pass in progress (bounded by ``drain_seconds``). Idempotent.

        The worker's task has ended when this returns, even when this call is cancelled
        (a component stop timeout shorter than the drain): the pass is then cancelled
        and awaited first, so no pass outlives shutdown and touches a closed database.
        """
        await self._passes.stop()

    async def _pass(self) -> bool:
        outcomes = await self.recover_once()
        self._recovered += len(outcomes)
        return len(outcomes) >= self.batch  # a full batch: more may be waiting


def load_registry(reference: str) -> SagaRegistry:
    """The :class:`SagaRegistry` named by ``"package.module:attribute"``.

    The attribute may be a registry or a callable returning one (a factory keeps import
    side effects out of the module). Used by ``corestone saga recover --app …``.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise InvalidInputError(
            f"{reference!r} is not of the form module:attribute", field="app", rule="module:attr"
        )
    try:
        target: object = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InvalidInputError(
            f"cannot load {reference!r}: {error}", field="app", rule="importable"
        ) from error
    if callable(target) and not isinstance(target, SagaRegistry):
        target = target()
    if not isinstance(target, SagaRegistry):
        raise InvalidInputError(
            f"{reference!r} is a {type(target).__name__}, not a SagaRegistry",
            field="app",
            rule="saga_registry",
        )
    return target
