"""Persistence on SQLAlchemy 2: database, transactions, models, repositories, audit, migrations.

Durable sagas, built on top of this package, live in :mod:`corestone.sagas`.
"""

from corestone import _extras

# Every module below needs SQLAlchemy: a missing extra is named here, once, for all of them.
with _extras.requires_extra(__name__, "postgres", "sqlite"):
    from corestone.db._read_path import ReadOnlyTransactionError
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
        loaded_instance,
        utc_now,
    )
    from corestone.db.pagination import (
        MAX_CURSOR_LENGTH,
        CursorCodec,
        KeysetPage,
        OffsetPage,
        check_limit,
    )
    from corestone.db.repository import Repository
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
    "MAX_CURSOR_LENGTH",
    "TRANSACTION_RETRY",
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
    "ReadOnlyTransactionError",
    "Repository",
    "SoftDeleteMixin",
    "SortKey",
    "TenantMixin",
    "TimestampMixin",
    "Transaction",
    "TransactionBackend",
    "UTCDateTime",
    "VersionMixin",
    "audit_entries",
    "check_limit",
    "current_transaction",
    "loaded_instance",
    "scope_session",
    "transient_cause",
    "upgrade",
    "utc_now",
]
