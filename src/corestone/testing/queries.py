"""A query counter: what code sends its database, and "at most K queries" for tests.

One tool for both jobs: count round trips (checkouts, transaction boundaries, statements)
and fail a test whose code sends more queries than it should (an N+1 caught in the
test suite rather than in production).
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType
from typing import Any, Final, Protocol, Self

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["TRANSACTION_CONTROL", "HasEngines", "QueryCounter"]

TRANSACTION_CONTROL: Final = frozenset(
    {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END", "START"}
)
"""First words of the statements that are not queries (SQLite's BEGIN is SQL text)."""

_SHOWN: Final = 300  # characters of each statement in a failure message


class HasEngines(Protocol):
    """Anything with engines to watch: a :class:`~corestone.db.Database` (all of them)."""

    @property
    def engines(self) -> list[AsyncEngine]: ...


class QueryCounter:
    """Records what ``target`` asks of its database while the ``with`` block runs.

    ``target`` is an engine, or a started :class:`~corestone.db.Database` (its primary
    and every replica). Each entry of :attr:`events` is one of: ``"checkout"`` (a
    connection taken from the pool, with its pre-ping if any), ``"begin"``,
    ``"commit"``, ``"rollback"`` (the transaction boundaries SQLAlchemy drives), or
    ``"sql:<first word>"`` for every statement sent (``"sql:SELECT"``; on SQLite
    corestone's own ``"sql:BEGIN"`` too). ``len(counter)`` is their number: a read served
    from a cache must leave it at 0. :attr:`statements` holds the SQL text of every
    statement; :attr:`queries` those that are not transaction control (BEGIN, COMMIT,
    SAVEPOINT…), the same on both databases.

    With ``at_most=K`` the block fails (``AssertionError``, listing the queries) if it
    sent more than K queries; it is a context manager both ways::

        async with QueryCounter(infra.db, at_most=2):
            await client.get("/api/workspaces/1/tasks")

    A block that raises keeps its own error: the count is not checked then.
    """

    def __init__(self, target: AsyncEngine | Engine | HasEngines, *, at_most: int | None = None):
        if isinstance(target, AsyncEngine | Engine):
            engines = [target]
        else:
            engines = list(target.engines)
            if not engines:
                raise ValueError("the database has no engine yet: start it first")
        self.at_most = at_most
        self.events: list[str] = []
        self.statements: list[str] = []
        self._hooks: list[tuple[Any, str, Any]] = []
        for engine in engines:
            sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
            self._hooks += [
                (sync.pool, "checkout", self._on_checkout),
                (sync, "before_cursor_execute", self._on_statement),
                (sync, "begin", self._on_begin),
                (sync, "commit", self._on_commit),
                (sync, "rollback", self._on_rollback),
            ]

    def __enter__(self) -> Self:
        for target, name, hook in self._hooks:
            event.listen(target, name, hook)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for target, name, hook in self._hooks:
            event.remove(target, name, hook)
        if exc_type is None:
            self.check()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def queries(self) -> list[str]:
        """The statements sent, transaction control left out."""
        return [s for s in self.statements if _first_word(s) not in TRANSACTION_CONTROL]

    def check(self) -> None:
        """Raise ``AssertionError`` if more than ``at_most`` queries were sent so far."""
        queries = self.queries
        if self.at_most is None or len(queries) <= self.at_most:
            return
        lines = [f"expected at most {self.at_most} queries, {len(queries)} were sent:"]
        lines += [f"  {n}. {_one_line(q)}" for n, q in enumerate(queries, start=1)]
        raise AssertionError("\n".join(lines))

    def counts(self) -> Counter[str]:
        """How many of each kind of event."""
        return Counter(self.events)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.events.clear()
        self.statements.clear()

    def _on_checkout(self, *_args: Any) -> None:
        self.events.append("checkout")

    def _on_statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.events.append(f"sql:{_first_word(statement)}")
        self.statements.append(statement)

    def _on_begin(self, *_args: Any) -> None:
        self.events.append("begin")

    def _on_commit(self, *_args: Any) -> None:
        self.events.append("commit")

    def _on_rollback(self, *_args: Any) -> None:
        self.events.append("rollback")


def _first_word(statement: str) -> str:
    words = statement.split(maxsplit=1)
    return words[0].upper() if words else ""


def _one_line(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
