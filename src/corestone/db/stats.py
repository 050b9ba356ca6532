"""The database's own statistics as scrape-time gauges and a health signal.

:class:`DatabaseStats` samples, in four small catalog queries on PostgreSQL:

- connections of this database by state (``pg_stat_activity``);
- queries running longer than ``long_query_seconds``, the longest one's age, and the
  sessions waiting on a lock;
- for the ``top_tables`` largest tables: sequential and index scans, live and dead rows,
  total size (``pg_stat_user_tables``; bounded so a schema of thousands of tables costs
  the same as one of twenty). Sizes come from the catalog's page counts, as of the last
  VACUUM or ANALYZE, because ``pg_total_relation_size`` locks each table and a scrape
  must not queue behind a migration's lock;
- the buffer cache hit ratio (``pg_stat_database``).

SQLite has none of these; it reports its page count, free-list pages and file size.

The cost is bounded twice: a sample serves every scrape for ``cache_seconds`` (one
in flight at a time, under ``timeout_seconds``), and ``/metrics`` awaits it through
:meth:`corestone.observability.Metrics.add_refresher` before rendering, so the gauges
are at most ``cache_seconds`` old and a scrape never waits longer than the timeout. A
failed sample keeps the last good one and sets ``corestone_db_stats_up`` to 0.

:meth:`DatabaseStats.check` turns the sample into a readiness check that warns, never
fails (``CORESTONE_DATABASE_STATS_HEALTH=true`` registers it): lock waits, long queries,
a cache hit ratio under ``warn_cache_hit_ratio``, a table whose dead rows exceed
``warn_dead_fraction`` of its live ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger

__all__ = ["DatabaseSample", "DatabaseStats", "StatsOptions", "TableSample"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StatsOptions:
    """How often, how much, and when a value is worth a warning (module doc)."""

    cache_seconds: float = 5.0
    timeout_seconds: float = 2.0
    top_tables: int = 20
    long_query_seconds: float = 60.0
    warn_cache_hit_ratio: float = 0.9
    warn_cache_min_blocks: int = 10_000
    warn_dead_fraction: float = 0.2
    warn_dead_min_rows: int = 10_000


@dataclass(frozen=True, slots=True)
class TableSample:
    """One table's counters (PostgreSQL): scans since the statistics were reset, rows, size."""

    name: str
    seq_scans: int
    index_scans: int
    live_rows: int
    dead_rows: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class DatabaseSample:
    """One sample of the database's statistics; fields a database lacks stay empty."""

    dialect: str
    connections: dict[str, int] = field(default_factory=dict)
    long_queries: int = 0
    longest_query_seconds: float = 0.0
    lock_waits: int = 0
    tables: tuple[TableSample, ...] = ()
    cache_hit_ratio: float | None = None
    cache_blocks: int = 0
    sqlite_pages: int | None = None
    sqlite_free_pages: int | None = None
    size_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "connections": dict(self.connections),
            "long_queries": self.long_queries,
            "longest_query_seconds": round(self.longest_query_seconds, 3),
            "lock_waits": self.lock_waits,
            "cache_hit_ratio": self.cache_hit_ratio,
            "tables": [
                {
                    "name": t.name,
                    "seq_scans": t.seq_scans,
                    "index_scans": t.index_scans,
                    "live_rows": t.live_rows,
                    "dead_rows": t.dead_rows,
                    "size_bytes": t.size_bytes,
                }
                for t in self.tables
            ],
            "sqlite_pages": self.sqlite_pages,
            "sqlite_free_pages": self.sqlite_free_pages,
            "size_bytes": self.size_bytes,
        }


_CONNECTIONS = text("""
SELECT COALESCE(state, 'unknown'), count(*) FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' GROUP BY 1
""")
_ACTIVITY = text("""
SELECT count(*) FILTER (WHERE now() - query_start > make_interval(secs => :long)),
       COALESCE(EXTRACT(EPOCH FROM max(now() - query_start)), 0)::float8,
       count(*) FILTER (WHERE wait_event_type = 'Lock')
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND state NOT IN ('idle') AND pid <> pg_backend_pid()
""")
# Sizes from the catalog's page counts (as of the last VACUUM, ANALYZE or CREATE INDEX):
# pg_total_relation_size takes a lock on each table, so a table locked by a migration
# would stall the scrape behind it.
_TABLES = text("""
SELECT s.relname, COALESCE(s.seq_scan, 0), COALESCE(s.idx_scan, 0), s.n_live_tup,
       s.n_dead_tup,
       (c.relpages::bigint + COALESCE(toast.relpages, 0) + COALESCE(
           (SELECT sum(i.relpages) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = s.relid), 0))::bigint
         * current_setting('block_size')::bigint AS size
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
LEFT JOIN pg_class toast ON toast.oid = c.reltoastrelid
ORDER BY size DESC, s.relname LIMIT :top
""")
_CACHE = text("""
SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()
""")


async def _sample_postgres(conn: AsyncConnection, options: StatsOptions) -> DatabaseSample:
    connections: dict[str, int] = {state: n for state, n in await conn.execute(_CONNECTIONS)}  # noqa: C416 - rows, not pairs
    long, longest, waits = (
        await conn.execute(_ACTIVITY, {"long": options.long_query_seconds})
    ).one()
    tables = tuple(
        TableSample(*row) for row in await conn.execute(_TABLES, {"top": options.top_tables})
    )
    hit, read = (await conn.execute(_CACHE)).one()
    blocks = hit + read
    return DatabaseSample(
        "postgresql",
        connections=connections,
        long_queries=long,
        longest_query_seconds=longest,
        lock_waits=waits,
        tables=tables,
        cache_hit_ratio=hit / blocks if blocks else None,
        cache_blocks=blocks,
    )


async def _sample_sqlite(conn: AsyncConnection) -> DatabaseSample:
    pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar_one()
    free = (await conn.exec_driver_sql("PRAGMA freelist_count")).scalar_one()
    size = (await conn.exec_driver_sql("PRAGMA page_size")).scalar_one()
    return DatabaseSample(
        "sqlite", sqlite_pages=pages, sqlite_free_pages=free, size_bytes=pages * size
    )


class DatabaseStats:
    """Samples one database's statistics for gauges and readiness (module doc).

    ``engine`` is called for the engine at each sample (the primary of a started
    :class:`~corestone.db.Database`: ``lambda: db.engine``).
    """

    def __init__(
        self,
        engine: Callable[[], AsyncEngine],
        options: StatsOptions | None = None,
        *,
        prefix: str = "corestone_db",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self.options = options if options is not None else StatsOptions()
        self._prefix = prefix
        self._clock = clock
        self._last: DatabaseSample | None = None
        self._taken_at: float | None = None
        self._up = False
        self._down_logged = False
        self._lock = asyncio.Lock()

    @property
    def last(self) -> DatabaseSample | None:
        """The last good sample (None before the first)."""
        return self._last

    async def refresh(self) -> DatabaseSample | None:
        """A sample at most ``cache_seconds`` old; the last good one if this one fails."""
        async with self._lock:
            now = self._clock()
            if self._taken_at is not None and now - self._taken_at < self.options.cache_seconds:
                return self._last
            self._taken_at = now
            try:
                async with asyncio.timeout(self.options.timeout_seconds):
                    self._last = await self._sample()
                self._up, self._down_logged = True, False
            except Exception as error:  # noqa: BLE001 - a scrape reports it, never fails on it
                if not self._down_logged:  # once per outage, not once per scrape
                    log.warning("database statistics not sampled", error=repr(error))
                self._up, self._down_logged = False, True
            return self._last

    async def _sample(self) -> DatabaseSample:
        async with self._engine().connect() as conn:
            if conn.dialect.name == "postgresql":
                return await _sample_postgres(conn, self.options)
            return await _sample_sqlite(conn)

    async def check(self) -> CheckResult:
        """Readiness: ``warn`` with what is wrong, ``pass`` otherwise; never ``fail``."""
        sample = await self.refresh()
        if sample is None or not self._up:
            return CheckResult(HealthStatus.WARN, output="database statistics unavailable")
        problems = self.warnings(sample)
        return CheckResult(
            HealthStatus.WARN if problems else HealthStatus.PASS,
            observed_value=len(problems),
            observed_unit="warnings",
            output="; ".join(problems) or None,
        )

    def warnings(self, sample: DatabaseSample) -> list[str]:
        """What in ``sample`` is worth a warning, one sentence each."""
        o = self.options
        found = []
        if sample.lock_waits:
            found.append(f"{sample.lock_waits} session(s) waiting on a lock")
        if sample.long_queries:
            found.append(
                f"{sample.long_queries} quer(ies) running over {o.long_query_seconds:g}s "
                f"(longest {sample.longest_query_seconds:.0f}s)"
            )
        ratio = sample.cache_hit_ratio
        enough = sample.cache_blocks >= o.warn_cache_min_blocks
        if ratio is not None and enough and ratio < o.warn_cache_hit_ratio:
            found.append(f"cache hit ratio {ratio:.3f} < {o.warn_cache_hit_ratio}")
        for table in sample.tables:
            if table.dead_rows >= o.warn_dead_min_rows and table.dead_rows > (
                table.live_rows * o.warn_dead_fraction
            ):
                found.append(f"{table.name}: {table.dead_rows} dead rows (vacuum?)")
        return found

    def describe(self) -> list[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        """The last sample as metric families (prometheus_client's collector protocol)."""
        yield from self._families(self._last)

    def _families(self, sample: DatabaseSample | None) -> Iterator[Metric]:
        p = self._prefix
        up = GaugeMetricFamily(f"{p}_stats_up", "1 if the last statistics sample worked.")
        up.add_metric([], 1.0 if self._up else 0.0)
        yield up
        connections = GaugeMetricFamily(
            f"{p}_connections", "Client connections by state.", labels=["state"]
        )
        long = GaugeMetricFamily(f"{p}_long_queries", "Queries running longer than the limit.")
        longest = GaugeMetricFamily(
            f"{p}_longest_query_seconds", "Age of the longest running query."
        )
        waits = GaugeMetricFamily(f"{p}_lock_waits", "Sessions waiting on a lock.")
        hit = GaugeMetricFamily(f"{p}_cache_hit_ratio", "Buffer cache hits / block reads.")
        seq = CounterMetricFamily(
            f"{p}_table_seq_scans", "Sequential scans per table.", labels=["table"]
        )
        idx = CounterMetricFamily(
            f"{p}_table_index_scans", "Index scans per table.", labels=["table"]
        )
        live = GaugeMetricFamily(f"{p}_table_live_rows", "Live rows per table.", labels=["table"])
        dead = GaugeMetricFamily(f"{p}_table_dead_rows", "Dead rows per table.", labels=["table"])
        size = GaugeMetricFamily(
            f"{p}_table_size_bytes", "Size per table, indexes included.", labels=["table"]
        )
        pages = GaugeMetricFamily(f"{p}_sqlite_pages", "SQLite pages in the file.")
        free = GaugeMetricFamily(f"{p}_sqlite_free_pages", "SQLite pages on the free list.")
        if sample is not None:
            for state, count in sorted(sample.connections.items()):
                connections.add_metric([state], count)
            if sample.dialect == "postgresql":
                long.add_metric([], sample.long_queries)
                longest.add_metric([], sample.longest_query_seconds)
                waits.add_metric([], sample.lock_waits)
            if sample.cache_hit_ratio is not None:
                hit.add_metric([], sample.cache_hit_ratio)
            for t in sample.tables:
                seq.add_metric([t.name], t.seq_scans)
                idx.add_metric([t.name], t.index_scans)
                live.add_metric([t.name], t.live_rows)
                dead.add_metric([t.name], t.dead_rows)
                size.add_metric([t.name], t.size_bytes)
            if sample.sqlite_pages is not None:
                pages.add_metric([], sample.sqlite_pages)
                free.add_metric([], sample.sqlite_free_pages or 0)
        yield from (connections, long, longest, waits, hit, seq, idx, live, dead, size, pages, free)
