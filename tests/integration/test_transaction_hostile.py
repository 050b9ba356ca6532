"""Transactions under attack: a server that closes the connection before COMMIT is sent,
cancellation while outcome hooks run, and tasks that inherit a transaction's context."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db import Database, IsolationLevel, Transaction
from corestone.errors import CircuitOpenError, UnavailableError
from corestone.observability import Metrics
from corestone.resilience import BreakerConfig, BreakerRegistry, Retry, State
from corestone.testing import ManualClock
from tests.integration.fault_proxy import FaultProxy


class _Base(DeclarativeBase):
    metadata = MetaData()


class Seat(_Base):
    __tablename__ = "hostile_seats"
    id: Mapped[int] = mapped_column(primary_key=True)
    taken: Mapped[int] = mapped_column(default=0)


async def _open(url: str) -> Database:
    database = Database(url, metrics=Metrics())
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    async with database.transaction() as tx:
        tx.session.add_all([Seat(id=1), Seat(id=2)])
    return database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await _open(database_url)
    yield database
    await database.aclose()


async def _taken(database: Database, seat: int) -> int:
    async with database.transaction(read_only=True) as tx:
        return int(await tx.session.scalar(select(Seat.taken).where(Seat.id == seat)) or 0)


async def _terminate_own_backend(tx: Transaction, admin: Database) -> None:
    """Have the server end this transaction's connection, and wait until the driver knows."""
    pid = await tx.session.scalar(text("SELECT pg_backend_pid()"))
    raw = await (await tx.session.connection()).get_raw_connection()
    async with admin.transaction() as other:
        await other.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    for _ in range(500):  # the server closes the socket; asyncpg notices on its next read
        if raw.driver_connection is None or raw.driver_connection.is_closed():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the driver never saw its connection close")


async def test_connection_closed_before_commit_was_sent_is_retried(postgres_url: str) -> None:
    """A connection the server closed before COMMIT was sent is a rollback, not an unknown
    outcome: run_in_transaction retries it, and only the final attempt's commit hooks run."""
    database = await _open(postgres_url)
    admin = Database(postgres_url, metrics=Metrics())
    await admin.start()
    try:
        attempts = 0
        hooks: list[str] = []

        async def take(tx: Transaction) -> None:
            nonlocal attempts
            attempts += 1
            await tx.session.execute(
                text("UPDATE hostile_seats SET taken = taken + 1 WHERE id = 1")
            )
            tx.after_commit(lambda: hooks.append("commit"))
            tx.after_rollback(lambda: hooks.append("rollback"))
            tx.after_unknown(lambda: hooks.append("unknown"))
            if attempts == 1:
                await _terminate_own_backend(tx, admin)

        await database.run_in_transaction(take, retry=Retry(attempts=3, initial_wait_seconds=0))
        assert attempts == 2
        assert hooks == ["commit"]
        assert await _taken(admin, 1) == 1

        hooks.clear()
        with pytest.raises(UnavailableError):
            async with database.transaction() as tx:
                await tx.session.execute(text("UPDATE hostile_seats SET taken = 9 WHERE id = 2"))
                tx.after_rollback(lambda: hooks.append("rollback"))
                tx.after_unknown(lambda: hooks.append("unknown"))
                await _terminate_own_backend(tx, admin)
        assert hooks == ["rollback"]
        assert await _taken(admin, 2) == 0
    finally:
        await admin.aclose()
        await database.aclose()


async def _wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.mark.parametrize("form", ["transaction", "run_in_transaction"])
async def test_a_caller_cancelled_while_commit_hooks_run_still_gets_every_hook_run(
    db: Database, form: str
) -> None:
    """Cancelling the caller while an awaited after_commit hook runs does not cut that hook
    short or drop the hooks after it: the transaction committed, so each runs once, whole."""
    ran: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def invalidate_first() -> None:
        entered.set()
        await release.wait()
        ran.append("first")

    async def work(tx: Transaction) -> None:
        await tx.session.execute(text("UPDATE hostile_seats SET taken = 1 WHERE id = 1"))
        tx.after_commit(invalidate_first)
        tx.after_commit(lambda: ran.append("second"))

    async def caller() -> None:
        if form == "transaction":
            async with db.transaction() as tx:
                await work(tx)
        else:
            await db.run_in_transaction(work)

    task = asyncio.create_task(caller())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await _wait_for(lambda: len(ran) == 2)
    assert ran == ["first", "second"]
    assert await _taken(db, 1) == 1


async def test_a_task_started_inside_a_transaction_opens_its_own(db: Database) -> None:
    """A task started inside a transaction (it inherits the context) opens a transaction of
    its own, never a savepoint on the session of a parent that has ended or runs elsewhere:
    its work commits, and no connection is left checked out."""
    go = asyncio.Event()
    seen: list[bool] = []

    async def later() -> None:
        await go.wait()
        async with db.transaction() as tx:
            seen.append(tx.nested)
            await tx.session.execute(text("UPDATE hostile_seats SET taken = 5 WHERE id = 2"))

    async with db.transaction() as parent:
        await parent.session.execute(text("UPDATE hostile_seats SET taken = 1 WHERE id = 1"))
        child = asyncio.create_task(later())
    go.set()
    await child
    assert seen == [False]
    assert await _taken(db, 2) == 5
    assert db.engine.sync_engine.pool.checkedout() == 0


async def test_a_block_awaited_through_wait_for_inside_a_transaction_is_a_savepoint(
    db: Database,
) -> None:
    """``asyncio.wait_for`` (a task of its own on Python 3.11) around work that opens a
    transaction, inside an open one, makes a savepoint of it: the work rolls back with it."""

    async def take() -> bool:
        async with db.transaction() as tx:
            await tx.session.execute(text("UPDATE hostile_seats SET taken = 4 WHERE id = 1"))
            return tx.nested

    with pytest.raises(ValueError, match="undo"):
        async with db.transaction():
            assert await asyncio.wait_for(take(), 30)
            raise ValueError("undo")
    assert await _taken(db, 1) == 0


async def test_a_transaction_inside_another_databases_one_is_still_a_savepoint(
    database_url: str, tmp_path: Path
) -> None:
    """A { B { A } }: the inner block of database A is a savepoint of A's open transaction,
    even with a transaction of database B opened in between, so it rolls back with A."""
    first = await _open(database_url)
    other_url = database_url
    if database_url.startswith("sqlite"):
        other_url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    second = Database(other_url, metrics=Metrics())
    await second.start()
    try:
        with pytest.raises(ValueError, match="undo A"):
            async with first.transaction() as outer:
                async with second.transaction(), first.transaction() as inner:
                    assert inner.nested
                    assert inner.session is outer.session
                    await inner.session.execute(
                        text("UPDATE hostile_seats SET taken = 7 WHERE id = 1")
                    )
                raise ValueError("undo A")
        assert await _taken(first, 1) == 0
    finally:
        await second.aclose()
        await first.aclose()


async def test_a_silent_database_opens_the_breaker_though_every_caller_gives_up(
    postgres_url: str,
) -> None:
    """A database gone silent (no refusal, no reset) opens its breaker: a statement or a
    connect the caller gave up on after waiting slow_call_seconds is a failure, while one
    given up on sooner counts for nothing."""
    url = make_url(postgres_url)
    proxy = FaultProxy(url.port or 5432)
    port = await proxy.start()
    clock = ManualClock()
    config = BreakerConfig(
        window_size=4, minimum_calls=2, slow_call_seconds=5.0, wait_in_open_seconds=60.0
    )
    registry = BreakerRegistry(config, clock=clock)
    database = Database(
        url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False),
        metrics=Metrics(),
        breakers=registry,
    )
    await database.start()
    breaker = registry.get("database")

    async def select_one() -> None:
        async with database.transaction() as tx:
            await tx.session.execute(text("SELECT 1"))

    async def give_up_after(seconds: float) -> None:
        proxy.swallowed.clear()
        task = asyncio.create_task(select_one())
        await asyncio.wait_for(proxy.swallowed.wait(), 10)  # sent, and never answered
        clock.advance(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        proxy.dark = True
        await give_up_after(1.0)
        assert breaker.state is State.CLOSED
        assert registry.snapshot()[0].failed_calls == 0
        for _ in range(4):
            if breaker.state is State.OPEN:
                break
            await give_up_after(6.0)
        assert breaker.state is State.OPEN
        with pytest.raises(CircuitOpenError):
            await asyncio.wait_for(select_one(), 10)
    finally:
        await database.aclose()
        await proxy.aclose()


@pytest.mark.parametrize("limit", ["statement_timeout", "lock_timeout"], ids=["statement", "lock"])
async def test_a_server_side_timeout_is_unavailable_not_a_raw_driver_error(
    postgres_url: str, limit: str
) -> None:
    """PostgreSQL's statement_timeout (57014) or lock_timeout (55P03) ending a statement
    reaches the caller as UnavailableError (503), chained to the driver's error, never raw."""
    database = await _open(postgres_url)
    holder = Database(postgres_url, metrics=Metrics())
    await holder.start()
    try:
        async with holder.transaction() as locking:
            await locking.session.execute(text("SELECT * FROM hostile_seats FOR UPDATE"))
            with pytest.raises(UnavailableError) as caught:
                async with database.transaction() as tx:
                    await tx.session.execute(text(f"SET LOCAL {limit} = 50"))
                    await tx.session.execute(text("SELECT * FROM hostile_seats FOR UPDATE"))
        assert caught.value.__cause__ is not None
    finally:
        await holder.aclose()
        await database.aclose()


async def test_a_bad_statement_is_an_answer_not_an_outage(database_url: str) -> None:
    """A statement the database rejects as wrong (no such table, a syntax error) is not
    UnavailableError and never opens the database breaker, on SQLite as on PostgreSQL."""
    registry = BreakerRegistry(BreakerConfig(window_size=10, minimum_calls=4))
    database = Database(database_url, metrics=Metrics(), breakers=registry)
    await database.start()
    try:
        for statement in ["SELECT * FROM no_such_table", "SELEC 1", "SELECT 1 +"] * 3:
            with pytest.raises(Exception) as caught:  # noqa: PT011 - any error but 503
                async with database.transaction() as tx:
                    await tx.session.execute(text(statement))
            assert not isinstance(caught.value, UnavailableError)
        assert registry.get("database").state is State.CLOSED
        assert registry.snapshot()[0].failed_calls == 0
    finally:
        await database.aclose()


async def test_connections_the_server_refuses_are_unavailable_and_open_the_breaker(
    postgres_url: str,
) -> None:
    """A server that answers a connect with an error (too many connections, 53300) is
    unavailable: the caller gets UnavailableError, never the raw driver error, and each
    refused connect counts against the database breaker until it opens."""
    role = f"cs_limited_{uuid.uuid4().hex[:12]}"
    admin = Database(postgres_url, metrics=Metrics())
    await admin.start()
    async with admin.engine.connect() as conn:
        await conn.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1"))
        await conn.commit()
    registry = BreakerRegistry(BreakerConfig(window_size=4, minimum_calls=2))
    limited = Database(
        make_url(postgres_url).set(username=role).render_as_string(hide_password=False),
        metrics=Metrics(),
        breakers=registry,
    )
    await limited.start()

    async def another_connection() -> None:
        async with limited.transaction() as tx:
            await tx.session.execute(text("SELECT 1"))

    held, release = asyncio.Event(), asyncio.Event()

    async def hold_the_only_connection() -> None:
        async with limited.transaction() as holding:
            await holding.session.execute(text("SELECT 1"))
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold_the_only_connection())
    try:
        await held.wait()
        for _ in range(4):
            with pytest.raises((UnavailableError, CircuitOpenError)) as caught:
                await another_connection()
        assert isinstance(caught.value, CircuitOpenError)
        assert registry.get("database").state is State.OPEN
    finally:
        release.set()
        await holder
        await limited.aclose()
        async with admin.engine.connect() as conn:
            await conn.execute(text(f"DROP ROLE {role}"))
            await conn.commit()
        await admin.aclose()


class _SlowToClose(Database):
    """A database whose sessions take a while to go back to the pool after the outcome
    (SQLite's reset is a round trip to aiosqlite's thread), so a test can cancel there."""

    closing: asyncio.Event
    release: asyncio.Event

    @asynccontextmanager
    async def session_for(
        self, *, isolation: IsolationLevel | None, read_only: bool
    ) -> AsyncIterator[AsyncSession]:
        async with super().session_for(isolation=isolation, read_only=read_only) as session:
            yield session
        self.closing.set()
        await self.release.wait()


async def test_a_caller_cancelled_as_the_session_closes_after_commit_still_runs_commit_hooks(
    database_url: str,
) -> None:
    """Cancelled after COMMIT succeeded, while the session goes back to the pool, a
    transaction block still runs its after_commit hooks: the work is committed."""
    await (await _open(database_url)).aclose()
    database = _SlowToClose(database_url, metrics=Metrics())
    database.closing, database.release = asyncio.Event(), asyncio.Event()
    await database.start()
    ran: list[str] = []

    async def caller() -> None:
        async with database.transaction() as tx:
            await tx.session.execute(text("UPDATE hostile_seats SET taken = 3 WHERE id = 1"))
            tx.after_commit(lambda: ran.append("commit"))
            tx.after_rollback(lambda: ran.append("rollback"))

    try:
        task = asyncio.create_task(caller())
        await database.closing.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ran == ["commit"]
        database.release.set()
        assert await _taken(database, 1) == 3
    finally:
        await database.aclose()


async def test_a_savepoint_that_swallowed_a_statement_error_is_undone_alone(db: Database) -> None:
    """A savepoint's block catches a failed statement's error and returns normally. On
    PostgreSQL that aborts the transaction and its RELEASE fails: the savepoint is rolled
    back (its write undone, the error raised to the block's caller), and the outer
    transaction stays usable and really commits, instead of its COMMIT being answered
    with a silent ROLLBACK while its commit hooks run."""
    ran: list[str] = []
    released = True
    async with db.transaction() as tx:
        tx.after_commit(lambda: ran.append("outer"))
        await tx.session.execute(text("UPDATE hostile_seats SET taken = 1 WHERE id = 1"))
        try:
            async with db.transaction() as inner:
                await inner.session.execute(text("UPDATE hostile_seats SET taken = 7 WHERE id = 2"))
                with suppress(Exception):
                    await inner.session.execute(text("SELECT * FROM no_such_table"))
        except Exception:
            released = False
        await tx.session.execute(text("UPDATE hostile_seats SET taken = taken + 1 WHERE id = 1"))
    assert ran == ["outer"]
    assert await _taken(db, 1) == 2
    assert await _taken(db, 2) == (7 if released else 0)


async def test_a_transaction_that_swallowed_a_statement_error_does_not_report_a_commit(
    db: Database,
) -> None:
    """The outermost block catches a failed statement's error and returns normally. On
    PostgreSQL the transaction is aborted and its COMMIT is answered with a ROLLBACK that
    the driver reports as success: the block's caller was told it committed and its
    commit hooks ran, with nothing written. Now the commit is refused with the database's
    error and the rollback hooks run; on SQLite, where nothing was aborted, it commits."""
    hooks: list[str] = []

    async def swallowing() -> None:
        async with db.transaction() as tx:
            tx.after_commit(lambda: hooks.append("commit"))
            tx.after_rollback(lambda: hooks.append("rollback"))
            await tx.session.execute(text("UPDATE hostile_seats SET taken = 3 WHERE id = 1"))
            with suppress(Exception):
                await tx.session.execute(text("SELECT * FROM no_such_table"))

    if db.dialect == "postgresql":
        with pytest.raises(Exception, match="aborted"):
            await swallowing()
        assert hooks == ["rollback"]
        assert await _taken(db, 1) == 0
    else:
        await swallowing()
        assert hooks == ["commit"]
        assert await _taken(db, 1) == 3
    async with db.transaction() as tx:  # the connection went back to the pool usable
        await tx.session.execute(text("UPDATE hostile_seats SET taken = 4 WHERE id = 1"))
    assert await _taken(db, 1) == 4
