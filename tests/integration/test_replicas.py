"""Read replicas on PostgreSQL: routing, read-your-writes, and falling back when one is down.

The "replica" here is a second database with the same schema and different rows, so a
test can tell which server answered; streaming replication itself is PostgreSQL's job.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from sqlalchemy import text

from corestone import Infrastructure, Settings, context
from corestone.db import Database
from corestone.observability import Metrics


async def _label(url: str, label: str) -> None:
    db = Database(url)
    await db.start()
    async with db.transaction() as tx:
        await tx.session.execute(text("CREATE TABLE whoami (name TEXT)"))
        await tx.session.execute(text("INSERT INTO whoami VALUES (:n)"), {"n": label})
    await db.aclose()


async def _who(db: Database, *, read_only: bool) -> str:
    async with db.transaction(read_only=read_only) as tx:
        return str(await tx.session.scalar(text("SELECT name FROM whoami")))


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nowhere"


async def test_reads_go_to_replicas_in_turn_and_writes_to_primary(
    make_postgres_database: Callable[[], str],
) -> None:
    """Read-only transactions alternate over replicas; read-write ones use the primary."""
    primary, one, two = (make_postgres_database() for _ in range(3))
    for url, label in ((primary, "primary"), (one, "one"), (two, "two")):
        await _label(url, label)
    db = Database(primary, replica_urls=[one, two], metrics=Metrics())
    await db.start()
    try:
        reads = {await _who(db, read_only=True) for _ in range(4)}
        assert reads == {"one", "two"}
        assert await _who(db, read_only=False) == "primary"
    finally:
        await db.aclose()


async def test_after_a_write_this_context_reads_the_primary(
    make_postgres_database: Callable[[], str],
) -> None:
    """Once a write commits in a context (a request), its later reads see the primary."""
    primary, replica = make_postgres_database(), make_postgres_database()
    await _label(primary, "primary")
    await _label(replica, "replica")
    db = Database(primary, replica_urls=[replica], metrics=Metrics())
    await db.start()

    async def request() -> tuple[str, str]:
        with context.request_scope():
            before = await _who(db, read_only=True)
            async with db.transaction() as tx:
                await tx.session.execute(text("UPDATE whoami SET name = 'primary'"))
            return before, await _who(db, read_only=True)

    try:
        assert await request() == ("replica", "primary")
        # Another request that has not written still reads the replica.
        with context.request_scope():
            assert await _who(db, read_only=True) == "replica"
    finally:
        await db.aclose()


async def test_unreachable_replica_is_skipped_and_reported(
    make_postgres_database: Callable[[], str],
) -> None:
    """A dead replica is skipped (reads fall back to the primary) and shows in readiness as down."""
    primary = make_postgres_database()
    await _label(primary, "primary")
    settings = Settings(database_url=primary, database_replica_urls=[_closed_port_url()])
    async with Infrastructure(settings) as infra:
        assert await _who(infra.db, read_only=True) == "primary"
        report = await infra.health.ready()
        assert report.status.value == "pass"
        entry = report.checks["database:responseTime"][0]
        assert "replica1 down" in entry["output"]
