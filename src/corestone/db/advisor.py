"""The index advisor: indexes proposed from the workload, and proven with hypopg first.

For each statement of the workload (:mod:`corestone.db.workload`, the most total time
first) that reads a table through a filter, an order or a join, :class:`IndexAdvisor`:

1. derives candidate indexes (:mod:`._index_candidates`: equality columns first, then a
   range, then the ORDER BY; a partial WHERE for constant tests), leaving out any that
   an existing index already serves (the same leading columns);
2. on PostgreSQL with the ``hypopg`` extension, plans the statement, creates each
   candidate as a *hypothetical* index (visible only to the planner of this session,
   nothing written), plans again and keeps the candidate with the lowest cost;
3. recommends it only when it cuts the plan's estimated total cost by at least
   ``min_gain`` (a fraction, ``CORESTONE_QUERY_ADVISOR_MIN_GAIN``), with the cost before
   and after in the suggestion. Statements whose plan costs less than ``min_cost`` are
   not worth an index and are skipped, as Dexter does.

Without hypopg (SQLite, or the extension not installed) a candidate cannot be proven: it
is reported as unverified, and only where the plan analysis found a problem on its table.
The advisor also lists indexes to drop: duplicates, prefixes of another index, and (on
PostgreSQL) indexes never scanned since the statistics were reset.

Nothing is ever created unless :meth:`IndexAdvisor.apply` is called (``corestone queries
advise --apply``): it runs each verified suggestion's ``CREATE INDEX CONCURRENTLY`` on
PostgreSQL, outside a transaction, so writes go on while it builds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from corestone.db._catalog import Catalog, read_catalog
from corestone.db._index_candidates import (
    Candidate,
    DropCandidate,
    candidates,
    drop_candidates,
    index_ddl,
)
from corestone.db._plan_analysis import AnalysisOptions, PlanProblem
from corestone.db._predicates import table_uses
from corestone.db.plans import Plan, analyse, explain, plan_error
from corestone.db.workload import WorkloadQuery
from corestone.observability.logging import get_logger

__all__ = [
    "AdvisorOptions",
    "AdvisorReport",
    "DropCandidate",
    "IndexAdvisor",
    "IndexSuggestion",
    "applied_count",
]

log = get_logger(__name__)

_ADVISED = frozenset({"select", "update", "delete"})


@dataclass(frozen=True, slots=True)
class AdvisorOptions:
    """How sure a suggestion must be, and how much work one run may do."""

    min_gain: float = 0.3
    min_cost: float = 100.0
    timeout_ms: int = 2000
    max_queries: int = 50
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)


@dataclass(frozen=True, slots=True)
class IndexSuggestion:
    """A proposed index: its DDL, the evidence, and the statements it serves.

    ``verified``: hypopg planned the statement with it. ``cost_before``/``cost_after``:
    the planner's total cost of the statement with the most total time among
    ``fingerprints``, without and with the index; ``gain`` is the fraction cut.
    """

    table: str
    columns: tuple[str, ...]
    where: str | None
    statement: str
    verified: bool
    cost_before: float | None = None
    cost_after: float | None = None
    fingerprints: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    candidate: Candidate | None = field(default=None, repr=False, compare=False)

    @property
    def gain(self) -> float | None:
        if self.cost_before is None or self.cost_after is None or self.cost_before <= 0:
            return None
        return 1 - self.cost_after / self.cost_before

    def as_dict(self) -> dict[str, Any]:
        gain = self.gain
        return {
            "table": self.table,
            "columns": list(self.columns),
            "where": self.where,
            "statement": self.statement,
            "verified": self.verified,
            "cost_before": self.cost_before,
            "cost_after": self.cost_after,
            "gain": None if gain is None else round(gain, 4),
            "fingerprints": list(self.fingerprints),
            "problems": list(self.problems),
        }


@dataclass(frozen=True, slots=True)
class AdvisorReport:
    """What one advisor run found; ``hypopg`` says whether suggestions could be proven."""

    dialect: str
    hypopg: bool
    suggestions: tuple[IndexSuggestion, ...] = ()
    drops: tuple[DropCandidate, ...] = ()
    problems: dict[str, tuple[PlanProblem, ...]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "hypopg": self.hypopg,
            "suggestions": [s.as_dict() for s in self.suggestions],
            "drop_candidates": [d.as_dict() for d in self.drops],
            "plan_problems": {
                fingerprint: [p.as_dict() for p in found]
                for fingerprint, found in self.problems.items()
            },
            "errors": dict(self.errors),
        }


_applied = 0


def applied_count() -> int:
    """How many indexes :meth:`IndexAdvisor.apply` created in this process: a cached
    report older than the last one is out of date (``corestone.db.report``)."""
    return _applied


class IndexAdvisor:
    """Proposes, verifies and (on request) creates indexes for one database (module doc)."""

    def __init__(self, engine: AsyncEngine, options: AdvisorOptions | None = None) -> None:
        self.engine = engine
        self.options = options if options is not None else AdvisorOptions()

    async def advise(self, workload: Sequence[WorkloadQuery]) -> AdvisorReport:
        """Suggestions and drop candidates for ``workload`` (nothing is created)."""
        ranked = sorted(workload, key=lambda q: q.total_ms, reverse=True)
        ranked = [q for q in ranked if q.operation in _ADVISED][: self.options.max_queries]
        async with self.engine.connect() as conn:
            catalog = await read_catalog(conn)
            hypopg = await _has_hypopg(conn)
            await conn.rollback()
            if hypopg:  # a pooled session may keep a cancelled run's hypothetical indexes
                await _reset_hypopg(conn)
            run = _Run(conn, catalog, hypopg, self.options)
            try:
                for query in ranked:
                    await run.query(query)
            finally:
                if hypopg:
                    await _reset_hypopg(conn)
        return AdvisorReport(
            dialect=catalog.dialect,
            hypopg=hypopg,
            suggestions=tuple(run.suggestions()),
            drops=tuple(drop_candidates(catalog)),
            problems={k: v for k, v in run.problems.items() if v},
            errors=run.errors,
        )

    async def apply(self, report: AdvisorReport) -> list[tuple[IndexSuggestion, str | None]]:
        """Create each verified suggestion's index, concurrently; (suggestion, error) each.

        PostgreSQL only (elsewhere nothing is verified, so nothing is applied). One
        failure does not stop the others. After each build the catalog is read back:
        ``IF NOT EXISTS`` skips quietly over an index of that name, and an INVALID one (a
        concurrent build that failed or was cancelled earlier) or another index that
        happens to have the name is an error naming it, never "created".
        """
        done: list[tuple[IndexSuggestion, str | None]] = []
        wanted = [s for s in report.suggestions if s.verified and s.candidate is not None]
        if not wanted or self.engine.dialect.name != "postgresql":
            return done
        async with self.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            quote = auto.dialect.identifier_preparer.quote
            for suggestion in wanted:
                assert suggestion.candidate is not None
                ddl = index_ddl(suggestion.candidate, quote, concurrently=True)
                try:
                    await auto.exec_driver_sql(ddl)
                    problem = await _not_built(auto, suggestion.candidate)
                except DBAPIError as error:
                    problem = str(error.orig)
                if problem is not None:
                    log.warning("index not created", statement=ddl, error=problem)
                    done.append((suggestion, problem))
                else:
                    global _applied  # one counter for the process
                    _applied += 1
                    log.info("index created", statement=ddl)
                    done.append((suggestion, None))
        return done


class _Run:
    """The state of one :meth:`IndexAdvisor.advise` run on one connection."""

    def __init__(
        self, conn: AsyncConnection, catalog: Catalog, hypopg: bool, options: AdvisorOptions
    ) -> None:
        self.conn = conn
        self.catalog = catalog
        self.hypopg = hypopg
        self.options = options
        self.columns = {name: info.columns for name, info in catalog.tables.items()}
        self.found: dict[Candidate, IndexSuggestion] = {}
        self.problems: dict[str, tuple[PlanProblem, ...]] = {}
        self.errors: dict[str, str] = {}

    async def query(self, query: WorkloadQuery) -> None:
        uses = table_uses(query.statement, self.catalog.dialect, self.columns, self.catalog.schema)
        try:
            before = await self._plan(query)
        except DBAPIError as error:
            self.errors[query.fingerprint] = plan_error(error, query.statement, query.parameters)
            return
        problems = tuple(analyse(before, query.statement, self.catalog, self.options.analysis))
        self.problems[query.fingerprint] = problems
        for use in uses.values():
            found = candidates(use, self.catalog)
            if not found:
                continue
            if self.hypopg:
                await self._verify(query, before, found)
            else:
                flagged = [p for p in problems if p.table == use.table]
                if flagged:
                    self._keep(query, found[0], None, None, flagged)

    async def _plan(self, query: WorkloadQuery) -> Plan:
        return await explain(
            self.conn, query.statement, query.parameters, timeout_ms=self.options.timeout_ms
        )

    async def _verify(self, query: WorkloadQuery, before: Plan, found: list[Candidate]) -> None:
        cost = before.total_cost or 0.0
        if cost < self.options.min_cost:
            return
        best: tuple[float, Candidate] | None = None
        quote = self.conn.dialect.identifier_preparer.quote
        for candidate in found:
            try:
                after = await self._cost_with(query, index_ddl(candidate, quote), cost)
            except DBAPIError as error:
                await self.conn.rollback()
                self.errors[query.fingerprint] = plan_error(
                    error, query.statement, query.parameters
                )
                continue
            # The narrower of two nearly equal candidates wins (found lists wider first).
            if (
                best is None
                or after < best[0] * 0.98
                or (after <= best[0] * 1.02 and len(candidate.columns) < len(best[1].columns))
            ):
                best = (after, candidate)
        if best is not None and 1 - best[0] / cost >= self.options.min_gain:
            flagged = [p for p in self.problems.get(query.fingerprint, ()) if p.table]
            self._keep(query, best[1], cost, best[0], flagged)

    async def _cost_with(self, query: WorkloadQuery, ddl: str, cost: float) -> float:
        """The statement's planned cost with ``ddl``'s index made hypothetically.

        Under the plan's ``statement_timeout``: ``hypopg_create_index`` opens the table,
        so it waits behind a migration's ACCESS EXCLUSIVE lock like any statement.
        """
        await self._timeout()
        created = await self.conn.execute(
            text("SELECT indexrelid FROM hypopg_create_index(:ddl)"), {"ddl": ddl}
        )
        oid = created.scalar_one()
        await self.conn.commit()
        try:
            return (await self._plan(query)).total_cost or cost
        finally:
            await self._timeout()
            await self.conn.execute(text("SELECT hypopg_drop_index(:oid)"), {"oid": oid})
            await self.conn.commit()

    async def _timeout(self) -> None:
        """The plan's ``statement_timeout`` for the transaction about to begin."""
        timeout = int(self.options.timeout_ms)
        await self.conn.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout}")

    def _keep(
        self,
        query: WorkloadQuery,
        candidate: Candidate,
        before: float | None,
        after: float | None,
        problems: Sequence[PlanProblem],
    ) -> None:
        known = self.found.get(candidate)
        if known is not None:  # a statement with less total time came later: add it
            self.found[candidate] = replace(
                known, fingerprints=(*known.fingerprints, query.fingerprint)
            )
            return
        quote = self.conn.dialect.identifier_preparer.quote
        self.found[candidate] = IndexSuggestion(
            table=candidate.table,
            columns=candidate.names,
            where=candidate.predicate,
            statement=index_ddl(
                candidate, quote, concurrently=self.catalog.dialect == "postgresql"
            ),
            verified=before is not None,
            cost_before=before,
            cost_after=after,
            fingerprints=(query.fingerprint,),
            problems=tuple(dict.fromkeys(p.kind for p in problems if p.table == candidate.table)),
            candidate=candidate,
        )

    def suggestions(self) -> list[IndexSuggestion]:
        """Verified first, the largest gain first."""
        return sorted(
            self.found.values(), key=lambda s: (not s.verified, -(s.gain or 0.0), s.statement)
        )


def _better(after: float, candidate: Candidate, best: tuple[float, Candidate] | None) -> bool:
    """Cheaper by 2%, or as cheap (within 2%) and narrower: the narrower index wins a tie."""
    if best is None or after < best[0] * 0.98:
        return True
    return after <= best[0] * 1.02 and len(candidate.columns) < len(best[1].columns)


_BUILT = text("""
SELECT ix.indisvalid, t.relname,
       ARRAY(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
             ORDER BY k.n)
FROM pg_index ix
JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_class t ON t.oid = ix.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE i.relname = :name AND n.nspname = current_schema()
""")


async def _not_built(conn: AsyncConnection, candidate: Candidate) -> str | None:
    """None when ``candidate``'s index is there, valid, as asked; else what is wrong."""
    row = (await conn.execute(_BUILT, {"name": candidate.name})).first()
    if row is None:
        return f"index {candidate.name} is not there after its CREATE INDEX"
    valid, table, columns = row
    if table != candidate.table or tuple(columns) != candidate.names:
        return (
            f"another index is named {candidate.name}"
            f" (on {table} ({', '.join(columns)})): not created"
        )
    if not valid:
        return (
            f"index {candidate.name} is INVALID (an earlier concurrent build failed or was"
            " cancelled): DROP INDEX CONCURRENTLY it, then run again"
        )
    return None


async def _has_hypopg(conn: AsyncConnection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    found = await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'"))
    return found.first() is not None


async def _reset_hypopg(conn: AsyncConnection) -> None:
    """Forget every hypothetical index of the session (they outlive transactions)."""
    try:
        await conn.execute(text("SELECT hypopg_reset()"))
        await conn.commit()
    except SQLAlchemyError:
        # A connection that cannot even do this (a cancel invalidated it) is closed by the
        # pool, and the session's hypothetical indexes end with it.
        with contextlib.suppress(SQLAlchemyError):
            await conn.rollback()
