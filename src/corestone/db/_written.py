"""Whether a transaction has written, and which rows its ORM flushes wrote.

Two questions the repository cache asks (:mod:`._cache`): may this transaction read
through the cache (not once it has written: it must see its own uncommitted rows), and
which rows did the ORM unit of work change behind the repository's back (an object a
repository returned, changed and committed), so their tags are invalidated after commit
like a repository write's. Both are answered by listeners on every engine and session,
so nothing depends on when a repository was made or how the SQL was sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, Engine, Table, TextClause, event, inspect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction

from corestone.cache.keys import EVERY_WORKSPACE, GLOBAL
from corestone.db._model_info import table_identity
from corestone.db._pool import HAS_CACHE
from corestone.db.models import TenantMixin

if TYPE_CHECKING:
    from corestone.cache.tiered import TieredCache
    from corestone.db.transactions import Transaction

__all__ = ["invalidate_flushed_after_commit", "mark_written", "wrote"]

_WROTE: Final = "corestone_wrote"
_FLUSHED: Final = "corestone_flushed"
_FLUSH_HOOK: Final = "corestone_flush_hook"
# Driver SQL that cannot write: SELECT, and transaction control (SQLite's BEGIN is ours).
_READ_ONLY_SQL: Final = ("SELECT", "BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "SHOW")


def mark_written(session: AsyncSession | Session) -> None:
    """Record that the current transaction of ``session`` has written."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info[_WROTE] = sync.get_transaction()


def wrote(session: AsyncSession, connection: Connection) -> bool:
    """Whether this session's transaction, on ``connection``, has written by any path.

    Seen: repository writes (COPY included), pending ORM changes, and every INSERT,
    UPDATE, DELETE, ``text()`` or other non-SELECT statement sent on the transaction's
    connection (ORM flushes, ORM and Core DML, ``bulk_update_mappings``,
    ``connection.execute``, ``exec_driver_sql``), before or after a repository was made.
    Not seen: SQL sent on the DBAPI driver's own connection object.
    """
    sync = session.sync_session
    marked = sync.info.get(_WROTE)
    if marked is not None and marked is sync.get_transaction():
        return True
    if sync.new or sync.deleted or sync.dirty:
        return True
    return connection.info.get(_WROTE) is connection.get_transaction()


@event.listens_for(Engine, "before_cursor_execute")
def _on_cursor_execute(
    connection: Connection,
    _cursor: Any,
    statement: str,
    _parameters: Any,
    context: ExecutionContext | None,
    _executemany: bool,
) -> None:
    # Every engine, every statement, whoever sent it: mark the connection's transaction
    # as written unless the statement is known to only read. Cheap: a few attribute reads.
    if _may_write(statement, context):
        transaction = connection.get_transaction()
        if transaction is not None:
            connection.info[_WROTE] = transaction


def _may_write(statement: str, context: ExecutionContext | None) -> bool:
    if not isinstance(context, DefaultExecutionContext) or context.compiled is None:
        return not statement.lstrip()[:9].upper().startswith(_READ_ONLY_SQL)  # driver SQL
    if context.isinsert or context.isupdate or context.isdelete or context.isddl:
        return True
    # An ORM or Core SELECT, or SQLAlchemy's own SAVEPOINT/RELEASE/ROLLBACK TO, only
    # read; opaque text() may write (reading uncached is the safe side).
    return isinstance(context.compiled.statement, TextClause)


# -- rows the ORM flushed ------------------------------------------------------------------


def invalidate_flushed_after_commit(tx: Transaction, cache: TieredCache) -> None:
    """Invalidate, once ``tx``'s outermost transaction commits, the rows the ORM flushed.

    A repository returns ORM objects; changing one and committing (the unit of work) is
    not a repository write, but it changes the row all the same: its
    ``entity:{table}:{id}`` (and ``workspace:{id}``) tags are invalidated like a write's.
    Registered once per transaction by every repository with a cache. Rows flushed in a
    savepoint that rolled back are invalidated too (harmless: dropping is always safe).
    """
    root = tx
    while root.parent is not None:
        root = root.parent
    sync = root.session.sync_session
    sync.info[HAS_CACHE] = True  # a cache given to the repository, not the database: record
    began = sync.get_transaction()
    if began is None or sync.info.get(_FLUSH_HOOK) is began:
        return
    sync.info[_FLUSH_HOOK] = began

    async def invalidate() -> None:
        flushed = sync.info.get(_FLUSHED)
        if flushed is None or flushed[0] is not began:
            return
        for where, tags in flushed[1].items():
            if where is not None:
                await cache.invalidate_tags(sorted(tags), workspace=where)
                continue
            for tag in sorted(tags):  # the row's workspace was not loaded: look everywhere
                await cache.invalidate_pattern(tag, workspace=EVERY_WORKSPACE)

    root.after_commit(invalidate)
    root.after_unknown(invalidate)


@event.listens_for(Session, "after_flush")
def _on_flush(session: Session, _flush: UOWTransaction) -> None:
    # Every session of a database with a cache: remember the rows this transaction's
    # flushes wrote, by cache scope, for invalidate_flushed_after_commit. Only rows with a
    # one-column key on a table. With no cache there is nothing to invalidate.
    if not session.info.get(HAS_CACHE):
        return
    began = session.get_transaction()
    flushed: tuple[object, dict[str | int | None, set[str]]] | None = session.info.get(_FLUSHED)
    if flushed is None or flushed[0] is not began:
        flushed = (began, {})
        session.info[_FLUSHED] = flushed
    for obj in (*session.new, *session.dirty, *session.deleted):
        state = inspect(obj)
        mapper = state.mapper
        table = mapper.local_table
        if not isinstance(table, Table) or len(mapper.primary_key) != 1:
            continue
        # Values from the state's dict, never attribute access: that could load (I/O).
        if state.key is not None:
            pk = state.key[1][0]
        else:  # inserted just now: the key is in the dict
            pk = state.dict.get(mapper.get_property_by_column(mapper.primary_key[0]).key)
        if pk is None:
            continue
        tag = f"entity:{table_identity(table)}:{pk}"
        scopes: list[str | int | None] = [GLOBAL]
        if isinstance(obj, TenantMixin):
            # The workspace now and, if the flush moved the row, the one it left.
            moved = state.attrs.workspace_id.history.deleted or ()
            workspaces = {state.dict.get("workspace_id"), *moved}
            scopes = [w if isinstance(w, int) else None for w in workspaces]  # None: unknown
        for where in scopes:
            flushed[1].setdefault(where, set()).add(tag)
            if isinstance(where, int):
                flushed[1][where].add(f"workspace:{where}")
