"""The query monitor: every statement timed, fingerprinted, counted; slow ones and N+1 told.

A :class:`QueryMonitor` listens to SQLAlchemy's engine events (``before_cursor_execute``,
``after_cursor_execute``, ``handle_error``) on each engine it is attached to. The
:class:`~corestone.db.Database` attaches it to its primary and to every replica when
``CORESTONE_QUERY_MONITOR=true`` (``infra.db.monitor``). For each statement it:

- times it (the driver's execute, network round trip included);
- fingerprints it (``_fingerprint``: sqlglot, cached per statement text) and counts it in
  the per-fingerprint statistics (``_query_stats``: calls, errors, total, mean, p95, max,
  rows, the slowest call's statement and parameters; bounded memory);
- observes ``corestone_db_query_duration_seconds{operation}``;
- logs a slow one (``CORESTONE_SLOW_QUERY_MS``) as ``slow query`` with the correlation
  id, the fingerprint, the elapsed time and the parameters' types (never their values),
  and counts it in ``corestone_db_slow_queries_total{operation}``;
- unless it is transaction control (BEGIN, COMMIT, SAVEPOINT…), counts it in the unit
  of work's scope (``_query_scope``: the request, else the outermost transaction),
  which the web middleware's development headers read; the N-th run of one
  SELECT/INSERT/UPDATE/DELETE fingerprint in one scope
  (``CORESTONE_QUERY_N_PLUS_ONE_THRESHOLD``) is reported once: an ``n+1 query`` warning
  naming the application's line that issued it (``_call_site``), a count in
  ``corestone_db_n_plus_one_total{operation}``, and a finding in
  :meth:`QueryMonitor.n_plus_one`.

Nothing here raises into the query path: a failure of the monitor's own code is logged
once and the query goes on. What it costs per query is measured by
``uv run python -m bench queries`` (docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from corestone import context
from corestone.db._call_site import call_site
from corestone.db._fingerprint import Fingerprint, Fingerprinter, Operation
from corestone.db._query_scope import SCOPE_KEY, QueryScope
from corestone.db._query_stats import QueryStatsSnapshot, QueryStatsTable, redact_parameters
from corestone.db._statement_hooks import EngineHooks
from corestone.db.transactions import current_transaction
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics

if TYPE_CHECKING:
    from corestone.config import Settings

__all__ = [
    "QUERY_BUCKETS",
    "MonitorOptions",
    "NPlusOneFinding",
    "QueryMonitor",
    "QueryStatsSnapshot",
]

log = get_logger(__name__)

QUERY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
"""Buckets of the query-duration histogram: a query is shorter than a request."""

_OPERATIONS: Final[tuple[Operation, ...]] = ("select", "insert", "update", "delete", "other")


@dataclass(frozen=True, slots=True)
class MonitorOptions:
    """What the monitor reports, and how much it keeps.

    ``n_plus_one_threshold``: runs of one fingerprint in one unit of work that make an
    N+1 (0: never report). ``max_fingerprints``: entries of the statistics table
    (beyond it the least recently used is folded into ``other``). ``fingerprint_cache_size``:
    distinct statement texts whose fingerprint is cached. ``response_headers``: the web
    middleware adds ``X-Query-Count`` and ``X-Query-Time-Ms`` (development).
    """

    slow_query_ms: float = 200.0
    n_plus_one_threshold: int = 5
    max_fingerprints: int = 1000
    fingerprint_cache_size: int = 4096
    max_findings: int = 256
    response_headers: bool = False


@dataclass(slots=True)
class NPlusOneFinding:
    """One N+1: a fingerprint run ``threshold`` times in a unit of work, from ``location``.

    ``units`` counts the units of work (requests, transactions) it was seen in;
    ``correlation_id`` is the last one's.
    """

    fingerprint: Fingerprint
    location: str | None
    threshold: int
    units: int
    correlation_id: str | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "fingerprint": self.fingerprint.id,
            "query": self.fingerprint.text,
            "operation": self.fingerprint.operation,
            "location": self.location,
            "threshold": self.threshold,
            "units": self.units,
            "correlation_id": self.correlation_id,
        }


class QueryMonitor:
    """Times, fingerprints and counts what the attached engines send (module doc)."""

    def __init__(
        self, options: MonitorOptions | None = None, *, metrics: Metrics | None = None
    ) -> None:
        self.options = options if options is not None else MonitorOptions()
        self.table = QueryStatsTable(self.options.max_fingerprints)
        self._slow_seconds = self.options.slow_query_ms / 1000
        self._threshold = self.options.n_plus_one_threshold
        self._fingerprinters: dict[str, Fingerprinter] = {}
        self._findings: OrderedDict[tuple[str, str | None], NPlusOneFinding] = OrderedDict()
        self._findings_lock = threading.Lock()
        self._hooks: dict[int, EngineHooks] = {}
        self._failed_once = False
        m = metrics if metrics is not None else Metrics()
        durations = m.histogram(
            "db_query_duration_seconds",
            "Statement time, as the driver's execute took it, by operation.",
            ["operation"],
            buckets=QUERY_BUCKETS,
        )
        slow = m.counter(
            "db_slow_queries_total", "Statements slower than the slow-query limit.", ["operation"]
        )
        n_plus_one = m.counter(
            "db_n_plus_one_total", "N+1 patterns found, once per unit of work.", ["operation"]
        )
        self._durations = {op: durations.labels(operation=op) for op in _OPERATIONS}
        self._slow = {op: slow.labels(operation=op) for op in _OPERATIONS}
        self._n_plus_one = {op: n_plus_one.labels(operation=op) for op in _OPERATIONS}

    @classmethod
    def from_settings(cls, settings: Settings, *, metrics: Metrics | None = None) -> QueryMonitor:
        """A monitor as ``CORESTONE_SLOW_QUERY_MS`` and ``CORESTONE_QUERY_*`` say."""
        headers = settings.query_headers
        return cls(
            MonitorOptions(
                slow_query_ms=settings.slow_query_ms,
                n_plus_one_threshold=settings.query_n_plus_one_threshold,
                max_fingerprints=settings.query_max_fingerprints,
                response_headers=settings.env == "dev" if headers is None else headers,
            ),
            metrics=metrics,
        )

    def attach(self, engine: AsyncEngine | Engine, *, target: str = "primary") -> None:
        """Watch what ``engine`` sends; ``target`` names it in samples and logs. Idempotent."""
        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        if id(sync) in self._hooks:
            return
        hooks = EngineHooks(self, self.fingerprinter(sync.dialect.name), target)
        event.listen(sync, "before_cursor_execute", hooks.before)
        event.listen(sync, "after_cursor_execute", hooks.after)
        event.listen(sync, "handle_error", hooks.error)
        self._hooks[id(sync)] = hooks

    def detach(self, engine: AsyncEngine | Engine) -> None:
        """Stop watching ``engine`` (nothing if it was not attached)."""
        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        hooks = self._hooks.pop(id(sync), None)
        if hooks is not None:
            event.remove(sync, "before_cursor_execute", hooks.before)
            event.remove(sync, "after_cursor_execute", hooks.after)
            event.remove(sync, "handle_error", hooks.error)

    def fingerprinter(self, dialect: str) -> Fingerprinter:
        """The cached fingerprinter for ``dialect`` (SQLAlchemy's name: ``postgresql``…)."""
        found = self._fingerprinters.get(dialect)
        if found is None:
            found = Fingerprinter(dialect, cache_size=self.options.fingerprint_cache_size)
            self._fingerprinters[dialect] = found
        return found

    def statistics(self) -> list[QueryStatsSnapshot]:
        """Every fingerprint's numbers, most total time first (``other`` last)."""
        return self.table.snapshot()

    def slowest(self, limit: int = 10) -> list[QueryStatsSnapshot]:
        """The ``limit`` fingerprints with the highest p95 (``other`` left out)."""
        ranked = [s for s in self.table.snapshot() if s.fingerprint.id != "other"]
        ranked.sort(key=lambda s: s.p95_ms, reverse=True)
        return ranked[:limit]

    def n_plus_one(self) -> list[NPlusOneFinding]:
        """The N+1 findings so far, the most frequent first (copies)."""
        with self._findings_lock:
            found = [
                NPlusOneFinding(f.fingerprint, f.location, f.threshold, f.units, f.correlation_id)
                for f in self._findings.values()
            ]
        found.sort(key=lambda f: f.units, reverse=True)
        return found

    def reset(self) -> None:
        """Forget the statistics and findings (a new measurement period)."""
        self.table.clear()
        with self._findings_lock:
            self._findings.clear()

    def observe(
        self,
        fingerprint: Fingerprint,
        seconds: float,
        rows: int,
        failed: bool,
        statement: str,
        parameters: Any,
        target: str,
        batch: bool = False,
    ) -> None:
        """Count one statement (the engine hooks call this; tests may too).

        ``batch``: a further statement of one execute() that SQLAlchemy sent in batches;
        counted everywhere but in the N+1 count (the application asked once).
        """
        self.table.record(fingerprint, seconds, rows, failed, statement, parameters, target)
        operation = fingerprint.operation
        self._durations[operation].observe(seconds)
        if seconds >= self._slow_seconds:
            self._report_slow(fingerprint, seconds, rows, failed, parameters, target)
        if fingerprint.control:
            return
        scope = _current_scope()
        if scope is None:
            return
        scope.queries += 1
        scope.seconds += seconds
        if (
            operation != "other"
            and self._threshold
            and not batch
            and scope.count(fingerprint.id) == self._threshold
        ):
            self._report_n_plus_one(fingerprint, target)

    def _report_slow(
        self,
        fingerprint: Fingerprint,
        seconds: float,
        rows: int,
        failed: bool,
        parameters: Any,
        target: str,
    ) -> None:
        self._slow[fingerprint.operation].inc()
        log.warning(
            "slow query",
            **_correlation(context.correlation_id()),
            fingerprint=fingerprint.id,
            query=fingerprint.text,
            elapsed_ms=round(seconds * 1000, 3),
            rows=rows,
            failed=failed,
            parameters=redact_parameters(parameters),
            target=target,
        )

    def _report_n_plus_one(self, fingerprint: Fingerprint, target: str) -> None:
        location = call_site()
        correlation = context.correlation_id()
        self._n_plus_one[fingerprint.operation].inc()
        with self._findings_lock:
            key = (fingerprint.id, location)
            finding = self._findings.get(key)
            if finding is None:
                finding = self._findings[key] = NPlusOneFinding(
                    fingerprint, location, self._threshold, 0, None
                )
                if len(self._findings) > self.options.max_findings:
                    self._findings.popitem(last=False)
            else:
                self._findings.move_to_end(key)
            finding.units += 1
            finding.correlation_id = correlation
        log.warning(
            "n+1 query",
            **_correlation(correlation),
            fingerprint=fingerprint.id,
            query=fingerprint.text,
            runs=self._threshold,
            location=location,
            target=target,
        )

    def failed(self, error: Exception) -> None:
        """Log the monitor's own failure, once (the engine hooks call this)."""
        if not self._failed_once:
            self._failed_once = True
            log.error("query monitor failed; queries go on unmonitored", exc_info=error)


def _current_scope() -> QueryScope | None:
    """The scope of the unit of work in progress, made on first use; None outside one."""
    state = context.request_state()
    if state is not None:
        scope = state.get(SCOPE_KEY)
        if scope is None:
            scope = state[SCOPE_KEY] = QueryScope()
        return scope if isinstance(scope, QueryScope) else None
    tx = current_transaction()
    if tx is None:
        return None
    while tx.parent is not None:
        tx = tx.parent
    if tx.query_scope is None:
        tx.query_scope = QueryScope()
    return tx.query_scope


def _correlation(correlation_id: str | None) -> dict[str, str]:
    """The correlation id as a log field, left out when there is none."""
    return {} if correlation_id is None else {"correlation_id": correlation_id}
