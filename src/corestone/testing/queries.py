"""A query counter: everything an engine sends its database, for tests of round trips."""

from __future__ import annotations

from collections import Counter
from types import TracebackType
from typing import Any, Self

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["QueryCounter"]


class QueryCounter:
    """Records what ``engine`` asks of its database while the ``with`` block runs.

    Each entry of :attr:`events` is one of: ``"checkout"`` (a connection taken from the
    pool, with its pre-ping if any), ``"begin"``, ``"commit"``, ``"rollback"`` (the
    transaction boundaries SQLAlchemy drives), or ``"sql:<first word>"`` for every
    statement sent (``"sql:SELECT"``; on SQLite corestone's own ``"sql:BEGIN"`` too).
    ``len(counter)`` is their number: a read served from a cache must leave it at 0.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.sync_engine
        self.events: list[str] = []
        self._hooks = (
            (self._engine.pool, "checkout", self._on_checkout),
            (self._engine, "before_cursor_execute", self._on_statement),
            (self._engine, "begin", self._on_begin),
            (self._engine, "commit", self._on_commit),
            (self._engine, "rollback", self._on_rollback),
        )

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

    def __len__(self) -> int:
        return len(self.events)

    def counts(self) -> Counter[str]:
        """How many of each kind of event."""
        return Counter(self.events)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.events.clear()

    def _on_checkout(self, *_args: Any) -> None:
        self.events.append("checkout")

    def _on_statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split(maxsplit=1)
        self.events.append(f"sql:{words[0].upper() if words else ''}")

    def _on_begin(self, *_args: Any) -> None:
        self.events.append("begin")

    def _on_commit(self, *_args: Any) -> None:
        self.events.append("commit")

    def _on_rollback(self, *_args: Any) -> None:
        self.events.append("rollback")
