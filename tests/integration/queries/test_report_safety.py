"""The service's report: built once per period whatever the callers, and no value in it."""

from __future__ import annotations

import asyncio

import pytest

from corestone import Infrastructure, Settings
from corestone.db.report import database_report, report_cache_of

SECRET = "4111-secret-value"


async def test_many_callers_cost_one_report(database_url: str) -> None:
    """Callers at once, and callers in a row, get the one report the first built (the
    advisor's EXPLAINs run once per period, not once per request); a limit of its own
    and the end of the period make a new one."""
    settings = Settings(database_url=database_url, env="test")
    async with Infrastructure(settings) as infra:
        reports = await asyncio.gather(
            *(database_report(infra.db, settings, limit=5) for _ in range(4))
        )
        again = await database_report(infra.db, settings, limit=5)
        other = await database_report(infra.db, settings, limit=6)
        cache = report_cache_of(infra.db)
        cache.clock = lambda: float("inf")
        expired = await database_report(infra.db, settings, limit=5)
    assert all(r is reports[0] for r in [*reports, again])
    assert other is not reports[0]
    assert expired is not reports[0]


async def test_a_plan_that_fails_on_its_values_does_not_show_them(postgres_url: str) -> None:
    """A monitored statement that failed on a value (a bad cast) is the slowest sample: its
    plan fails again, quoting the value; the report's error does not."""
    settings = Settings(
        database_url=postgres_url, env="test", query_monitor=True, slow_query_ms=0.0
    )
    async with Infrastructure(settings) as infra:
        assert infra.db.monitor is not None
        async with infra.db.engine.connect() as conn:
            await conn.exec_driver_sql("CREATE TABLE cards (id INTEGER, number INTEGER)")
            await conn.commit()
            for statement in (  # the server's error, then asyncpg's own
                "SELECT id FROM cards WHERE number = CAST($1 AS text)::int",
                "SELECT number FROM cards WHERE id = $1",
            ):
                with pytest.raises(Exception, match=SECRET):
                    await conn.exec_driver_sql(statement, (SECRET,))
                await conn.rollback()
        report = await database_report(infra.db, settings)
    errors = sorted(p["error"] for p in report["plans"] if p["error"])
    assert len(errors) == 2, report["plans"]
    assert errors[0].startswith("DataError: invalid input for query argument $1: ?")
    assert 'invalid input syntax for type integer: "?"' in errors[1]
    assert SECRET not in repr(report)
