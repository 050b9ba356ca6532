"""The database: engines, pools, sessions, transactions and a health check.

One :class:`Database` per primary. SQLite (aiosqlite) is the embedded default and is set
up for a server workload — WAL, foreign keys on, a busy timeout, and ``BEGIN IMMEDIATE``
for write transactions so two writers queue on the lock instead of one of them failing
when it upgrades a read lock. PostgreSQL (asyncpg) takes its pool shape from settings.

Driver errors never leave :meth:`Database.transaction` raw: a broken constraint becomes
:class:`~corestone.errors.ConflictError`, a lost or refused connection or an exhausted
pool :class:`~corestone.errors.UnavailableError`, each chained to the original.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import QueuePool

from corestone.config import Settings, redact_url
from corestone.errors import ConflictError, CorestoneError, UnavailableError
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics

__all__ = ["Database", "PoolOptions"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Connection pool shape (PostgreSQL; SQLite files use the same queue pool)."""

    size: int = 10
    max_overflow: int = 10
    timeout_seconds: float = 10.0
    recycle_seconds: float = 1800.0
    pre_ping: bool = True


class Database:
    """An async SQLAlchemy engine with sessions, transactions, pool metrics and a ping.

    Build it (no I/O), ``await start()`` (connects once to prove the URL works), use
    :meth:`transaction` or :meth:`session`, then ``await aclose()``. Not usable across
    event loops: make one per loop.
    """

    name = "database"

    def __init__(
        self,
        url: str,
        *,
        pool: PoolOptions = PoolOptions(),
        sqlite_busy_timeout_ms: int = 5000,
        metrics: Metrics | None = None,
        label: str = "primary",
    ) -> None:
        self.url: URL = make_url(url)
        self._pool = pool
        self._busy_timeout_ms = sqlite_busy_timeout_ms
        self._metrics = metrics if metrics is not None else Metrics()
        self._label = label
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._init_metrics()

    @classmethod
    def from_settings(cls, settings: Settings, *, metrics: Metrics | None = None) -> Database:
        """The primary database as configured by ``CORESTONE_DATABASE_*``."""
        return cls(
            settings.database_url,
            pool=PoolOptions(
                size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
                timeout_seconds=settings.database_pool_timeout_seconds,
                recycle_seconds=settings.database_pool_recycle_seconds,
                pre_ping=settings.database_pool_pre_ping,
            ),
            sqlite_busy_timeout_ms=settings.database_sqlite_busy_timeout_ms,
            metrics=metrics,
        )

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    @property
    def safe_url(self) -> str:
        """The URL with its password masked."""
        return redact_url(self.url.render_as_string(hide_password=False))

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("Database is not started; use `await database.start()` first")
        return self._engine

    async def start(self) -> None:
        """Create the engine and connect once, so a wrong URL fails here and not later."""
        if self._engine is not None:
            return
        self._engine = self._create_engine()
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as error:
            await self.aclose()
            # For the operator, not a client: say where and why.
            reason = _first_line(getattr(error, "orig", None) or error)
            raise UnavailableError(f"cannot connect to {self.safe_url}: {reason}") from error
        log.info("database started", url=self.safe_url, dialect=self.dialect)

    async def aclose(self) -> None:
        """Close every pooled connection. Idempotent."""
        engine, self._engine, self._sessions = self._engine, None, None
        if engine is not None:
            await engine.dispose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session with no transaction management of its own; closed on exit."""
        if self._sessions is None:
            raise RuntimeError("Database is not started; use `await database.start()` first")
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed if the block ends, else rolled back.

        ``read_only`` takes a shared lock on SQLite (plain ``BEGIN``) and sets the
        PostgreSQL transaction ``READ ONLY``; writes otherwise begin with an exclusive
        intent so concurrent writers wait instead of failing.
        """
        async with self.session() as session:
            try:
                await self._acquire(session, read_only=read_only)
                yield session
                await session.commit()
            except CorestoneError:
                await session.rollback()
                raise
            except Exception as error:
                await session.rollback()
                translated = _translate(error)
                if translated is error:
                    raise
                raise translated from error

    async def ping(self) -> CheckResult:
        """Run ``SELECT 1`` and report the round trip and the pool's use."""
        started = time.perf_counter()
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        return CheckResult(HealthStatus.PASS, elapsed_ms, "ms", output=self._pool_status() or None)

    def _create_engine(self) -> AsyncEngine:
        options: dict[str, Any] = {"pool_pre_ping": self._pool.pre_ping}
        if self.dialect == "sqlite":
            database = self.url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                options.update(pool_size=self._pool.size, max_overflow=self._pool.max_overflow)
                options.update(pool_timeout=self._pool.timeout_seconds)
        else:
            options.update(
                pool_size=self._pool.size,
                max_overflow=self._pool.max_overflow,
                pool_timeout=self._pool.timeout_seconds,
                pool_recycle=self._pool.recycle_seconds,
            )
        engine = create_async_engine(self.url, **options)
        if self.dialect == "sqlite":
            _configure_sqlite(engine, self._busy_timeout_ms)
        return engine

    async def _acquire(self, session: AsyncSession, *, read_only: bool) -> None:
        pool = self.engine.sync_engine.pool
        if isinstance(pool, QueuePool) and pool.checkedout() >= pool.size() + pool._max_overflow:
            self._waits.inc()
        started = time.perf_counter()
        try:
            await session.connection(execution_options={"corestone_read_only": read_only})
        except exc.TimeoutError:
            self._timeouts.inc()
            raise
        finally:
            self._acquire_seconds.observe(time.perf_counter() - started)
        if read_only and self.dialect == "postgresql":
            await session.execute(text("SET TRANSACTION READ ONLY"))

    def _pool_status(self) -> str:
        pool = self._engine.sync_engine.pool if self._engine is not None else None
        if isinstance(pool, QueuePool):
            return f"pool size {pool.size()}, checked out {pool.checkedout()}"
        return ""

    def _init_metrics(self) -> None:
        m, label = self._metrics, self._label
        for name, doc, read in (
            ("db_pool_size", "Configured pool size.", lambda p: p.size()),
            ("db_pool_checked_out", "Connections in use.", lambda p: p.checkedout()),
            (
                "db_pool_overflow",
                "Connections beyond the pool size.",
                lambda p: max(p.overflow(), 0),
            ),
        ):
            m.gauge(name, doc, ["pool"]).labels(pool=label).set_function(
                lambda read=read: self._read_pool(read)  # type: ignore[misc]
            )
        self._waits = m.counter(
            "db_pool_waits_total", "Checkouts that found the pool exhausted and waited.", ["pool"]
        ).labels(pool=label)
        self._timeouts = m.counter(
            "db_pool_timeouts_total", "Checkouts that gave up waiting.", ["pool"]
        ).labels(pool=label)
        self._acquire_seconds = m.histogram(
            "db_pool_acquire_seconds", "Time to get a connection from the pool.", ["pool"]
        ).labels(pool=label)

    def _read_pool(self, read: Any) -> float:
        pool = self._engine.sync_engine.pool if self._engine is not None else None
        return float(read(pool)) if isinstance(pool, QueuePool) else 0.0


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """WAL, foreign keys and a busy timeout per connection; BEGIN emitted by us.

    pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; taking it over
    (isolation_level=None plus our BEGIN) is SQLAlchemy's documented recipe.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("corestone_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _translate(error: BaseException) -> BaseException:
    """The corestone error for a driver error, or ``error`` itself if none fits.

    Messages stay generic because they reach HTTP clients; the driver's own text (which
    can name constraints, hosts and users) is logged here and kept as ``__cause__``.
    """
    translated: CorestoneError | None = None
    if isinstance(error, exc.IntegrityError):
        translated = ConflictError("the change conflicts with existing data")
    elif isinstance(error, exc.TimeoutError):
        translated = UnavailableError("database connection pool exhausted", retry_after=1.0)
    elif isinstance(error, exc.DBAPIError) and (
        error.connection_invalidated or isinstance(error, exc.OperationalError | exc.InterfaceError)
    ):
        translated = UnavailableError("database unavailable", retry_after=1.0)
    elif isinstance(error, OSError | ConnectionError):
        translated = UnavailableError("database unreachable", retry_after=1.0)
    if translated is None:
        return error
    log.warning("database error", code=translated.code, cause=_first_line(error))
    return translated


def _first_line(error: object) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
