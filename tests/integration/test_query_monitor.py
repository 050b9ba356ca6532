"""The query monitor on real databases: statistics, slow log, metrics, errors, replicas, N+1."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, bindparam, insert, text
from structlog.testing import capture_logs

from corestone import Infrastructure, Settings, context
from corestone.db import Database
from corestone.db.monitor import MonitorOptions, QueryMonitor
from corestone.observability import Metrics

SECRET = "ada.lovelace@example.com"


def _line_of(marker: str) -> int:
    """The line of this file that holds ``marker`` (a comment beside the code)."""
    lines = inspect.getsource(inspect.getmodule(_line_of)).splitlines()  # type: ignore[arg-type]
    return next(n for n, line in enumerate(lines, start=1) if marker in line)


async def _start(url: str, monitor: QueryMonitor, **options: Any) -> Database:
    db = Database(url, monitor=monitor, **options)
    await db.start()
    async with db.transaction() as tx:
        await tx.session.execute(
            text("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)")
        )
    return db


@pytest.fixture
async def watched(database_url: str) -> AsyncIterator[tuple[Database, QueryMonitor, Metrics]]:
    metrics = Metrics()
    monitor = QueryMonitor(MonitorOptions(n_plus_one_threshold=5), metrics=metrics)
    db = await _start(database_url, monitor, metrics=metrics)
    monitor.reset()
    try:
        yield db, monitor, metrics
    finally:
        await db.aclose()


def _by_text(monitor: QueryMonitor, fragment: str) -> list[Any]:
    return [s for s in monitor.statistics() if fragment in s.fingerprint.text]


async def test_each_statement_is_counted_under_its_fingerprint_with_rows(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """Inserts and selects are timed and counted per fingerprint, with the rows they touched."""
    db, monitor, _ = watched
    async with db.transaction() as tx:
        for n in range(3):
            await tx.session.execute(
                text("INSERT INTO people (id, email) VALUES (:id, :email)"),
                {"id": n, "email": f"p{n}@example.com"},
            )
    async with db.transaction(read_only=True) as tx:
        await tx.session.execute(text("SELECT id FROM people"))

    (inserts,) = _by_text(monitor, "INSERT INTO people")
    assert (inserts.calls, inserts.rows, inserts.errors) == (3, 3, 0)
    assert inserts.fingerprint.operation == "insert"
    assert inserts.fingerprint.dialect == db.dialect
    assert 0 < inserts.mean_ms <= inserts.max_ms
    assert inserts.p95_ms > 0
    (select,) = _by_text(monitor, "SELECT id FROM people")
    assert (select.calls, select.rows) == (1, 3)


async def test_expanding_in_lists_of_any_length_share_one_fingerprint(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """SQLAlchemy sends a different string per IN-list length; the monitor folds them."""
    db, monitor, _ = watched
    query = text("SELECT id FROM people WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    async with db.transaction(read_only=True) as tx:
        for size in (1, 2, 7, 30):
            await tx.session.execute(query, {"ids": list(range(size))})

    (entry,) = _by_text(monitor, "FROM people WHERE id IN")
    assert entry.calls == 4
    assert entry.fingerprint.text == "SELECT id FROM people WHERE id IN (?)"


async def test_a_slow_query_is_logged_with_its_correlation_id_and_no_parameter_value(
    database_url: str,
) -> None:
    """The slow-query line names the request, the fingerprint and the time; values are types."""
    metrics = Metrics()
    monitor = QueryMonitor(MonitorOptions(slow_query_ms=0.0), metrics=metrics)
    db = await _start(database_url, monitor, metrics=metrics)
    try:
        with capture_logs() as logs, context.bind(correlation="req-42"):
            async with db.transaction() as tx:
                await tx.session.execute(
                    text("INSERT INTO people (id, email) VALUES (:id, :email)"),
                    {"id": 1, "email": SECRET},
                )
    finally:
        await db.aclose()

    slow = [e for e in logs if e["event"] == "slow query" and "INSERT" in e["query"]]
    assert len(slow) == 1
    line = slow[0]
    assert line["correlation_id"] == "req-42"
    assert line["query"] == "INSERT INTO people (id, email) VALUES (?, ?)"
    assert line["elapsed_ms"] >= 0
    assert line["log_level"] == "warning"
    assert sorted(str(p) for p in _values(line["parameters"])) == ["int", "str"]
    assert SECRET not in repr(logs)
    assert (
        metrics.registry.get_sample_value(
            "corestone_db_slow_queries_total", {"operation": "insert"}
        )
        == 1.0
    )


def _values(parameters: Any) -> list[Any]:
    return list(parameters.values()) if isinstance(parameters, dict) else list(parameters)


async def test_durations_are_a_histogram_by_operation(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """Every statement is observed once, labelled by its operation only."""
    db, _, metrics = watched

    def count(operation: str) -> float:
        return (
            metrics.registry.get_sample_value(
                "corestone_db_query_duration_seconds_count", {"operation": operation}
            )
            or 0.0
        )

    before = [count(op) for op in ("insert", "update", "select", "delete")]
    async with db.transaction() as tx:
        await tx.session.execute(text("INSERT INTO people (id, email) VALUES (1, 'a@b.c')"))
        await tx.session.execute(text("UPDATE people SET email = 'b@b.c' WHERE id = 1"))
        await tx.session.execute(text("SELECT email FROM people WHERE id = 1"))
        await tx.session.execute(text("DELETE FROM people WHERE id = 1"))

    after = [count(op) for op in ("insert", "update", "select", "delete")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]


async def test_a_failed_statement_counts_as_an_error_and_the_error_is_unchanged(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """A constraint violation is recorded as an error call; the caller still gets its error."""
    db, monitor, _ = watched
    insert = text("INSERT INTO people (id, email) VALUES (:id, :email)")
    async with db.transaction() as tx:
        await tx.session.execute(insert, {"id": 1, "email": "x@example.com"})
    with pytest.raises(Exception, match=r"conflicts with existing data"):
        async with db.transaction() as tx:
            await tx.session.execute(insert, {"id": 1, "email": "x@example.com"})

    (entry,) = _by_text(monitor, "INSERT INTO people")
    assert (entry.calls, entry.errors) == (2, 1)


async def test_a_broken_monitor_never_breaks_a_query(database_url: str) -> None:
    """If the monitor's own code fails, the query still succeeds and the failure is logged once."""

    class Broken(QueryMonitor):
        def observe(self, *args: Any) -> None:
            raise RuntimeError("monitor bug")

    with capture_logs() as logs:
        db = await _start(database_url, Broken(metrics=Metrics()))
        try:
            async with db.transaction(read_only=True) as tx:
                for _ in range(3):
                    count = await tx.session.execute(text("SELECT count(*) FROM people"))
                    assert count.scalar() == 0
        finally:
            await db.aclose()

    failures = [e for e in logs if "query monitor failed" in e["event"]]
    assert len(failures) == 1


async def test_replica_engines_are_monitored_too(
    make_postgres_database: Callable[[], str],
) -> None:
    """Reads served by a replica are counted, with the replica named in the sample."""
    primary, replica = make_postgres_database(), make_postgres_database()
    for url in (primary, replica):
        setup = Database(url)
        await setup.start()
        async with setup.transaction() as tx:
            await tx.session.execute(text("CREATE TABLE whoami (name TEXT)"))
        await setup.aclose()
    monitor = QueryMonitor(metrics=Metrics())
    db = Database(primary, replica_urls=[replica], monitor=monitor, metrics=Metrics())
    await db.start()
    try:
        async with db.transaction(read_only=True) as tx:
            await tx.session.execute(text("SELECT name FROM whoami"))
        async with db.transaction() as tx:
            await tx.session.execute(text("INSERT INTO whoami VALUES ('x')"))
    finally:
        await db.aclose()

    (read,) = _by_text(monitor, "SELECT name FROM whoami")
    assert read.sample is not None
    assert read.sample.target == "replica1"
    (write,) = _by_text(monitor, "INSERT INTO whoami")
    assert write.sample is not None
    assert write.sample.target == "primary"
    assert len(db.engines) == 0  # closed: the monitor let go of them too


async def test_a_loop_in_a_transaction_is_an_n_plus_one_reported_once_with_its_line(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """Outside a request the transaction is the unit of work: 12 runs make one report, here."""
    db, monitor, metrics = watched
    with capture_logs() as logs:
        async with db.transaction(read_only=True) as tx:
            for n in range(12):
                await tx.session.execute(  # the naive loop
                    text("SELECT email FROM people WHERE id = :id"), {"id": n}
                )

    reports = [e for e in logs if e["event"] == "n+1 query"]
    assert len(reports) == 1
    expected = f"{__file__}:{_line_of('# the naive loop')}"
    assert reports[0]["location"] == expected
    (finding,) = monitor.n_plus_one()
    assert finding.location == expected
    assert finding.units == 1
    assert finding.fingerprint.text == "SELECT email FROM people WHERE id = ?"
    assert (
        metrics.registry.get_sample_value("corestone_db_n_plus_one_total", {"operation": "select"})
        == 1.0
    )


async def test_each_unit_of_work_counts_on_its_own(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """Four runs in each of three transactions is under a threshold of five: no N+1."""
    db, monitor, _ = watched
    for _ in range(3):
        async with db.transaction(read_only=True) as tx:
            for n in range(4):
                await tx.session.execute(text("SELECT email FROM people WHERE id = :id"), {"id": n})
                async with db.transaction(read_only=True):  # nested: the same unit
                    pass

    assert monitor.n_plus_one() == []


async def test_a_batched_query_is_not_an_n_plus_one(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """One IN query for twelve ids is one run, whatever the list's length."""
    db, monitor, _ = watched
    query = text("SELECT email FROM people WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    async with db.transaction(read_only=True) as tx:
        await tx.session.execute(query, {"ids": list(range(12))})

    assert monitor.n_plus_one() == []


LETTERS = Table(
    "letters",
    MetaData(),
    Column("id", Integer, primary_key=True),  # generated: SERIAL / the SQLite rowid
    Column("body", Text, nullable=False),
)


async def test_one_execute_sqlalchemy_sends_in_batches_is_not_an_n_plus_one(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """An insert of many rows with ordered RETURNING (one statement per row on SQLite) is
    one request of the application: every batch is counted, none makes an N+1."""
    db, monitor, _ = watched
    async with db.engine.begin() as conn:
        await conn.run_sync(LETTERS.metadata.create_all)
    rows = [{"body": f"letter {n}"} for n in range(12)]
    statement = insert(LETTERS).returning(LETTERS.c.id, sort_by_parameter_order=True)
    async with db.transaction() as tx:
        ids = (await tx.session.execute(statement, rows)).scalars().all()

    assert len(set(ids)) == 12
    assert monitor.n_plus_one() == []
    assert sum(s.rows for s in _by_text(monitor, "INSERT INTO letters")) == 12


async def test_the_same_n_plus_one_in_two_units_is_one_finding_seen_twice(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """Findings group by fingerprint and line; each unit of work reports once."""
    db, monitor, _ = watched
    for request in ("r1", "r2"):
        with context.bind(correlation=request), context.request_scope():
            for n in range(6):
                async with db.transaction(read_only=True) as tx:
                    await tx.session.execute(  # in two units
                        text("SELECT email FROM people WHERE id = :id"), {"id": n}
                    )

    (finding,) = monitor.n_plus_one()
    assert finding.units == 2
    assert finding.correlation_id == "r2"
    assert finding.as_dict()["location"] == f"{__file__}:{_line_of('# in two units')}"


async def test_settings_switch_it_on_for_every_engine_and_the_container(
    database_url: str,
) -> None:
    """CORESTONE_QUERY_MONITOR=true puts a monitor on infra.db, in the services too."""
    settings = Settings(
        database_url=database_url,
        env="test",
        query_monitor=True,
        slow_query_ms=50,
        query_n_plus_one_threshold=3,
        query_max_fingerprints=64,
    )
    async with Infrastructure(settings) as infra:
        monitor = infra.db.monitor
        assert isinstance(monitor, QueryMonitor)
        assert monitor.options == MonitorOptions(
            slow_query_ms=50, n_plus_one_threshold=3, max_fingerprints=64, response_headers=False
        )
        assert await infra.services.scope().aget(QueryMonitor) is monitor
        async with infra.db.transaction(read_only=True) as tx:
            await tx.session.execute(text("SELECT 42"))
        assert any(s.fingerprint.text == "SELECT ?" for s in monitor.statistics())

    off = Database.from_settings(Settings(database_url=database_url, env="test"))
    assert off.monitor is None


async def test_concurrent_requests_count_in_their_own_scopes(
    watched: tuple[Database, QueryMonitor, Metrics],
) -> None:
    """Twenty concurrent requests of four queries each (under the threshold of five): no
    N+1, however their queries interleave; one request of five next to them: one report."""
    db, monitor, _ = watched

    async def request(runs: int) -> None:
        with context.request_scope():
            for n in range(runs):
                async with db.transaction(read_only=True) as tx:
                    await tx.session.execute(
                        text("SELECT email FROM people WHERE id = :id"), {"id": n}
                    )
                await asyncio.sleep(0)

    await asyncio.gather(*(request(4) for _ in range(20)))
    assert monitor.n_plus_one() == []

    await asyncio.gather(*(request(4) for _ in range(5)), request(5))
    (finding,) = monitor.n_plus_one()
    assert finding.units == 1


async def test_a_query_cancelled_mid_flight_leaves_the_monitor_working(
    make_postgres_database: Callable[[], str],
) -> None:
    """A statement cancelled while PostgreSQL runs it is counted at most once, and the
    next statements are timed and counted as usual."""
    monitor = QueryMonitor(metrics=Metrics())
    db = await _start(make_postgres_database(), monitor)
    try:
        started = asyncio.Event()

        async def sleeper() -> None:
            async with db.transaction(read_only=True) as tx:
                started.set()
                await tx.session.execute(text("SELECT pg_sleep(30)"))

        task = asyncio.create_task(sleeper())
        await started.wait()
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(3):
            async with db.transaction(read_only=True) as tx:
                await tx.session.execute(text("SELECT count(*) FROM people"))
    finally:
        await db.aclose()

    assert sum(s.calls for s in _by_text(monitor, "PG_SLEEP")) <= 1
    (count,) = _by_text(monitor, "SELECT COUNT(*) FROM people")
    assert count.calls == 3
