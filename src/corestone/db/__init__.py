"""Persistence on SQLAlchemy 2: the database, transactions, model base, and migrations."""

from corestone.db.database import Database, PoolOptions
from corestone.db.migrations import upgrade
from corestone.db.models import Base, BigIntId, IdMixin, TimestampMixin, UTCDateTime
from corestone.db.transactions import (
    NO_RETRY,
    IsolationLevel,
    RetryPolicy,
    Transaction,
    current_transaction,
    transient_cause,
)

__all__ = [
    "Base",
    "BigIntId",
    "Database",
    "IdMixin",
    "IsolationLevel",
    "NO_RETRY",
    "PoolOptions",
    "RetryPolicy",
    "TimestampMixin",
    "Transaction",
    "UTCDateTime",
    "current_transaction",
    "transient_cause",
    "upgrade",
]
