"""What a caller sees when COMMIT fails: refused (retried) versus outcome unknown (never retried).

Also: errors raised by application code inside a transaction keep their own type.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import MetaData, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db import Database, Transaction, transient_cause
from corestone.errors import CommitUnknownError
from corestone.observability import Metrics
from corestone.resilience import Retry
from tests.integration.fault_proxy import FaultProxy


class _Base(DeclarativeBase):
    metadata = MetaData()


class Doctor(_Base):
    __tablename__ = "doctors"
    id: Mapped[int] = mapped_column(primary_key=True)
    on_call: Mapped[bool] = mapped_column(default=True)


async def _open(url: str) -> Database:
    database = Database(url, metrics=Metrics())
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    async with database.transaction() as tx:
        tx.session.add_all([Doctor(id=1), Doctor(id=2)])
    return database


async def _on_call(database: Database) -> list[int]:
    async with database.transaction(read_only=True) as tx:
        query = select(Doctor.id).where(Doctor.on_call).order_by(Doctor.id)
        return list(await tx.session.scalars(query))


@pytest.fixture
async def cutter(postgres_url: str) -> AsyncIterator[tuple[Database, Database, FaultProxy]]:
    """A database reached through the proxy, and one reached directly to check the truth."""
    direct = await _open(postgres_url)
    url = make_url(postgres_url)
    proxy = FaultProxy(url.port or 5432)
    port = await proxy.start()
    proxied_url = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    proxied = Database(proxied_url, metrics=Metrics())
    await proxied.start()
    yield proxied, direct, proxy
    await proxied.aclose()
    await direct.aclose()
    await proxy.aclose()


async def test_connection_lost_after_commit_sent_is_commit_unknown(
    cutter: tuple[Database, Database, FaultProxy],
) -> None:
    """COMMIT reaches the server, the reply never reaches us: CommitUnknownError, the row is
    committed, only after_unknown hooks run, and run_in_transaction does not retry it."""
    proxied, direct, proxy = cutter
    attempts = 0
    hooks: list[str] = []

    async def off_call(tx: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        await tx.session.execute(text("UPDATE doctors SET on_call = false WHERE id = 1"))
        tx.after_commit(lambda: hooks.append("commit"))
        tx.after_rollback(lambda: hooks.append("rollback"))
        tx.after_unknown(lambda: hooks.append("unknown"))
        proxy.cut_after = b"COMMIT"

    retry = Retry(attempts=5, initial_wait_seconds=0, deadline_seconds=None)
    with pytest.raises(CommitUnknownError) as caught:
        await proxied.run_in_transaction(off_call, retry=retry)
    await asyncio.wait_for(proxy.server_answered.wait(), 10)
    assert attempts == 1
    assert hooks == ["unknown"]
    assert caught.value.__cause__ is not None  # chained to the driver's error
    assert transient_cause(caught.value) is None
    assert await _on_call(direct) == [2]
    rendered = proxied._metrics.render().decode()
    assert "corestone_db_transaction_retries_total{" not in rendered


async def test_commit_unknown_through_transaction_block(
    cutter: tuple[Database, Database, FaultProxy],
) -> None:
    """``async with db.transaction()`` raises CommitUnknownError too, never UnavailableError;
    a kept savepoint's after_unknown hooks run, and an undone savepoint's rollback hooks."""
    proxied, direct, proxy = cutter
    hooks: list[str] = []
    with pytest.raises(CommitUnknownError):
        async with proxied.transaction() as tx:
            await tx.session.execute(text("UPDATE doctors SET on_call = false WHERE id = 2"))
            tx.after_commit(lambda: hooks.append("commit"))
            tx.after_rollback(lambda: hooks.append("rollback"))
            async with proxied.transaction() as kept:
                kept.after_unknown(lambda: hooks.append("kept-unknown"))
                kept.after_commit(lambda: hooks.append("kept-commit"))
            with pytest.raises(ValueError, match="undo"):
                async with proxied.transaction() as undone:
                    undone.after_unknown(lambda: hooks.append("undone-unknown"))
                    undone.after_rollback(lambda: hooks.append("undone-rollback"))
                    raise ValueError("undo")
            proxy.cut_after = b"COMMIT"
    await asyncio.wait_for(proxy.server_answered.wait(), 10)
    assert hooks == ["kept-unknown", "undone-rollback"]
    assert await _on_call(direct) == [1]


async def test_serialization_failure_at_commit_is_retried(postgres_url: str) -> None:
    """SERIALIZABLE write skew that PostgreSQL refuses at COMMIT (40001) is retried, and the
    retry sees the other transaction's write."""
    database = await _open(postgres_url)
    colleague = Database(postgres_url, metrics=Metrics())  # another process, in effect
    await colleague.start()
    try:
        other_committed = asyncio.Event()
        finished: list[int] = []
        seen: list[int] = []

        async def leave_if_another_stays(tx: Transaction) -> None:
            count = await tx.session.scalar(text("SELECT count(*) FROM doctors WHERE on_call"))
            seen.append(int(count or 0))
            if count and count > 1:
                await tx.session.execute(text("UPDATE doctors SET on_call = false WHERE id = 1"))
            if not other_committed.is_set():
                # the other doctor leaves too, and commits first
                async with colleague.transaction(isolation="SERIALIZABLE") as other:
                    await other.session.scalar(text("SELECT count(*) FROM doctors WHERE on_call"))
                    await other.session.execute(
                        text("UPDATE doctors SET on_call = false WHERE id = 2")
                    )
                other_committed.set()
            finished.append(len(seen))  # the work ran to its end: a failure now is at COMMIT

        retry = Retry(attempts=3, initial_wait_seconds=0)
        await database.run_in_transaction(
            leave_if_another_stays, retry=retry, isolation="SERIALIZABLE"
        )
        assert finished == [1, 2]  # attempt 1 finished its work and was refused at COMMIT
        assert seen == [2, 1]
        assert await _on_call(database) == [1]
        rendered = database._metrics.render().decode()
        assert 'corestone_db_transaction_retries_total{cause="serialization"} 1.0' in rendered
    finally:
        await colleague.aclose()
        await database.aclose()


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError("no such template"),
        PermissionError("not yours"),
        TimeoutError("slow"),
        ConnectionResetError("the payment provider hung up"),
    ],
    ids=["FileNotFoundError", "PermissionError", "TimeoutError", "ConnectionResetError"],
)
async def test_application_os_errors_propagate_as_themselves(
    database_url: str, error: Exception
) -> None:
    """An OSError raised by application code inside a transaction is not "database
    unreachable" nor a lost database connection: it propagates as itself, the work is
    rolled back, and it is not retried."""
    database = await _open(database_url)
    try:
        with pytest.raises(type(error)) as caught:
            async with database.transaction() as tx:
                await tx.session.execute(text("UPDATE doctors SET on_call = false"))
                raise error
        assert caught.value is error
        attempts = 0

        async def work(tx: Transaction) -> Any:
            nonlocal attempts
            attempts += 1
            await tx.session.execute(text("UPDATE doctors SET on_call = false"))
            raise error

        with pytest.raises(type(error)) as caught:
            await database.run_in_transaction(work)
        assert caught.value is error
        assert attempts == 1
        assert await _on_call(database) == [1, 2]
    finally:
        await database.aclose()


async def test_a_write_whose_commit_is_unknown_still_invalidates_the_cache(
    postgres_url: str,
) -> None:
    """A cached row updated in a transaction whose COMMIT outcome is unknown is dropped from
    the cache: the write may have landed, so the old value is never served afterwards."""
    from corestone.cache import TieredCache
    from tests.integration.repo_models import ItemRepository, open_database, workspace

    class CachedItems(ItemRepository):
        cache_reads = True

    setup = await open_database(postgres_url)
    await setup.aclose()
    url = make_url(postgres_url)
    proxy = FaultProxy(url.port or 5432)
    port = await proxy.start()
    proxied_url = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    async with TieredCache(namespace="unknown") as cache:
        proxied = Database(proxied_url, metrics=Metrics(), cache=cache)
        await proxied.start()
        try:
            with workspace(1):
                async with proxied.transaction() as tx:
                    item = await CachedItems(tx).create({"title": "before"})
                async with proxied.transaction(read_only=True) as tx:
                    assert (await CachedItems(tx).get(item.id)).title == "before"  # now cached
                with pytest.raises(CommitUnknownError):
                    async with proxied.transaction() as tx:
                        await CachedItems(tx).update(item.id, {"title": "after"})
                        proxy.cut_after = b"COMMIT"
                await asyncio.wait_for(proxy.server_answered.wait(), 10)
                async with proxied.transaction(read_only=True) as tx:
                    assert (await CachedItems(tx).get(item.id)).title == "after"
        finally:
            await proxied.aclose()
            await proxy.aclose()
