"""Persistence on SQLAlchemy 2: database, transactions, models, repositories, audit, migrations."""

from corestone.db.audit import AuditEntry, audit_entries
from corestone.db.database import Database, PoolOptions
from corestone.db.filters import SortKey
from corestone.db.migrations import upgrade
from corestone.db.models import (
    AuditedMixin,
    Base,
    BigIntId,
    IdMixin,
    SoftDeleteMixin,
    TenantMixin,
    TimestampMixin,
    UTCDateTime,
    VersionMixin,
    utc_now,
)
from corestone.db.pagination import CursorCodec, KeysetPage, OffsetPage
from corestone.db.repository import Repository
from corestone.db.saga import (
    STEP_RETRY,
    Saga,
    SagaOutcome,
    SagaRegistry,
    SagaStep,
    StepContext,
    is_transient,
)
from corestone.db.saga_orchestrator import SagaOrchestrator
from corestone.db.saga_recovery import SagaRecoveryWorker
from corestone.db.saga_store import SagaRecord, SagaState, SagaStatus
from corestone.db.scoping import ALL_WORKSPACES, AllWorkspaces, scope_session
from corestone.db.transactions import (
    TRANSACTION_RETRY,
    IsolationLevel,
    Transaction,
    TransactionBackend,
    current_transaction,
    transient_cause,
)

__all__ = [
    "ALL_WORKSPACES",
    "AllWorkspaces",
    "AuditEntry",
    "AuditedMixin",
    "Base",
    "BigIntId",
    "CursorCodec",
    "Database",
    "IdMixin",
    "IsolationLevel",
    "KeysetPage",
    "OffsetPage",
    "PoolOptions",
    "Repository",
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
    "SoftDeleteMixin",
    "SortKey",
    "StepContext",
    "TRANSACTION_RETRY",
    "TenantMixin",
    "TimestampMixin",
    "Transaction",
    "TransactionBackend",
    "UTCDateTime",
    "VersionMixin",
    "audit_entries",
    "current_transaction",
    "is_transient",
    "scope_session",
    "transient_cause",
    "upgrade",
    "utc_now",
]
