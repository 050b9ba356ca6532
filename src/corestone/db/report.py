"""The query report: what is slow, why, and which index would fix it, as one JSON object.

:func:`build_report` is what ``corestone queries report`` prints and what taskboard's
``GET /api/ops/queries`` returns. It puts together:

- ``top``: the statements with the most total time, from the in-process monitor's
  statistics (when given: the HTTP route has them) and from ``pg_stat_statements`` (when
  the view answers: every process's statements; a CLI run only has these);
- ``n_plus_one``: the monitor's N+1 findings, as given;
- ``plans``: for each slow statement of ``top`` (mean or p95 at least ``slow_ms``), its
  plan and the problems found in it, cached per fingerprint in a :class:`PlanStore`;
- ``suggestions`` and ``drop_candidates``: the index advisor's run over the same
  workload (:mod:`corestone.db.advisor`), each suggestion with the cost before and after;
- ``sources``: where the workload came from, and why a source is missing.

Statement texts in the report are fingerprints (values replaced by placeholders); the
parameters a plan was made with never leave the process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from corestone.db._catalog import Catalog, read_catalog
from corestone.db.advisor import AdvisorOptions, AdvisorReport, IndexAdvisor, applied_count
from corestone.db.plans import CapturedPlan, PlanStore, analyse, explain, plan_error
from corestone.db.workload import (
    WorkloadQuery,
    from_statistics,
    pg_stat_statements_status,
    read_pg_stat_statements,
)

if TYPE_CHECKING:
    from corestone.db.database import Database

__all__ = [
    "REPORT_TTL_SECONDS",
    "ReportOptions",
    "build_report",
    "database_report",
    "plan_store_for",
    "report_cache_of",
]


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """How much one report looks at (the advisor's options included)."""

    limit: int = 20
    slow_ms: float = 200.0
    analyze: bool = False
    advisor: AdvisorOptions = field(default_factory=AdvisorOptions)

    @classmethod
    def from_settings(cls, settings: Any, *, limit: int = 20) -> ReportOptions:
        """Options as ``CORESTONE_SLOW_QUERY_MS``, ``CORESTONE_QUERY_PLAN_*`` and
        ``CORESTONE_QUERY_ADVISOR_MIN_GAIN`` say (missing ones keep their defaults)."""
        return cls(
            limit=limit,
            slow_ms=float(getattr(settings, "slow_query_ms", 200.0)),
            analyze=settings.query_plan_analyze,
            advisor=AdvisorOptions(
                min_gain=settings.query_advisor_min_gain,
                timeout_ms=settings.query_plan_timeout_ms,
                max_queries=limit,
            ),
        )


_PLANNED = frozenset({"select", "insert", "update", "delete"})
"""What has a plan (SAVEPOINT, SET, BEGIN… are in ``top`` but have none)."""

_STORES: weakref.WeakKeyDictionary[Any, PlanStore] = weakref.WeakKeyDictionary()


def plan_store_for(owner: Any) -> PlanStore:
    """The plan cache of ``owner`` (a Database, an app): one per owner, gone with it."""
    store = _STORES.get(owner)
    if store is None:
        store = _STORES[owner] = PlanStore()
    return store


async def build_report(
    engine: AsyncEngine,
    *,
    workload: Sequence[WorkloadQuery] | None = None,
    n_plus_one: Sequence[Mapping[str, Any]] = (),
    plans: PlanStore | None = None,
    options: ReportOptions | None = None,
    advise: bool = True,
) -> dict[str, Any]:
    """The report (module doc). Raises the database's error if it cannot be reached."""
    options = options if options is not None else ReportOptions()
    plans = plans if plans is not None else PlanStore()
    async with engine.connect() as conn:
        missing = await pg_stat_statements_status(conn)
        from_view = None if missing else await read_pg_stat_statements(conn, limit=options.limit)
        catalog = await read_catalog(conn)
        await conn.rollback()
    queries = [*(workload or ()), *(from_view or ())]
    top = sorted(queries, key=lambda q: q.total_ms, reverse=True)[: options.limit]
    slow = [
        q
        for q in top
        if q.operation in _PLANNED and max(q.mean_ms, q.p95_ms or 0.0) >= options.slow_ms
    ]
    captured = [await _captured(engine, q, catalog, plans, options) for q in slow]
    advice = (
        await IndexAdvisor(engine, options.advisor).advise(top)
        if advise
        else AdvisorReport(catalog.dialect, hypopg=False)
    )
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dialect": catalog.dialect,
        "sources": {
            "monitor": "ok" if workload is not None else "not running in this process",
            "pg_stat_statements": "ok" if from_view is not None else missing,
        },
        "top": [q.as_dict() for q in top],
        "n_plus_one": [dict(f) for f in n_plus_one],
        "plans": [c.as_dict() for c in captured],
        **advice.as_dict(),
    }


REPORT_TTL_SECONDS: Final = 30.0
"""How long :func:`database_report` answers from its last report."""


@dataclass
class _ReportCache:
    """The last report per ``limit`` of one database, and the lock that builds one at a time."""

    clock: Callable[[], float] = time.monotonic
    reports: dict[int, tuple[float, int, dict[str, Any]]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_REPORTS: weakref.WeakKeyDictionary[Any, _ReportCache] = weakref.WeakKeyDictionary()


def report_cache_of(db: Any) -> _ReportCache:
    """The report cache of ``db`` (one per database object, gone with it)."""
    cache = _REPORTS.get(db)
    if cache is None:
        cache = _REPORTS[db] = _ReportCache()
    return cache


async def database_report(db: Database, settings: Any, *, limit: int = 20) -> dict[str, Any]:
    """The report of a running service's database: its monitor's statistics and findings
    (``db.monitor``, when the monitor is on), ``pg_stat_statements``, the advisor.

    The report's own statements (catalog reads, EXPLAINs, hypothetical indexes) run on
    connections of their own, outside the service's pool and its monitored engines, so
    they never count as the service's workload nor take its connections.

    A report runs the advisor (dozens of EXPLAINs): one is built at a time per database,
    and for :data:`REPORT_TTL_SECONDS` every caller gets that one (the same object: do
    not change it), so callers in a loop, or many at once, cost one report. An index
    created by :meth:`IndexAdvisor.apply` in this process makes the next call build anew
    (one created by another process, the CLI, shows within the period).
    """
    cache = report_cache_of(db)
    async with cache.lock:
        known = cache.reports.get(limit)
        if (
            known is not None
            and cache.clock() - known[0] < REPORT_TTL_SECONDS
            and known[1] == applied_count()
        ):
            return known[2]
        generation = applied_count()
        report = await _database_report(db, settings, limit)
        cache.reports[limit] = (cache.clock(), generation, report)
        return report


async def _database_report(db: Database, settings: Any, limit: int) -> dict[str, Any]:
    monitor = getattr(db, "monitor", None)
    workload = None if monitor is None else from_statistics(monitor.statistics())
    findings = [] if monitor is None else [f.as_dict() for f in monitor.n_plus_one()]
    engine = create_async_engine(db.url, poolclass=NullPool)
    try:
        return await build_report(
            engine,
            workload=workload,
            n_plus_one=findings,
            plans=plan_store_for(db),
            options=ReportOptions.from_settings(settings, limit=limit),
        )
    finally:
        await engine.dispose()


async def _captured(
    engine: AsyncEngine,
    query: WorkloadQuery,
    catalog: Catalog,
    plans: PlanStore,
    options: ReportOptions,
) -> CapturedPlan:
    known = plans.get(query.fingerprint)
    if known is not None:
        return known
    try:
        async with engine.connect() as conn:
            plan = await explain(
                conn,
                query.statement,
                query.parameters,
                analyze=options.analyze,
                timeout_ms=options.advisor.timeout_ms,
            )
    except DBAPIError as error:
        captured = CapturedPlan(
            query.fingerprint,
            query.query,
            None,
            error=plan_error(error, query.statement, query.parameters),
        )
    else:
        problems = analyse(plan, query.statement, catalog, options.advisor.analysis)
        captured = CapturedPlan(query.fingerprint, query.query, plan, tuple(problems))
    plans.put(captured)
    return captured
