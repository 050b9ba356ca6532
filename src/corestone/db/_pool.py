"""Connection pools: their shape, a liveness ping for idle connections only, and metrics.

SQLAlchemy's ``pool_pre_ping`` pings on every checkout; on asyncpg a ping is three round
trips (BEGIN, ``;``, ROLLBACK), more than the work of a cached request. A connection in
steady use has just proved itself, so corestone pings only a connection that has sat in
the pool longer than ``ping_idle_seconds`` (a firewall or a server timeout may have
dropped it). A connection that dies while in use, or between uses, fails its next
statement with a disconnect: SQLAlchemy then invalidates the whole pool (every older
connection is replaced at its next checkout) and ``run_in_transaction`` retries the work.

The default shape has no overflow: an overflow connection is closed when it is checked
in while the pool is full, so under steady load above ``size`` the pool would connect and
disconnect on every request. A checkout beyond ``size`` waits (up to ``timeout_seconds``)
for a connection instead. ``corestone_db_connections_opened_total`` counts the
connections each pool opened; in steady state it stays flat.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import QueuePool

from corestone._extras import requires_extra
from corestone.clock import Clock
from corestone.config import redact_url
from corestone.db.scoping import ScopableSession
from corestone.observability.metrics import Metrics

__all__ = ["PoolOptions", "PooledEngine"]

_IDLE_SINCE: Final = "corestone_idle_since"


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Connection pool shape (PostgreSQL; SQLite files use the same queue pool).

    ``ping_idle_seconds``: ping a connection at checkout only when it has been idle in
    the pool at least this long (0: every checkout after any idle time; None: never, rely
    on disconnect handling and retries).
    """

    size: int = 20
    max_overflow: int = 0
    timeout_seconds: float = 10.0
    recycle_seconds: float = 1800.0
    ping_idle_seconds: float | None = 30.0


HAS_CACHE: Final = "corestone_has_cache"
"""``session.info`` key: the session's database has a cache, so its flushes are recorded
for invalidation (``db/_written.py``); without one, recording them would only make garbage."""


_DRIVER_EXTRAS: Final = {"aiosqlite": "sqlite", "asyncpg": "postgres"}
"""The extra that brings each driver corestone supports; SQLAlchemy imports the driver
when the engine is created, so that is where a missing one is named."""


class PooledEngine:
    """One engine (the primary or a replica) with its sessions and pool metrics."""

    def __init__(
        self,
        url: URL,
        label: str,
        options: dict[str, Any],
        metrics: Metrics,
        *,
        ping_idle_seconds: float | None,
        clock: Clock,
        has_cache: bool = False,
    ) -> None:
        self.url = url
        self.label = label
        extra = _DRIVER_EXTRAS.get(url.get_driver_name())
        if extra is None:  # a driver corestone has no extra for: its own error stands
            self.engine = create_async_engine(url, **options)
        else:
            with requires_extra("corestone.db", extra):
                self.engine = create_async_engine(url, **options)
        self.sessions = async_sessionmaker(
            self.engine,
            expire_on_commit=False,
            info={HAS_CACHE: True} if has_cache else None,
            sync_session_class=ScopableSession,
        )
        self.unhealthy_until = 0.0
        self.last_error: str | None = None
        self._waits = metrics.counter(
            "db_pool_waits_total", "Checkouts that found the pool exhausted and waited.", ["pool"]
        ).labels(pool=label)
        self._timeouts = metrics.counter(
            "db_pool_timeouts_total", "Checkouts that gave up waiting.", ["pool"]
        ).labels(pool=label)
        self._acquire_seconds = metrics.histogram(
            "db_pool_acquire_seconds", "Time to get a connection from the pool.", ["pool"]
        ).labels(pool=label)
        opened = metrics.counter(
            "db_connections_opened_total", "Database connections opened by the pool.", ["pool"]
        ).labels(pool=label)
        event.listen(self.engine.sync_engine, "connect", lambda *_: opened.inc())
        for name, doc, read in (
            ("db_pool_size", "Configured pool size.", QueuePool.size),
            ("db_pool_checked_out", "Connections in use.", QueuePool.checkedout),
            ("db_pool_overflow", "Connections beyond the pool size.", QueuePool.overflow),
        ):
            metrics.gauge(name, doc, ["pool"]).labels(pool=label).set_function(
                lambda read=read: self._read_pool(read)  # type: ignore[misc]
            )
        if ping_idle_seconds is not None:
            _ping_when_idle(self.engine, ping_idle_seconds, clock)

    @property
    def safe_url(self) -> str:
        return redact_url(self.url.render_as_string(hide_password=False))

    def _read_pool(self, read: Callable[[QueuePool], int]) -> float:
        pool = self.engine.sync_engine.pool
        return float(max(read(pool), 0)) if isinstance(pool, QueuePool) else 0.0

    def pool_status(self) -> str:
        pool = self.engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            return f"pool size {pool.size()}, checked out {pool.checkedout()}"
        return ""

    async def acquire(self, session: AsyncSession, options: dict[str, Any]) -> None:
        pool = self.engine.sync_engine.pool
        if isinstance(pool, QueuePool) and pool.checkedout() >= pool.size() + pool._max_overflow:
            self._waits.inc()
        started = time.perf_counter()
        try:
            await session.connection(execution_options=options)
        except exc.TimeoutError:
            self._timeouts.inc()
            raise
        finally:
            self._acquire_seconds.observe(time.perf_counter() - started)

    async def ping(self) -> float:
        started = time.perf_counter()
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return round((time.perf_counter() - started) * 1000, 3)


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float, clock: Clock) -> None:
    """Ping a connection at checkout if it sat in the pool ``idle_seconds`` or longer.

    A failed ping raises ``DisconnectionError``, on which the pool discards that
    connection and checks out (or opens) another, so the caller never sees it.
    """
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = clock()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or clock() - since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError("idle connection failed its ping") from error
