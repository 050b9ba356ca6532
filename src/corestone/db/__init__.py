"""Persistence on SQLAlchemy 2: the database, model base, and migrations."""

from corestone.db.database import Database, PoolOptions
from corestone.db.migrations import upgrade
from corestone.db.models import Base, BigIntId, IdMixin, TimestampMixin, UTCDateTime

__all__ = [
    "Base",
    "BigIntId",
    "Database",
    "IdMixin",
    "PoolOptions",
    "TimestampMixin",
    "UTCDateTime",
    "upgrade",
]
