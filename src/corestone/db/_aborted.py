"""A PostgreSQL transaction that a failed statement aborted: its COMMIT is not a commit.

After a statement fails, PostgreSQL refuses every later statement of the transaction
until it is rolled back (or rolled back to a savepoint), and answers COMMIT with a
ROLLBACK, which asyncpg and SQLAlchemy report as a successful commit. Code that catches
a statement's error and carries on (an "insert, and on IntegrityError update" that works
on SQLite) lost the whole transaction while its outcome said ``commit`` and its commit
hooks ran.

The engine's ``handle_error`` marks the connection; its next BEGIN clears the mark.
Before a write transaction's COMMIT, a marked connection is asked ``SELECT 1``: in an
aborted transaction that fails, and the commit is refused with that error (outcome:
rollback). A transaction in which no statement failed costs nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event

if TYPE_CHECKING:
    from sqlalchemy.engine import ExceptionContext
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

__all__ = ["refuse_aborted", "watch_failed_statements"]

_FAILED: Final = "corestone_statement_failed"


def watch_failed_statements(engine: AsyncEngine) -> None:
    """Mark a PostgreSQL connection on which a statement failed, until its next BEGIN."""
    if engine.dialect.name != "postgresql":
        return  # SQLite: a failed statement aborts nothing else

    def mark(context: ExceptionContext) -> None:
        if context.connection is not None:
            context.connection.info[_FAILED] = True

    def clear(connection: Any) -> None:
        connection.info.pop(_FAILED, None)

    event.listen(engine.sync_engine, "handle_error", mark)
    event.listen(engine.sync_engine, "begin", clear)


async def refuse_aborted(session: AsyncSession) -> None:
    """Raise the database's error if a failed statement left this transaction aborted."""
    if not session.in_transaction():
        return
    connection = await session.connection()
    sync = connection.sync_connection
    if sync is None or not sync.info.get(_FAILED):
        return
    await connection.exec_driver_sql("SELECT 1")
