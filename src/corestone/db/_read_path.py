"""The read path: read-only transactions that don't pay for writes.

``db.transaction(read_only=True)`` at the default isolation is the one read path:

- **PostgreSQL**: the session's connection runs in autocommit (SQLAlchemy's
  ``isolation_level="AUTOCOMMIT"`` execution option, reset when the connection goes back
  to the pool). Each statement is its own implicit transaction: no BEGIN and no COMMIT
  round trip, and each statement reads its own snapshot, which is what READ COMMITTED
  gives anyway. A read that needs one snapshot across statements asks for it:
  ``transaction(read_only=True, isolation="REPEATABLE READ")`` keeps a real
  ``BEGIN READ ONLY`` transaction.
- **SQLite**: a deferred ``BEGIN`` (a WAL reader: it never waits for the write lock),
  never ``BEGIN IMMEDIATE``, which write transactions keep (ADR 0005).

An autocommitted write would be durable at once, with nothing to roll back, so a
read-only session refuses to write on both databases, before anything is sent, and
raises :class:`ReadOnlyTransactionError`: an ORM flush with pending changes; any
INSERT/UPDATE/DELETE/DDL statement, whether run through the session or on its
connection, a data-modifying CTE included; SQL text (``text()``, ``exec_driver_sql``)
that begins with a writing keyword; a repository's COPY. Not seen: a function with side
effects called from a SELECT, and SQL sent on the DBAPI driver's own connection. A block nested
in a read-only transaction shares it without a SAVEPOINT: there is nothing to undo, and
PostgreSQL refuses SAVEPOINT outside a transaction block.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection, Engine, TextClause, event
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from sqlalchemy.sql.dml import UpdateBase

__all__ = [
    "ReadOnlyTransactionError",
    "is_read_only",
    "mark_read_only",
    "refuse_if_read_only",
    "session_options",
]

_READ_ONLY: Final = "corestone_read_only"
# The first keyword of SQL text that writes (a WITH holding DML in text is not seen).
_WRITING_SQL: Final = (
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "UPSERT",
    "REPLACE",
    "TRUNCATE",
    "CREATE",
    "DROP",
    "ALTER",
    "COPY",
    "GRANT",
    "REVOKE",
)


class ReadOnlyTransactionError(RuntimeError):
    """A write was attempted in a read-only transaction (a programming error)."""


def session_options(dialect: str, *, isolation: str | None, read_only: bool) -> dict[str, Any]:
    """The connection's execution options for a transaction of this kind.

    ``corestone_read_only`` picks SQLite's deferred BEGIN (see ``Database``).
    """
    options: dict[str, Any] = {_READ_ONLY: read_only}
    if dialect != "postgresql":
        return options
    if read_only and isolation is None:
        options["isolation_level"] = "AUTOCOMMIT"
        return options
    if isolation is not None:
        options["isolation_level"] = isolation
    if read_only:
        options["postgresql_readonly"] = True
    return options


def mark_read_only(session: AsyncSession) -> None:
    """Make ``session`` refuse writes (see the module docstring)."""
    session.sync_session.info[_READ_ONLY] = True


def is_read_only(session: AsyncSession) -> bool:
    """Whether ``session`` belongs to a read-only transaction."""
    return bool(session.sync_session.info.get(_READ_ONLY))


def refuse_if_read_only(session: AsyncSession, what: str) -> None:
    """Raise :class:`ReadOnlyTransactionError` if ``session`` is read-only.

    For writes that bypass SQLAlchemy's events (a COPY on the driver's connection).
    """
    if is_read_only(session):
        raise _refuse(what)


def _refuse(what: str) -> ReadOnlyTransactionError:
    return ReadOnlyTransactionError(
        f"{what} in a read-only transaction; use db.transaction() to write"
    )


@event.listens_for(Session, "before_flush")
def _refuse_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    if not session.info.get(_READ_ONLY):
        return
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
        raise _refuse("pending ORM changes were flushed")


@event.listens_for(Session, "do_orm_execute")
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.session.info.get(_READ_ONLY) and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise _refuse(f"a {type(state.statement).__name__.upper()} statement was run")


@event.listens_for(Engine, "before_cursor_execute")
def _refuse_on_connection(
    connection: Connection,
    _cursor: Any,
    statement: str,
    _parameters: Any,
    context: ExecutionContext | None,
    _executemany: bool,
) -> None:
    # Every statement SQLAlchemy sends, from the ORM, Core on the session's connection or
    # driver SQL: the read path's connections carry the option, so no session is needed.
    if connection.get_execution_options().get(_READ_ONLY) and _writes(statement, context):
        raise _refuse("a writing statement was run")


def _writes(statement: str, context: ExecutionContext | None) -> bool:
    if not isinstance(context, DefaultExecutionContext) or context.compiled is None:
        return _writing_text(statement)  # exec_driver_sql
    if context.isinsert or context.isupdate or context.isdelete or context.isddl:
        return True
    compiled = context.compiled
    ctes = getattr(compiled, "ctes", None)  # SQLCompiler's: a data-modifying CTE
    if ctes and any(isinstance(cte.element, UpdateBase) for cte in ctes):
        return True
    return isinstance(compiled.statement, TextClause) and _writing_text(statement)


def _writing_text(statement: str) -> bool:
    return statement.lstrip(" \t\r\n(")[:8].upper().startswith(_WRITING_SQL)
