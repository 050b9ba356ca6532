"""The database: engines, pools, replicas, transactions and a health check.

One :class:`Database` per primary, with optional read replicas. SQLite (aiosqlite) is the
embedded default and is set up for a server workload — WAL, foreign keys on, a busy
timeout, and ``BEGIN IMMEDIATE`` for write transactions so two writers queue on the lock
instead of one of them failing when it upgrades a read lock. PostgreSQL (asyncpg) takes
its pool shape from settings (``_pool``: no overflow, a ping only for idle connections).
Read-only transactions are the read path (``_read_path``): autocommitted statements on
PostgreSQL, a deferred BEGIN on SQLite.

Driver errors never leave :meth:`Database.transaction` raw: a broken constraint becomes
:class:`~corestone.errors.ConflictError`, a lost or refused connection or an exhausted
pool :class:`~corestone.errors.UnavailableError`, a COMMIT whose answer was lost
:class:`~corestone.errors.CommitUnknownError`, each chained to the original. Errors that
do not come from the driver (application code's own ``OSError``, ``TimeoutError``)
propagate as themselves. ``Database`` is the
:class:`~corestone.db.transactions.TransactionBackend` transactions run on.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from corestone import context
from corestone.clock import Clock, monotonic
from corestone.config import Settings, redact_url
from corestone.db._aborted import watch_failed_statements
from corestone.db._driver_errors import first_line, raw_connect_error, translate_error
from corestone.db._pool import PooledEngine, PoolOptions
from corestone.db._read_path import mark_read_only, session_options
from corestone.db.transactions import (
    TRANSACTION_RETRY,
    IsolationLevel,
    Outcome,
    Transaction,
    open_transaction,
    run_with_retry,
)
from corestone.errors import UnavailableError
from corestone.observability.health import CheckResult, HealthStatus
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.resilience.integrations import guard_engine
from corestone.resilience.registry import BreakerRegistry
from corestone.resilience.retry import Retry

if TYPE_CHECKING:
    from corestone.cache.tiered import TieredCache
    from corestone.db.monitor import QueryMonitor

__all__ = ["Database", "PoolOptions"]

log = get_logger(__name__)

T = TypeVar("T")

_DEFAULT_POOL = PoolOptions()


class Database:
    """An async SQLAlchemy primary (plus optional read replicas) with transactions.

    Build it (no I/O), ``await start()`` (connects once to prove the URL works), use
    :meth:`transaction` or :meth:`run_in_transaction`, then ``await aclose()``. Not usable
    across event loops: make one per loop.

    With replicas, read-only transactions go to a healthy replica in turn, unless the
    current request (:func:`corestone.context.request_scope`) has already committed a
    write, in which case they read the primary, so a caller always reads its own writes.
    A replica that fails to connect is skipped for ``replica_retry_seconds``; with none
    left, reads go to the primary. ``clock`` times that back-off and the pool's idle ping.

    ``monitor``, if given, is attached to the primary and to every replica when they are
    made (:mod:`corestone.db.monitor`; ``CORESTONE_QUERY_MONITOR=true`` makes one).
    """

    name = "database"

    def __init__(
        self,
        url: str,
        *,
        replica_urls: Sequence[str] = (),
        pool: PoolOptions = _DEFAULT_POOL,
        sqlite_busy_timeout_ms: int = 5000,
        replica_retry_seconds: float = 10.0,
        metrics: Metrics | None = None,
        breakers: BreakerRegistry | None = None,
        signing_key: bytes | None = None,
        cache: TieredCache | None = None,
        monitor: QueryMonitor | None = None,
        clock: Clock = monotonic,
    ) -> None:
        self.url: URL = make_url(url)
        # Times, fingerprints and counts every statement of every engine, when given.
        self.monitor = monitor
        self._clock = clock
        self.breakers = breakers
        # Repositories sign their pagination cursors with this unless given another key.
        self.signing_key = signing_key
        # Repositories invalidate (and, when they opt in, read through) this cache.
        self.cache = cache
        self._replica_urls = [make_url(u) for u in replica_urls]
        self._pool = pool
        self._busy_timeout_ms = sqlite_busy_timeout_ms
        self._replica_retry_seconds = replica_retry_seconds
        self._metrics = metrics if metrics is not None else Metrics()
        self._primary: PooledEngine | None = None
        self._replicas: list[PooledEngine] = []
        self._next_replica = itertools.count()
        m = self._metrics
        self._transactions = m.counter(
            "db_transactions_total", "Transactions by outcome.", ["outcome", "target"]
        )
        self._retries = m.counter(
            "db_transaction_retries_total", "Transaction attempts retried, by cause.", ["cause"]
        )
        self._duration = m.histogram(
            "db_transaction_duration_seconds", "Transaction time, begin to outcome.", ["outcome"]
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        breakers: BreakerRegistry | None = None,
        cache: TieredCache | None = None,
    ) -> Database:
        """The primary and replicas as configured by ``CORESTONE_DATABASE_*``, with the query
        monitor when ``CORESTONE_QUERY_MONITOR`` is on."""
        monitor = None
        if settings.query_monitor:
            from corestone.db.monitor import QueryMonitor  # the 'queries' extra, only if on

            monitor = QueryMonitor.from_settings(settings, metrics=metrics)
        return cls(
            settings.database_url,
            replica_urls=settings.database_replica_urls,
            pool=PoolOptions(
                size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
                timeout_seconds=settings.database_pool_timeout_seconds,
                recycle_seconds=settings.database_pool_recycle_seconds,
                ping_idle_seconds=settings.database_pool_ping_idle_seconds,
            ),
            sqlite_busy_timeout_ms=settings.database_sqlite_busy_timeout_ms,
            metrics=metrics,
            breakers=breakers,
            signing_key=settings.signing_key,
            cache=cache,
            monitor=monitor,
        )

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    @property
    def safe_url(self) -> str:
        """The primary's URL with its password masked."""
        return redact_url(self.url.render_as_string(hide_password=False))

    @property
    def engine(self) -> AsyncEngine:
        """The primary's engine."""
        return self._require_primary().engine

    @property
    def engines(self) -> list[AsyncEngine]:
        """Every engine: the primary's first, then each replica's (empty before start)."""
        return [e.engine for e in (self._primary, *self._replicas) if e is not None]

    async def start(self) -> None:
        """Create the engines and connect to the primary once, so a wrong URL fails here.

        Replicas that do not answer at start are logged and skipped until they do.
        """
        if self._primary is not None:
            return
        self._primary = self._pooled(self.url, "primary")
        if self.dialect == "sqlite":
            _configure_sqlite(self._primary.engine, self._busy_timeout_ms)
        self._guard(self._primary)
        try:
            await self._primary.ping()
        except Exception as error:
            await self.aclose()
            # For the operator, not a client: say where and why.
            reason = first_line(getattr(error, "orig", None) or error)
            raise UnavailableError(f"cannot connect to {self.safe_url}: {reason}") from error
        for index, url in enumerate(self._replica_urls, start=1):
            replica = self._pooled(url, f"replica{index}")
            self._replicas.append(replica)
            self._guard(replica)
            try:
                await replica.ping()
            except Exception as error:  # noqa: BLE001 - a replica may come later
                self._mark_unhealthy(replica, error)
        log.info(
            "database started",
            url=self.safe_url,
            dialect=self.dialect,
            replicas=len(self._replicas),
        )

    async def aclose(self) -> None:
        """Close every pooled connection. Idempotent."""
        engines = [e for e in (self._primary, *self._replicas) if e is not None]
        self._primary, self._replicas = None, []
        for engine in engines:
            if self.monitor is not None:
                self.monitor.detach(engine.engine)
            await engine.engine.dispose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A bare session on the primary, for work that manages its own transaction.

        Driver errors come out translated, as from :meth:`transaction`: an exhausted
        pool or a lost database is ``UnavailableError`` (503), not a SQLAlchemy error.
        """
        try:
            async with self._require_primary().sessions() as session:
                yield session
        except Exception as error:
            translated = translate_error(error)
            if translated is error:
                raise
            raise translated from error

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None, read_only: bool = False
    ) -> AsyncIterator[Transaction]:
        """A transaction: committed if the block ends normally, rolled back if it raises.

        Inside another transaction of this database it is a SAVEPOINT instead. An
        ``isolation`` level applies on PostgreSQL (SQLite is always serializable).
        ``read_only`` is the read path: a replica may serve it; on PostgreSQL, with no
        ``isolation``, each statement autocommits (no BEGIN/COMMIT round trips); on
        SQLite it begins deferred, beside a writer. It refuses writes
        (:class:`~corestone.db.ReadOnlyTransactionError`).
        """
        try:
            async with open_transaction(self, isolation=isolation, read_only=read_only) as tx:
                yield tx
        except Exception as error:
            translated = translate_error(error)
            if translated is error:
                raise
            raise translated from error

    async def run_in_transaction(
        self,
        fn: Callable[[Transaction], Awaitable[T]],
        *,
        retry: Retry = TRANSACTION_RETRY,
        isolation: IsolationLevel | None = None,
        read_only: bool = False,
    ) -> T:
        """Run ``fn(tx)`` in a transaction, re-running all of it on transient errors.

        ``fn`` may run more than once: keep side effects out of it, or register them with
        ``tx.after_commit`` (which runs once, for the attempt that committed). ``retry``
        says how often and for how long (its deadline includes the first attempt); only
        transient database failures are retried, never a CommitUnknownError.
        """
        return await run_with_retry(self, fn, retry=retry, isolation=isolation, read_only=read_only)

    async def ping(self) -> CheckResult:
        """Run ``SELECT 1`` on the primary; report the round trip, pool use and replicas."""
        primary = self._require_primary()
        elapsed_ms = await primary.ping()
        notes = [primary.pool_status()]
        for replica in self._replicas:
            try:
                await replica.ping()
                replica.unhealthy_until = 0.0
                notes.append(f"{replica.label} ok")
            except Exception as error:  # noqa: BLE001 - reported, reads fall back
                self._mark_unhealthy(replica, error)
                notes.append(f"{replica.label} down")
        return CheckResult(
            HealthStatus.PASS, elapsed_ms, "ms", output=", ".join(n for n in notes if n)
        )

    @asynccontextmanager
    async def session_for(
        self, *, isolation: IsolationLevel | None, read_only: bool
    ) -> AsyncIterator[AsyncSession]:
        """A session whose transaction has begun, on a replica when that is allowed.

        Part of the transaction port (:class:`~corestone.db.transactions.TransactionBackend`):
        use :meth:`transaction` instead. A socket error, a timeout or the server's refusal
        while connecting to the primary is the driver's, and becomes
        ``UnavailableError("database unreachable")``.
        """
        options = session_options(self.dialect, isolation=isolation, read_only=read_only)
        if read_only and not self._wrote_in_this_request():
            for replica in self._healthy_replicas():
                session = replica.sessions()
                if read_only:
                    mark_read_only(session)
                try:
                    await replica.acquire(session, options)
                except Exception as error:  # noqa: BLE001 - try the next, then the primary
                    await session.close()
                    self._mark_unhealthy(replica, error)
                    continue
                async with session:
                    session.info["corestone_target"] = replica.label
                    yield session
                return
        primary = self._require_primary()
        async with primary.sessions() as session:
            session.info["corestone_target"] = "primary"
            if read_only:
                mark_read_only(session)
            try:
                await primary.acquire(session, options)
            except Exception as error:
                # The driver's connect raises its errors raw: a socket error, or the
                # server's refusal ("too many connections", "starting up").
                if not raw_connect_error(error):
                    raise
                log.warning("database unreachable", cause=first_line(error))
                raise UnavailableError("database unreachable", retry_after=1.0) from error
            yield session

    def _guard(self, engine: PooledEngine) -> None:
        """Put the engine behind its breaker: ``database``, or ``database:replicaN``.

        Only unavailability counts (refused or dropped connections, timeouts); a
        constraint violation is the database answering, so it counts as a success.
        """
        if self.breakers is not None:
            name = "database" if engine.label == "primary" else f"database:{engine.label}"
            guard_engine(engine.engine, self.breakers.get(name))

    def _healthy_replicas(self) -> list[PooledEngine]:
        now = self._clock()
        healthy = [r for r in self._replicas if r.unhealthy_until <= now]
        if not healthy:
            return []
        start = next(self._next_replica) % len(healthy)
        return healthy[start:] + healthy[:start]

    def _mark_unhealthy(self, replica: PooledEngine, error: BaseException) -> None:
        replica.unhealthy_until = self._clock() + self._replica_retry_seconds
        replica.last_error = first_line(error)
        log.warning(
            "replica unavailable",
            replica=replica.label,
            url=replica.safe_url,
            error=replica.last_error,
        )

    def record_outcome(
        self, outcome: Outcome, seconds: float, *, read_only: bool, target: str
    ) -> None:
        """Count a finished transaction; a committed write sends this request's reads to
        the primary (part of the transaction port)."""
        self._transactions.labels(outcome=outcome, target=target).inc()
        self._duration.labels(outcome=outcome).observe(seconds)
        state = context.request_state()
        if outcome != "rollback" and not read_only and state is not None:
            state[self._wrote_key] = True

    @property
    def _wrote_key(self) -> str:
        return f"corestone.db.wrote:{id(self)}"

    def _wrote_in_this_request(self) -> bool:
        state = context.request_state()
        return state is not None and bool(state.get(self._wrote_key))

    def record_retry(self, cause: str) -> None:
        """Count a transaction attempt retried for ``cause`` (part of the transaction port)."""
        self._retries.labels(cause=cause).inc()

    def _require_primary(self) -> PooledEngine:
        if self._primary is None:
            raise RuntimeError("Database is not started; use `await database.start()` first")
        return self._primary

    def _pooled(self, url: URL, label: str) -> PooledEngine:
        engine = PooledEngine(
            url,
            label,
            self._engine_options(url),
            self._metrics,
            ping_idle_seconds=self._pool.ping_idle_seconds,
            clock=self._clock,
            has_cache=self.cache is not None,
        )
        watch_failed_statements(engine.engine)
        if self.monitor is not None:
            self.monitor.attach(engine.engine, target=label)
        return engine

    def _engine_options(self, url: URL) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                options.update(pool_size=self._pool.size, max_overflow=self._pool.max_overflow)
                options.update(pool_timeout=self._pool.timeout_seconds)
            return options
        options.update(
            pool_size=self._pool.size,
            max_overflow=self._pool.max_overflow,
            pool_timeout=self._pool.timeout_seconds,
            pool_recycle=self._pool.recycle_seconds,
        )
        return options


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
