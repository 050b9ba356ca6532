"""The workload an advisor reads: the statements a service runs, with how much they cost it.

Two sources give the same :class:`WorkloadQuery` entries:

- :func:`from_statistics`: the in-process query monitor's per-fingerprint statistics
  (:mod:`corestone.db.monitor`), each with the statement and parameters of its slowest
  run, so a plan is made with real values. Only this process's queries, since it started.
- :func:`read_pg_stat_statements`: PostgreSQL's ``pg_stat_statements`` view, every
  client's queries since the statistics were reset, as normalised texts (``$1`` for
  values; planned generically). The extension must be in ``shared_preload_libraries``
  and created in the database; where the view does not answer, the result is None and
  the report says why.

The parameters are the application's data: they are kept for EXPLAIN and never shown
(:meth:`WorkloadQuery.as_dict` leaves them out).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "StatisticsEntry",
    "WorkloadQuery",
    "from_statistics",
    "is_normalised",
    "pg_stat_statements_status",
    "read_pg_stat_statements",
]


@dataclass(frozen=True, slots=True)
class WorkloadQuery:
    """One shape of query and its cost to the service; times in milliseconds.

    ``statement`` is what EXPLAIN runs (a real run's text, or the normalised text),
    ``parameters`` its values (None: plan generically). ``operation`` is ``select``,
    ``insert``, ``update``, ``delete`` or ``other``.
    """

    fingerprint: str
    query: str
    statement: str
    operation: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int = 0
    p95_ms: float | None = None
    source: str = "monitor"
    parameters: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, without the parameters."""
        return {
            "fingerprint": self.fingerprint,
            "query": self.query,
            "operation": self.operation,
            "calls": self.calls,
            "total_ms": round(self.total_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "p95_ms": None if self.p95_ms is None else round(self.p95_ms, 3),
            "rows": self.rows,
            "source": self.source,
        }


class _Fingerprint(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def operation(self) -> str: ...


class _Sample(Protocol):
    @property
    def statement(self) -> str: ...
    @property
    def parameters(self) -> Any: ...


class StatisticsEntry(Protocol):
    """What :func:`from_statistics` reads of one entry of the monitor's statistics."""

    @property
    def fingerprint(self) -> _Fingerprint: ...
    @property
    def calls(self) -> int: ...
    @property
    def total_ms(self) -> float: ...
    @property
    def mean_ms(self) -> float: ...
    @property
    def p95_ms(self) -> float: ...
    @property
    def rows(self) -> int: ...
    @property
    def sample(self) -> _Sample | None: ...


def from_statistics(entries: Iterable[StatisticsEntry]) -> list[WorkloadQuery]:
    """The monitor's statistics as a workload (entries without a sample are left out)."""
    found = []
    for entry in entries:
        sample, fingerprint = entry.sample, entry.fingerprint
        if sample is None or fingerprint.id == "other":
            continue
        found.append(
            WorkloadQuery(
                fingerprint=fingerprint.id,
                query=fingerprint.text,
                statement=sample.statement,
                operation=fingerprint.operation,
                calls=entry.calls,
                total_ms=entry.total_ms,
                mean_ms=entry.mean_ms,
                rows=entry.rows,
                p95_ms=entry.p95_ms,
                source="monitor",
                parameters=sample.parameters,
            )
        )
    return found


_STATUS = text("""
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'),
       'pg_stat_statements' = ANY (string_to_array(
           replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
""")
_STATEMENTS = text("""
SELECT queryid::text, query, calls, total_exec_time, mean_exec_time, rows
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND toplevel AND calls > 0
  AND query !~* '^\\s*(EXPLAIN|PREPARE|DEALLOCATE|BEGIN|COMMIT|ROLLBACK|SET|SHOW|SAVEPOINT|RELEASE)'
  AND query !~* '(pg_catalog|pg_stat_|pg_class|hypopg)'
  AND query ~* '^[\\s(]*(SELECT|INSERT|UPDATE|DELETE|WITH|VALUES|TABLE|MERGE)\\M'
ORDER BY total_exec_time DESC
LIMIT :limit
""")
_OPERATIONS = ("select", "insert", "update", "delete")


_PLANNABLE = re.compile(r"^[\s(]*(SELECT|INSERT|UPDATE|DELETE|WITH|VALUES|TABLE|MERGE)\b", re.I)


def is_normalised(query: str) -> bool:
    """Whether ``pg_stat_statements`` shows ``query`` with its values as ``$n``.

    Only plannable statements are normalised: before PostgreSQL 16 a utility statement
    (``COPY (SELECT … WHERE email = '…')``, ``CALL f('…')``, ``DO``, ``ALTER ROLE …
    PASSWORD``) keeps its values in the text, and the report goes to any signed-in
    user. Those are left out.
    """
    return _PLANNABLE.match(query) is not None


async def pg_stat_statements_status(conn: AsyncConnection) -> str | None:
    """None when ``pg_stat_statements`` answers, else why not (for the report)."""
    if conn.dialect.name != "postgresql":
        return "pg_stat_statements is PostgreSQL's"
    installed, loaded = (await conn.execute(_STATUS)).one()
    if not loaded:
        return "pg_stat_statements is not in shared_preload_libraries"
    if not installed:
        return "CREATE EXTENSION pg_stat_statements has not been run in this database"
    return None


async def read_pg_stat_statements(
    conn: AsyncConnection, *, limit: int = 50
) -> list[WorkloadQuery] | None:
    """The ``limit`` queries of this database with the most total time, or None.

    None when the view does not answer (see :func:`pg_stat_statements_status`).
    Catalog and tooling statements (EXPLAIN, SET, transaction control) are left out.
    """
    if await pg_stat_statements_status(conn) is not None:
        return None
    try:
        async with conn.begin_nested():
            rows = list(await conn.execute(_STATEMENTS, {"limit": limit}))
    except DBAPIError:
        return None
    found = []
    for queryid, query, calls, total, mean, count in rows:
        if not is_normalised(query):
            continue
        head = query.lstrip(" (").split(None, 1)
        operation = head[0].lower() if head and head[0].lower() in _OPERATIONS else "other"
        found.append(
            WorkloadQuery(
                fingerprint=f"pgss:{queryid}",
                query=query,
                statement=query,
                operation=operation,
                calls=calls,
                total_ms=total,
                mean_ms=mean,
                rows=count,
                source="pg_stat_statements",
            )
        )
    return found
