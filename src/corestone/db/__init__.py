"""Persistence on SQLAlchemy 2: the database, transactions, model base, and migrations."""

from corestone.db.audit import AuditEntry, audit_entries
from corestone.db.database import Database, PoolOptions
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
from corestone.db.transactions import (
    NO_RETRY,
    IsolationLevel,
    RetryPolicy,
    Transaction,
    current_transaction,
    transient_cause,
)

__all__ = [
    "AuditEntry",
    "AuditedMixin",
    "Base",
    "BigIntId",
    "Database",
    "IdMixin",
    "IsolationLevel",
    "NO_RETRY",
    "PoolOptions",
    "RetryPolicy",
    "SoftDeleteMixin",
    "TenantMixin",
    "TimestampMixin",
    "Transaction",
    "UTCDateTime",
    "VersionMixin",
    "audit_entries",
    "current_transaction",
    "transient_cause",
    "upgrade",
    "utc_now",
]
