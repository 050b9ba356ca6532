"""Durable sagas: multi-step work with compensations, recorded in the database, recovered.

Built on :mod:`corestone.db` (a saga's log is one row of ``corestone_sagas``; each step
commits in its own transaction). See docs/sagas.md.
"""

from corestone import _extras

# Sagas are rows in the database: SQLAlchemy, from either database extra.
with _extras.requires_extra(__name__, "postgres", "sqlite"):
    from corestone.sagas.orchestrator import SagaOrchestrator
    from corestone.sagas.recovery import SagaRecoveryWorker, load_registry
    from corestone.sagas.saga import (
        STEP_RETRY,
        Saga,
        SagaOutcome,
        SagaRegistry,
        SagaStep,
        StepContext,
        is_transient,
    )
    from corestone.sagas.store import SagaRecord, SagaState, SagaStatus


__all__ = [
    "STEP_RETRY",
    "Saga",
    "SagaOrchestrator",
    "SagaOutcome",
    "SagaRecord",
    "SagaRecoveryWorker",
    "SagaRegistry",
    "SagaState",
    "SagaStatus",
    "SagaStep",
    "StepContext",
    "is_transient",
    "load_registry",
]
