"""The http suite's rows: which server runs which operation at which concurrency, and how
each row becomes table cells and ``results`` keys (``<server>_<operation>_c<conns>_<metric>``).

Every row always has its keys; a row the run could not measure has null figures and a
reason (see :func:`record`).
"""

from __future__ import annotations

from bench._http_load import Load
from bench._report import Report

__all__ = [
    "COLUMNS",
    "METRICS",
    "NARROW",
    "OPERATIONS",
    "ROWS",
    "SERVERS",
    "WIDE",
    "record",
    "row_key",
]

NARROW = 16
WIDE = 64

SERVERS = {
    "minimal_pg": "minimal FastAPI + SQLAlchemy, PostgreSQL",
    "taskboard_pg": "taskboard, PostgreSQL + Redis",
    "taskboard_pg_workers2": "taskboard, PostgreSQL + Redis, --workers 2",
    "taskboard_sqlite": "taskboard, embedded SQLite",
}
OPERATIONS = {
    "get": "GET a row by id",
    "get_cached": "GET a task (cached)",
    "get_uncached": "GET a task, task cache off",
    "list20": "list 20 after a cursor",
    "create": "create",
    "patch": "PATCH with If-Match",
}
ROWS: tuple[tuple[str, str, int], ...] = (
    ("minimal_pg", "get", NARROW),
    ("minimal_pg", "list20", NARROW),
    ("minimal_pg", "create", NARROW),
    ("taskboard_pg", "get_cached", NARROW),
    ("taskboard_pg", "get_uncached", NARROW),
    ("taskboard_pg", "list20", NARROW),
    ("taskboard_pg", "create", NARROW),
    ("taskboard_pg", "patch", NARROW),
    ("taskboard_pg", "list20", WIDE),
    ("taskboard_pg_workers2", "get_cached", NARROW),
    ("taskboard_pg_workers2", "list20", NARROW),
    ("taskboard_pg_workers2", "create", NARROW),
    ("taskboard_pg_workers2", "patch", NARROW),
    ("taskboard_sqlite", "get_cached", NARROW),
    ("taskboard_sqlite", "list20", NARROW),
    ("taskboard_sqlite", "create", NARROW),
    ("taskboard_sqlite", "patch", NARROW),
)
_COUNTS = frozenset({"pg_connections_opened", "failed"})
METRICS = ("rps", "p50_ms", "p99_ms", "round_trips_per_request", "pg_connections_opened", "failed")


def row_key(server: str, operation: str, connections: int) -> str:
    """The results prefix of one row, e.g. ``taskboard_pg_list20_c64``."""
    return f"{server}_{operation}_c{connections}"


COLUMNS = (
    "server",
    "operation",
    "conns",
    "requests/s",
    "p50 ms",
    "p99 ms",
    "DB round trips/req",
    "PG conns opened",
    "failed",
)


def record(report: Report, loads: dict[str, Load]) -> dict[str, str]:
    """Table rows and results for every row of ``ROWS``; returns the missing ones, why."""
    missing: dict[str, str] = {}
    for server, operation, connections in ROWS:
        key = row_key(server, operation, connections)
        found = loads.get(key)
        if found is None:
            missing[key] = _why_missing(server, operation)
        figures: dict[str, float | None] = {
            "rps": found.rps if found else None,
            "p50_ms": found.p50_ms if found else None,
            "p99_ms": found.p99_ms if found else None,
            "round_trips_per_request": found.round_trips_per_request if found else None,
            "pg_connections_opened": (
                float(found.counts.connections) if found and found.counts else None
            ),
            "failed": float(found.failed) if found else None,
        }
        for metric in METRICS:
            report.results[f"{key}_{metric}"] = figures[metric]
        shown = [int(v) if k in _COUNTS and v is not None else v for k, v in figures.items()]
        report.rows.append((SERVERS[server], OPERATIONS[operation], connections, *shown))
    return missing


def _why_missing(server: str, operation: str) -> str:
    if server == "taskboard_pg_workers2":
        return "`taskboard serve --help` offers no --workers yet"
    if operation == "get_uncached":
        return "taskboard has no setting to switch its task cache off yet (TASK_CACHE_OFF)"
    return "not measured"
