"""Query plans: captured safely, analysed into named problems, kept per fingerprint.

:func:`explain` asks the database how it runs one statement:

- PostgreSQL: ``EXPLAIN (FORMAT JSON)``, inside a transaction that is always rolled back,
  under a ``statement_timeout``. With the values of a real run (a monitor sample) the plan
  is the one those values get; with none (a ``pg_stat_statements`` text, ``$1``…) the
  statement is prepared and the *generic* plan explained (``plan_cache_mode =
  force_generic_plan``, parameters NULL: the plan does not depend on them), as Dexter
  does before PostgreSQL 16. ``ANALYZE`` (the statement really runs) only when asked,
  only for a plain SELECT (:func:`is_read_only`) calling no function the catalog marks
  VOLATILE (a session advisory lock or a sequence step outlives the rollback), and in a
  READ ONLY transaction; anything else is planned, never run.
- SQLite: ``EXPLAIN QUERY PLAN`` (never runs the statement, has no costs).

:func:`analyse` names the problems (:mod:`corestone.db._plan_analysis`). :class:`PlanStore`
keeps the last plan of each fingerprint in a bounded LRU, so a report explains each shape
of query once, not on every look. Nothing here runs on a request's path: the report (CLI
or ``/api/ops/queries``) and the advisor call it, on a connection of their own.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from corestone._extras import requires_extra
from corestone.db._catalog import Catalog
from corestone.db._plan_analysis import (
    AnalysisOptions,
    PlanProblem,
    ProblemKind,
    analyse_postgres,
    analyse_sqlite,
)
from corestone.db._predicates import table_uses

with requires_extra(__name__, "queries"):
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

__all__ = [
    "AnalysisOptions",
    "CapturedPlan",
    "Plan",
    "PlanProblem",
    "PlanStore",
    "ProblemKind",
    "analyse",
    "explain",
    "is_read_only",
    "plan_error",
]

_VOLATILE: Final = frozenset(
    {"nextval", "setval", "pg_advisory_lock", "pg_advisory_xact_lock", "pg_notify", "dblink",
     "pg_terminate_backend", "pg_cancel_backend", "lo_import", "lo_export", "pg_sleep"}
)  # fmt: skip
"""Functions with effects a rollback does not undo (or that only waste time): no ANALYZE."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan as the database gave it.

    ``tree``: PostgreSQL's ``Plan`` object (JSON), or SQLite's rows ``(id, parent,
    detail)``. ``total_cost`` is the planner's estimate (PostgreSQL only): the number the
    advisor compares before and after a hypothetical index.
    """

    dialect: str
    tree: Any
    analyzed: bool = False
    generic: bool = False

    @property
    def total_cost(self) -> float | None:
        if self.dialect != "postgresql":
            return None
        return float(self.tree.get("Total Cost", 0.0))

    def lines(self) -> list[str]:
        """The plan as indented text lines, for a terminal."""
        if self.dialect != "postgresql":
            depth: dict[int, int] = {}
            out = []
            for node, parent, detail in self.tree:
                depth[node] = depth.get(parent, -1) + 1
                out.append("  " * depth[node] + detail)
            return out
        return list(_pg_lines(self.tree, 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "analyzed": self.analyzed,
            "generic": self.generic,
            "total_cost": self.total_cost,
            "lines": self.lines(),
        }


def _pg_lines(node: Mapping[str, Any], depth: int) -> list[str]:
    relation = f" on {node['Relation Name']}" if "Relation Name" in node else ""
    index = f" using {node['Index Name']}" if "Index Name" in node else ""
    actual = f" actual rows={node['Actual Rows']}" if "Actual Rows" in node else ""
    line = (
        f"{'  ' * depth}{node.get('Node Type')}{relation}{index} "
        f"(cost={node.get('Startup Cost')}..{node.get('Total Cost')} rows={node.get('Plan Rows')}"
        f"{actual})"
    )
    lines = [line]
    for child in node.get("Plans", ()):
        lines.extend(_pg_lines(child, depth + 1))
    return lines


def is_read_only(statement: str, dialect: str) -> bool:
    """Whether ``statement`` is a plain SELECT that EXPLAIN ANALYZE may run.

    No data-modifying CTE, no ``FOR UPDATE``/``FOR SHARE``, none of the functions whose
    effects survive a rollback. When in doubt (it does not parse): False.
    """
    try:
        tree = sqlglot.parse_one(statement, read="postgres" if dialect == "postgresql" else dialect)
    except (SqlglotError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return False
    if not isinstance(tree, exp.Select | exp.Union):
        return False
    if tree.find(exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Lock) is not None:
        return False
    names = {f.name.lower() for f in tree.find_all(exp.Anonymous)}
    names |= {type(f).__name__.lower() for f in tree.find_all(exp.Func)}
    return not names & _VOLATILE


_VOLATILE_OR_UNKNOWN: Final = text("""
SELECT n FROM unnest(CAST(:names AS text[])) AS n
WHERE NOT EXISTS (SELECT 1 FROM pg_proc p WHERE lower(p.proname) = lower(n))
   OR EXISTS (SELECT 1 FROM pg_proc p WHERE lower(p.proname) = lower(n) AND p.provolatile = 'v')
LIMIT 1
""")


async def _calls_volatile(conn: AsyncConnection, statement: str) -> bool:
    """Whether ``statement`` calls a function the database marks VOLATILE, or one it does
    not know, among those sqlglot does not (user functions, ``pg_try_advisory_lock``…).

    A rollback undoes a volatile function's writes but not its session advisory lock
    (held on a pooled connection), its sequence step, or its dblink call: a name list
    (``_VOLATILE``) cannot keep up with them, the catalog's volatility can. A STABLE or
    IMMUTABLE function cannot write (PostgreSQL runs it read-only).
    """
    try:
        tree = sqlglot.parse_one(statement, read="postgres")
    except (SqlglotError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return True
    names = sorted({f.name for f in tree.find_all(exp.Anonymous)})
    if not names:
        return False
    found = await conn.execute(_VOLATILE_OR_UNKNOWN, {"names": names})
    return found.first() is not None


def _parameter_count(statement: str) -> int:
    """The highest ``$n`` in a PostgreSQL statement (0 when it has none)."""
    try:
        tree = sqlglot.parse_one(statement, read="postgres")
    except (SqlglotError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return 0
    numbers = [
        int(p.this.this)
        for p in tree.find_all(exp.Parameter)
        if isinstance(p.this, exp.Literal) and str(p.this.this).isdigit()
    ]
    return max(numbers, default=0)


async def explain(
    conn: AsyncConnection,
    statement: str,
    parameters: Any = None,
    *,
    analyze: bool = False,
    timeout_ms: int = 2000,
) -> Plan:
    """The plan of ``statement`` (see the module doc); ``conn`` must not be in a transaction.

    Raises what the database raises (a syntax error, a timeout): the caller reports it.
    """
    async with conn.begin() as transaction:
        try:
            if conn.dialect.name != "postgresql":
                rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                return Plan(conn.dialect.name, [(r[0], r[1], str(r[3])) for r in rows])
            return await _explain_postgres(conn, statement, parameters, analyze, timeout_ms)
        finally:
            await transaction.rollback()


async def _explain_postgres(
    conn: AsyncConnection, statement: str, parameters: Any, analyze: bool, timeout_ms: int
) -> Plan:
    await conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
    analyze = (
        analyze
        and is_read_only(statement, "postgresql")
        and not await _calls_volatile(conn, statement)
    )
    if analyze:  # a write through a view or a trigger fails instead of running
        await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    count = _parameter_count(statement) if not parameters else 0
    if count:  # a normalised text: explain its generic plan
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        # PREPARE outlives a rollback: a unique name, deallocated whatever happens (the
        # savepoint keeps the transaction usable for that after a failed EXPLAIN).
        name = f"corestone_explain_{uuid.uuid4().hex[:16]}"
        nulls = ", ".join(["NULL"] * count)
        try:
            await conn.exec_driver_sql(f"PREPARE {name} AS {statement}")
            async with conn.begin_nested():
                found = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})")
                document = found.scalar_one()
        finally:
            await _deallocate(conn, name)
        return Plan("postgresql", document[0]["Plan"], generic=True)
    found = await conn.exec_driver_sql(f"EXPLAIN ({options}) {statement}", parameters or None)
    document = found.scalar_one()
    return Plan("postgresql", document[0]["Plan"], analyzed=analyze)


_CLASS: Final = re.compile(r"^<class '(?:\w+\.)*(\w+)'>: ")
_QUOTED: Final = re.compile(r"'((?:[^']|'')*)'|\"((?:[^\"]|\"\")*)\"")
_ARGUMENT: Final = re.compile(r"(query argument \$\d+: ).*")
_NAME: Final = re.compile(r"[A-Za-z_][\w$.]*")


def plan_error(error: DBAPIError, statement: str, parameters: Any) -> str:
    """The first line of why a plan failed, fit to show: without the parameters' values.

    A plan made with a real run's values fails quoting them (``invalid input syntax for
    type uuid: "…"``, asyncpg's ``invalid input for query argument $1: '…'``). When
    there were values, what asyncpg says of an argument becomes ``?``, and so does every
    quoted part of the message but a name the statement has (``relation "gone"``).
    """
    line = (str(error.orig).splitlines() or [""])[0]
    line = _CLASS.sub(r"\1: ", line)  # asyncpg's "<class 'asyncpg.exceptions.X'>: "
    if not parameters:
        return line

    def mask(match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        keep = _NAME.fullmatch(inner) is not None and inner in statement
        return match.group() if keep else '"?"'

    return _QUOTED.sub(mask, _ARGUMENT.sub(r"\1?", line))


async def _deallocate(conn: AsyncConnection, name: str) -> None:
    """Drop prepared statement ``name`` if it was made (a cancel or an error may come
    before, during or after the PREPARE); a connection too broken for it is discarded by
    the pool, and its prepared statements with it."""
    try:
        async with conn.begin_nested():
            await conn.exec_driver_sql(f"DEALLOCATE {name}")
    except SQLAlchemyError:  # never prepared, or the connection is invalid (a cancel)
        pass


def analyse(
    plan: Plan, statement: str, catalog: Catalog, options: AnalysisOptions | None = None
) -> list[PlanProblem]:
    """The named problems of ``plan`` (``statement`` is what it is the plan of)."""
    options = options if options is not None else AnalysisOptions()
    if plan.dialect == "postgresql":
        return analyse_postgres(plan.tree, catalog, options, analyzed=plan.analyzed)
    columns = {name: info.columns for name, info in catalog.tables.items()}
    uses = table_uses(statement, plan.dialect, columns, catalog.schema)
    return analyse_sqlite(plan.tree, uses, catalog, options)


@dataclass(frozen=True, slots=True)
class CapturedPlan:
    """The plan of one fingerprint (or the error that stopped it) and its problems."""

    fingerprint: str
    query: str
    plan: Plan | None
    problems: tuple[PlanProblem, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "query": self.query,
            "plan": None if self.plan is None else self.plan.as_dict(),
            "problems": [p.as_dict() for p in self.problems],
            "error": self.error,
        }


@dataclass
class PlanStore:
    """The last :class:`CapturedPlan` of up to ``max_entries`` fingerprints (LRU).

    A plan older than ``max_age_seconds`` is not returned: an index created since, or
    fresh statistics, may have changed it.
    """

    max_entries: int = 256
    max_age_seconds: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[str, tuple[float, CapturedPlan]] = field(
        default_factory=OrderedDict, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, fingerprint: str) -> CapturedPlan | None:
        with self._lock:
            found = self._entries.get(fingerprint)
            if found is None:
                return None
            if self.clock() - found[0] > self.max_age_seconds:
                del self._entries[fingerprint]
                return None
            self._entries.move_to_end(fingerprint)
            return found[1]

    def put(self, captured: CapturedPlan) -> None:
        with self._lock:
            self._entries[captured.fingerprint] = (self.clock(), captured)
            self._entries.move_to_end(captured.fingerprint)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
