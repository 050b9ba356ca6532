"""The queries of one unit of work: how many, how long, and each fingerprint's count.

The unit is the request scope when there is one (:func:`corestone.context.request_scope`:
the web middleware opens one per request, a worker one per job), else the outermost
open transaction. The scope is made on the first statement, so a request that sends
none, or a process whose monitor is off, pays nothing for it. Outside both (a statement
on a bare session or connection outside any request) there is no scope, and no N+1 is
counted.

The monitor finds (or makes) the scope (``corestone.db.monitor``); this module is a
leaf, so the transaction can name the type and the web middleware can read the counts.

Single-task state: the statements of one unit of work run on its event loop (SQLAlchemy
calls the engine events from the task's own greenlet), so no lock is needed.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_TRACKED", "SCOPE_KEY", "QueryScope", "scope_of_request"]

SCOPE_KEY: Final = "corestone.db.query_scope"
"""The key of the scope in the request state."""

MAX_TRACKED: Final = 1000
"""Distinct fingerprints one scope counts; more (a job's endless loop) are not tracked."""


class QueryScope:
    """The queries of one unit of work (see the module doc)."""

    __slots__ = ("_counts", "queries", "reported", "seconds")

    def __init__(self) -> None:
        self.queries = 0
        self.seconds = 0.0
        self._counts: dict[str, int] = {}
        self.reported: set[str] = set()

    def count(self, fingerprint_id: str) -> int:
        """Count one more run of ``fingerprint_id`` here; return how many so far."""
        counts = self._counts
        seen = counts.get(fingerprint_id)
        if seen is None:
            if len(counts) >= MAX_TRACKED:
                return 0
            seen = 0
        counts[fingerprint_id] = seen + 1
        return seen + 1

    def runs(self, fingerprint_id: str) -> int:
        """How many runs of ``fingerprint_id`` this scope counted."""
        return self._counts.get(fingerprint_id, 0)


def scope_of_request(state: dict[str, object]) -> QueryScope | None:
    """The scope a request's state holds, if it sent any statement."""
    scope = state.get(SCOPE_KEY)
    return scope if isinstance(scope, QueryScope) else None
