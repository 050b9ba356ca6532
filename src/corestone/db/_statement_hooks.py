"""The engine event listeners of the query monitor: time each statement, hand it over.

``before_cursor_execute`` stamps the execution context with the clock;
``after_cursor_execute`` and ``handle_error`` read it back and hand the statement, its
fingerprint (cached), its rows, one set of its parameters and whether it is a further
batch of one execution to an :class:`Observer`
(the :class:`~corestone.db.monitor.QueryMonitor`). The time is the driver's execute,
network round trip included. Nothing here raises into the query: an observer that fails
is told so (``failed``) and the query goes on.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, Protocol

from corestone.db._fingerprint import Fingerprint, Fingerprinter
from corestone.db._query_stats import first_parameters

if TYPE_CHECKING:
    from sqlalchemy.engine import ExceptionContext

__all__ = ["EngineHooks", "Observer"]

_STARTED: Final = "_corestone_query_started"
# Set on an execution context from its second statement on: SQLAlchemy splits one
# execute() into batches ("insertmanyvalues": one row each on SQLite with ordered
# RETURNING), each a statement of its own, but the application asked once.
_BATCH: Final = "_corestone_query_batch"


class Observer(Protocol):
    """What the hooks report to (the query monitor)."""

    def observe(
        self,
        fingerprint: Fingerprint,
        seconds: float,
        rows: int,
        failed: bool,
        statement: str,
        parameters: Any,
        target: str,
        batch: bool,
    ) -> None: ...

    def failed(self, error: Exception) -> None: ...


class EngineHooks:
    """The event listeners of one engine (its fingerprinter and label at hand)."""

    __slots__ = ("_fingerprint", "_monitor", "_target")

    def __init__(self, monitor: Observer, fingerprinter: Fingerprinter, target: str) -> None:
        self._monitor = monitor
        self._fingerprint = fingerprinter
        self._target = target

    def before(
        self,
        _conn: Any,
        _cursor: Any,
        _statement: str,
        _parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        if context is not None:
            stamps = context.__dict__
            if _STARTED in stamps:
                stamps[_BATCH] = True
            stamps[_STARTED] = time.perf_counter()

    def after(
        self,
        _conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if context is None:
            return
        stamps = context.__dict__
        started = stamps.get(_STARTED)
        if started is None:
            return
        seconds = time.perf_counter() - started
        try:
            self._monitor.observe(
                self._fingerprint(statement),
                seconds,
                _rows(cursor),
                False,
                statement,
                first_parameters(parameters, executemany),
                self._target,
                _BATCH in stamps,
            )
        except Exception as error:  # noqa: BLE001 - the query must go on
            self._monitor.failed(error)

    def error(self, exception_context: ExceptionContext) -> None:
        execution = exception_context.execution_context
        started = getattr(execution, _STARTED, None)
        statement = exception_context.statement
        if started is None or statement is None:
            return
        seconds = time.perf_counter() - started
        try:
            self._monitor.observe(
                self._fingerprint(statement),
                seconds,
                0,
                True,
                statement,
                first_parameters(
                    exception_context.parameters,
                    bool(execution is not None and execution.executemany),
                ),
                self._target,
                bool(getattr(execution, _BATCH, False)),
            )
        except Exception as error:  # noqa: BLE001 - the original error matters more
            self._monitor.failed(error)


def _rows(cursor: Any) -> int:
    """Rows affected or returned: the rowcount, else the rows the async driver buffered."""
    count = cursor.rowcount
    if isinstance(count, int) and count >= 0:
        return count
    buffered = getattr(cursor, "_rows", None)  # SQLAlchemy's asyncpg/aiosqlite adapters
    return len(buffered) if buffered is not None else 0
