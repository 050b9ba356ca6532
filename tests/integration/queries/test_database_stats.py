"""Database statistics: sampled on both databases, cached, scraped as gauges, warned on."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from corestone.db.stats import DatabaseStats, StatsOptions
from corestone.observability.health import HealthStatus
from corestone.observability.metrics import Metrics
from corestone.testing.clock import ManualClock


async def test_a_sample_has_what_the_database_keeps(engine: AsyncEngine) -> None:
    """PostgreSQL: connections, tables with scans and size, cache ratio; SQLite: pages."""
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SELECT count(*) FROM child WHERE a = 1")
        if engine.dialect.name == "postgresql":
            await conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        await conn.commit()
    sample = await DatabaseStats(lambda: engine).refresh()
    assert sample is not None
    if engine.dialect.name == "sqlite":
        assert sample.sqlite_pages
        assert sample.size_bytes
        assert sample.sqlite_free_pages is not None
        return
    assert sum(sample.connections.values()) >= 1
    child = next(t for t in sample.tables if t.name == "child")
    assert child.seq_scans >= 1
    assert child.size_bytes > 0
    assert sample.cache_hit_ratio is not None


async def test_a_freed_sqlite_table_shows_on_the_free_list(engine: AsyncEngine) -> None:
    """Deleting most of a SQLite table's rows leaves pages on the free list."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP TABLE child")
    sample = await DatabaseStats(lambda: engine).refresh()
    assert sample is not None
    assert sample.sqlite_free_pages


async def test_a_sample_serves_scrapes_for_cache_seconds(engine: AsyncEngine) -> None:
    """Within cache_seconds the same sample comes back; after, a new one is taken."""
    clock = ManualClock()
    stats = DatabaseStats(lambda: engine, StatsOptions(cache_seconds=5), clock=clock)
    first = await stats.refresh()
    clock.advance(4)
    assert await stats.refresh() is first
    clock.advance(2)
    assert await stats.refresh() is not first


async def test_a_lock_wait_is_a_gauge_and_a_warning(pg_engine: AsyncEngine) -> None:
    """A session blocked on another's lock shows in corestone_db_lock_waits and warns."""
    metrics = Metrics()
    stats = DatabaseStats(lambda: pg_engine, StatsOptions(cache_seconds=0), prefix="t_db")
    metrics.register_collector(stats)
    metrics.add_refresher(stats.refresh)
    async with pg_engine.connect() as holder, pg_engine.connect() as waiter:
        await holder.exec_driver_sql("LOCK TABLE child IN ACCESS EXCLUSIVE MODE")
        blocked = asyncio.ensure_future(waiter.exec_driver_sql("SELECT count(*) FROM child"))
        for _ in range(100):
            sample = await stats.refresh()
            if sample is not None and sample.lock_waits:
                break
            await asyncio.sleep(0.05)
        await metrics.refresh()
        rendered = metrics.render().decode()
        check = await stats.check()
        await holder.rollback()
        await blocked
    assert "t_db_lock_waits 1.0" in rendered
    assert 't_db_table_size_bytes{table="child"}' in rendered
    assert "t_db_stats_up 1.0" in rendered
    assert check.status is HealthStatus.WARN
    assert check.output is not None
    assert "waiting on a lock" in check.output


async def test_an_unreachable_database_is_down_not_an_error(engine: AsyncEngine) -> None:
    """A failed sample keeps the last good one, sets stats_up to 0 and warns."""
    clock = ManualClock()
    broken = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    target = [engine]
    stats = DatabaseStats(lambda: target[0], StatsOptions(cache_seconds=1), clock=clock)
    good = await stats.refresh()
    target[0] = broken
    clock.advance(2)
    assert await stats.refresh() is good
    assert [m.samples[0].value for m in stats.collect() if m.name.endswith("stats_up")] == [0.0]
    assert (await stats.check()).status is HealthStatus.WARN
    await broken.dispose()


async def test_a_quiet_database_passes(engine: AsyncEngine) -> None:
    """No locks, no long queries, no dead rows: the check passes."""
    check = await DatabaseStats(lambda: engine).check()
    assert check.status is HealthStatus.PASS


async def test_the_infrastructure_scrapes_them_and_offers_the_check(database_url: str) -> None:
    """Infrastructure: /metrics renders corestone_db_* after a refresh; with
    database_stats_health the readiness report has a passing database:stats check."""
    from corestone import Infrastructure, Settings

    settings = Settings(database_url=database_url, env="test", database_stats_health=True)
    async with Infrastructure(settings) as infra:
        await infra.metrics.refresh()
        rendered = infra.metrics.render().decode()
        ready = (await infra.health.ready()).as_json()
    assert "corestone_db_stats_up 1.0" in rendered
    if database_url.startswith("sqlite"):
        assert "corestone_db_sqlite_pages " in rendered
    else:
        assert "corestone_db_connections{" in rendered
    [check] = [v for k, v in ready["checks"].items() if k.startswith("database:stats")]
    assert check[0]["status"] == "pass"
