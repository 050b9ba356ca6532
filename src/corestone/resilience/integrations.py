"""Put a SQLAlchemy engine or a redis-py asyncio client behind a named breaker, in one line.

``guard_engine(engine, registry.get("database"))`` and
``guard_redis(client, registry.get("redis"))``. Later dependencies (an event broker, email
providers, webhooks) do the same with ``registry.get(name)`` and ``breaker.acall``.

Only unavailability counts as a failure: a dropped or refused connection, a timeout.
A constraint violation or bad input means the dependency answered, so it counts as a
success; otherwise a burst of bad requests would cut every user off the database.

SQLAlchemy and redis-py come with extras (``postgres``/``sqlite``, ``redis``): nothing here
imports them before it is handed one of their objects, so the breaker core needs neither.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

from corestone.errors import CorestoneError
from corestone.resilience.breaker import CircuitBreaker

if TYPE_CHECKING:
    from sqlalchemy import exc
    from sqlalchemy.engine import Connection, ExceptionContext
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "client_gave_up",
    "database_unavailable",
    "guard_engine",
    "guard_redis",
    "redis_unavailable",
]

_START = "corestone_breaker_started"

_SQLITE_CANNOT_SERVE = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
"""SQLite primary result codes that mean the database cannot serve: BUSY, LOCKED, NOMEM,
READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB. sqlite3 raises
``OperationalError`` for a bad statement too (SQLITE_ERROR: no such table, a syntax
error), and that is the database answering."""


def _sqlite_code(error: exc.DBAPIError) -> int | None:
    code = getattr(error.orig, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def database_unavailable(error: BaseException) -> bool:
    """Whether a database error means "cannot reach it" rather than "it said no"."""
    # Not imported: an error can only be SQLAlchemy's if SQLAlchemy is already loaded.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        sqlite_code = _sqlite_code(error)
        if sqlite_code is not None:
            return sqlite_code in _SQLITE_CANNOT_SERVE
        return isinstance(
            error, sa_exc.OperationalError | sa_exc.InterfaceError
        ) and not isinstance(error, sa_exc.IntegrityError)
    if sa_exc is not None and isinstance(error, sa_exc.TimeoutError):  # the pool's checkout
        return True
    return isinstance(error, OSError | TimeoutError | ConnectionError)


def client_gave_up(error: BaseException) -> bool:
    """Whether a statement ended because the client stopped waiting, not the database.

    Asyncio cancellation (also what ``asyncio.timeout`` raises inside) and the driver's
    client-side statement timeout (asyncpg ``command_timeout``: a bare ``TimeoutError``).
    SQLAlchemy reports a cancellation as a disconnect, as it must invalidate the
    connection, but a caller's own timeout is not the database failing, unless the
    database had left it unanswered for the breaker's ``slow_call_seconds`` (see
    :func:`guard_engine`).
    """
    return not isinstance(error, Exception) or type(error) is TimeoutError


def guard_engine(engine: AsyncEngine, breaker: CircuitBreaker) -> None:
    """Count ``engine``'s connect and execute failures in ``breaker``; reject when open.

    Every statement asks the breaker first (``before_cursor_execute``) and reports its
    outcome after; connection attempts are refused while the breaker is OPEN, so a dead
    server is not hammered with connects. Errors are classified by
    :func:`database_unavailable`, whatever the breaker's own exception lists say.

    A statement or connect the caller gave up on (:func:`client_gave_up`) counts for
    nothing, unless it had waited ``slow_call_seconds`` or more: then the database left
    it unanswered that long, and it is a slow failure. Without that, a server gone silent
    (a network partition: no refusal, no reset) would never open the breaker, as every
    caller's own timeout would hide it.
    """
    from sqlalchemy import event  # the engine came from SQLAlchemy: it is installed

    sync_engine = engine.sync_engine
    clock = breaker.clock
    slow = breaker.config.slow_call_seconds

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(conn: Connection, cursor: Any, statement: str, params: Any, context: Any,
                executemany: bool) -> None:  # fmt: skip
        conn.info[_START] = (breaker.permit(), clock())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _after(conn: Connection, cursor: Any, statement: str, params: Any, context: Any,
               executemany: bool) -> None:  # fmt: skip
        started = conn.info.pop(_START, None)
        if started is not None:
            breaker.record_outcome(started[0], clock() - started[1])

    @event.listens_for(sync_engine, "handle_error")
    def _error(context: ExceptionContext) -> None:
        if isinstance(context.original_exception, CorestoneError):
            return  # our own rejection, already counted as not permitted
        started = None
        if context.connection is not None:
            started = context.connection.info.pop(_START, None)
        if started is None:
            return  # not a guarded statement (connect failures are counted in _connect)
        if client_gave_up(context.original_exception):
            waited = clock() - started[1]
            if waited >= slow:
                breaker.record_outcome(started[0], waited, failed=True)  # left unanswered that long
            else:
                breaker.release(started[0])  # the caller gave up: nothing said about the database
            return
        failed = context.is_disconnect or database_unavailable(
            context.sqlalchemy_exception or context.original_exception
        )
        breaker.record_outcome(started[0], clock() - started[1], failed=failed)

    @event.listens_for(sync_engine, "do_connect")
    def _connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> Any:
        # Connecting here (the documented use of do_connect) is what lets a refused or
        # timed-out connect count: drivers raise those before any statement exists.
        breaker.check_open()
        started = clock()
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception:
            # Whatever stops a connect (refused, timed out, or answered with an error such
            # as "too many connections", which asyncpg raises raw) leaves us unserved.
            breaker.record_unpermitted_failure()
            raise
        except BaseException:  # the caller gave up: count it only if it had waited long
            if clock() - started >= slow:
                breaker.record_unpermitted_failure()
            raise


def redis_unavailable(error: BaseException) -> bool:
    """Whether a redis-py error means the server could not be reached or timed out."""
    from redis import exceptions

    return isinstance(
        error,
        exceptions.ConnectionError | exceptions.TimeoutError | OSError | TimeoutError,
    )


def guard_redis(client: Any, breaker: CircuitBreaker) -> Any:
    """Send every command of a ``redis.asyncio.Redis`` client through ``breaker``.

    Wraps the client's ``execute_command`` in place and returns the client. Pipelines
    and pub/sub use their own connections and are not guarded.
    """
    original = client.execute_command
    clock = breaker.clock

    @functools.wraps(original)
    async def execute_command(*args: Any, **options: Any) -> Any:
        permit = breaker.permit()
        started = clock()
        try:
            result = await original(*args, **options)
        except BaseException as error:
            if not isinstance(error, Exception):
                breaker.release(permit)
            else:
                failed = redis_unavailable(error)
                breaker.record_outcome(permit, clock() - started, failed=failed)
            raise
        breaker.record_outcome(permit, clock() - started)
        return result

    client.execute_command = execute_command
    return client
