"""Reading driver errors: worth a retry, outcome of a COMMIT, and the corestone error to raise.

Pure functions on exceptions, shared by transactions and the database. Only errors that
come from the driver (SQLAlchemy's wrappers and what they chain) are classified: an
``OSError`` or ``TimeoutError`` raised by application code inside a transaction is the
application's, and propagates as itself.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import exc

from corestone.errors import CommitUnknownError, ConflictError, CorestoneError, UnavailableError
from corestone.observability.logging import get_logger
from corestone.resilience.integrations import database_unavailable

__all__ = [
    "commit_outcome_unknown",
    "first_line",
    "raw_connect_error",
    "transient_cause",
    "translate_error",
]

log = get_logger(__name__)

_SQLSTATE_CAUSES = {"40001": "serialization", "40P01": "deadlock"}
# The server gave up on a statement: statement_timeout or a cancel request (57014),
# lock_timeout (55P03). The database is too busy to answer in time: 503, not a 500.
_SERVER_TIMEOUTS = ("57014", "55P03")
_LOCKED_MESSAGES = ("database is locked", "database table is locked")
_CONNECTION_EXCEPTION = "08"
_LOST_CONNECTION = ("ConnectionDoesNotExistError", "ConnectionResetError")
# asyncpg raises its bare InterfaceError (no SQLSTATE) before it writes anything to the
# socket: "connection is closed", "another operation is in progress".
_NOT_SENT = ("asyncpg", "InterfaceError")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE the server sent with ``error``, if it came from the server."""
    source = error.orig if isinstance(error, exc.DBAPIError) else error
    code = getattr(source, "sqlstate", None) or getattr(source, "pgcode", None)
    return code if isinstance(code, str) else None


def transient_cause(error: BaseException) -> str | None:
    """Why ``error`` is worth retrying the whole transaction for, or None if it is not.

    ``serialization`` / ``deadlock`` (PostgreSQL 40001 / 40P01, also when raised at
    COMMIT: the server refused the commit), ``disconnect`` (the connection was lost
    before COMMIT was sent) or ``locked`` (SQLite's busy lock). Looks through the
    ``__cause__`` chain, so it works on raw driver errors, SQLAlchemy's wrappers and
    corestone's translated errors alike. A :class:`CommitUnknownError` is never transient.
    A built-in ``ConnectionResetError`` counts only below a SQLAlchemy error: raised by
    the application's own network call inside the block, it is not the database's, and
    re-running the block would repeat that call.
    """
    from_driver = False
    for current in _chain(error):
        from_driver = from_driver or isinstance(current, exc.SQLAlchemyError)
        if isinstance(current, CommitUnknownError):
            return None
        code = _sqlstate(current)
        if code in _SQLSTATE_CAUSES:
            return _SQLSTATE_CAUSES[str(code)]
        if isinstance(current, exc.DBAPIError):
            if current.connection_invalidated:
                return "disconnect"
            if isinstance(current, exc.OperationalError) and any(
                m in str(current.orig) for m in _LOCKED_MESSAGES
            ):
                return "locked"
        if type(current).__name__ in _LOST_CONNECTION and (
            from_driver or type(current).__module__ != "builtins"
        ):
            return "disconnect"
    return None


def commit_outcome_unknown(error: BaseException) -> bool:
    """Whether a COMMIT that raised ``error`` may nonetheless have committed.

    True when the link broke before the server's answer arrived (a disconnect, a socket
    error, a client-side timeout). An error the server sent carries a SQLSTATE: that is
    a refusal, and nothing was committed. Class 08 ("connection exception") is the
    exception: drivers (asyncpg) set it themselves when the link breaks. A COMMIT the
    driver refused to send (the server had already closed the connection) is no
    unknown: the server rolled the transaction back when it closed the session.
    """
    if any(_never_sent(current) for current in _chain(error)):
        return False
    for current in _chain(error):
        code = _sqlstate(current)
        if code is not None and not code.startswith(_CONNECTION_EXCEPTION):
            return False
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OSError) or type(current).__name__ in _LOST_CONNECTION:
            return True
    return False


def _never_sent(error: BaseException) -> bool:
    kind = type(error)
    return kind.__module__.startswith(_NOT_SENT[0]) and kind.__name__ == _NOT_SENT[1]


def translate_error(error: BaseException) -> BaseException:
    """The corestone error for a driver error, or ``error`` itself if none fits.

    Messages stay generic because they reach HTTP clients; the driver's own text (which
    can name constraints, hosts and users) is logged here and kept as ``__cause__``.
    Anything that is not a SQLAlchemy error is returned as it is.
    """
    if isinstance(error, CorestoneError) or not isinstance(error, exc.SQLAlchemyError):
        return error
    translated: CorestoneError | None = None
    cause = transient_cause(error)
    if cause in ("serialization", "deadlock"):
        translated = ConflictError("the transaction conflicted with a concurrent one; try again")
    elif cause == "locked":
        translated = UnavailableError("the database is locked by another writer", retry_after=1.0)
    elif isinstance(error, exc.IntegrityError):
        translated = ConflictError("the change conflicts with existing data")
    elif isinstance(error, exc.TimeoutError):
        translated = UnavailableError("database connection pool exhausted", retry_after=1.0)
    elif any(_sqlstate(current) in _SERVER_TIMEOUTS for current in _chain(error)):
        translated = UnavailableError("the database did not answer in time", retry_after=1.0)
    elif database_unavailable(error):
        translated = UnavailableError("database unavailable", retry_after=1.0)
    if translated is None:
        return error
    log.warning("database error", code=translated.code, cause=first_line(error))
    return translated


def raw_connect_error(error: BaseException) -> bool:
    """Whether ``error``, raised by a checkout, came raw from the driver's connect.

    SQLAlchemy wraps the driver's statement errors, not its connect errors: a socket
    error, or the server's refusal ("too many connections", "starting up"). Ask only of
    an error raised by the checkout itself: the application's own ``OSError`` is not one.
    """
    return isinstance(error, OSError) or isinstance(getattr(error, "sqlstate", None), str)


def first_line(error: object) -> str:
    """The first line of ``error``'s text, or its type's name when it has none."""
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
