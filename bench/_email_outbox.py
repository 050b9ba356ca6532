"""The email suite's outbox half: ``EmailService.send`` in a caller's transaction, one sender.

A fresh PostgreSQL database (created and dropped here) holds corestone's three email
tables and a caller's table of one-row inserts. Everything goes through corestone's own
:class:`~corestone.db.Database`, as an application would.

- **Accepting**: transactions of three shapes, interleaved in rounds so the machine's
  load hits them alike: one plain one-row insert (the caller's change), one
  ``EmailService.send``, and both (what an application does: its change and its email,
  together). Messages are built before the clock starts (building validates, whatever
  happens next); each message carries an idempotency key, as the documented pattern does.
- **Delivering**: the accepted messages are delivered by one :class:`EmailSender` to the
  memory provider, pass after pass (``run_once``) until the outbox is empty, with the
  sender's defaults (claims of 100); then as many again with claims of 500.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)
from sqlalchemy.engine import make_url

from corestone.db import Database
from corestone.email import EmailMessage, EmailSender, EmailService, ProviderRoute
from corestone.email.outbox import EmailEventRecord, EmailOutboxRecord, EmailSuppressionRecord
from corestone.testing import MemoryProvider

__all__ = ["AcceptResult", "DeliverResult", "accept", "deliver", "outbox_database", "queue"]

SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

_caller = MetaData()
CHANGES = Table(
    "bench_email_changes",
    _caller,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
_EMAIL_TABLES = [
    EmailOutboxRecord.__table__,
    EmailEventRecord.__table__,
    EmailSuppressionRecord.__table__,
]


@asynccontextmanager
async def outbox_database() -> AsyncIterator[Database]:
    """Create ``bench_email_<random>`` with the tables, yield a started Database, drop it."""
    name = f"bench_email_{secrets.token_hex(4)}"
    server = make_url(SERVER_URL)
    admin = await asyncpg.connect(server.set(drivername="postgresql").render_as_string(False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        db = Database(server.set(database=name).render_as_string(False))
        await db.start()
        try:
            async with db.engine.begin() as conn:
                for table in [*_EMAIL_TABLES, CHANGES]:
                    await conn.run_sync(table.create)  # type: ignore[attr-defined]
            yield db
        finally:
            await db.aclose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _message(i: int) -> EmailMessage:
    return EmailMessage.build(
        sender=("Taskboard", "board@example.com"),
        to=f"user{i}@example.org",
        subject=f"Task {i} is assigned to you",
        text="Your task is ready. " * 20,
        idempotency_key=f"assigned:{i}",
    )


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """Median microseconds per transaction of each shape, and messages accepted per second."""

    insert_us: float
    send_us: float
    insert_and_send_us: float
    accepted_per_second: float
    transactions: int
    """Timed transactions of each shape."""

    @property
    def send_ratio(self) -> float:
        """A transaction that sends ÷ the same transaction doing one plain insert."""
        return self.send_us / self.insert_us

    @property
    def added_ratio(self) -> float:
        """What send adds to the caller's transaction, in units of that transaction."""
        return (self.insert_and_send_us - self.insert_us) / self.insert_us


async def accept(db: Database, count: int, rounds: int = 10) -> AcceptResult:
    """``count`` transactions of each shape, interleaved in ``rounds``."""
    service = EmailService(db)
    messages = [_message(i) for i in range(2 * count)]  # built before the clock starts
    samples: dict[str, list[int]] = {"insert": [], "send": [], "both": []}
    sent = iter(messages)

    async def change() -> None:
        async with db.transaction() as tx:
            await tx.session.execute(insert(CHANGES).values(title="a task"))

    async def send() -> None:
        async with db.transaction():
            await service.send(next(sent))

    async def both() -> None:
        async with db.transaction() as tx:
            await tx.session.execute(insert(CHANGES).values(title="a task"))
            await service.send(next(sent))

    shapes: dict[str, Callable[[], Awaitable[None]]] = {
        "insert": change, "send": send, "both": both,
    }  # fmt: skip
    for _ in range(3):  # warm the pool, the statement caches and the tables
        for call in shapes.values():
            await call()
    per_round = max(1, (count - 3) // rounds)
    for _ in range(rounds):
        for name, call in shapes.items():
            for _ in range(per_round):
                started = time.perf_counter_ns()
                await call()
                samples[name].append(time.perf_counter_ns() - started)
    send_total = sum(samples["send"]) / 1e9

    def median_us(name: str) -> float:
        return statistics.median(samples[name]) / 1000

    return AcceptResult(
        median_us("insert"),
        median_us("send"),
        median_us("both"),
        len(samples["send"]) / send_total,
        per_round * rounds,
    )


@dataclass(frozen=True, slots=True)
class DeliverResult:
    delivered: int
    seconds: float
    passes: int
    left: int
    """Rows not ``sent`` afterwards: 0 when every message went out."""
    duplicates: int
    """Messages the provider received more than once: 0."""

    @property
    def per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


async def queue(db: Database, count: int, *, start: int) -> None:
    """Queue ``count`` more messages through ``send``, 100 to a transaction (not timed)."""
    service = EmailService(db)
    for first in range(start, start + count, 100):
        async with db.transaction():
            for i in range(first, min(first + 100, start + count)):
                await service.send(_message(i))


async def deliver(db: Database, *, batch: int = 100) -> DeliverResult:
    """Deliver everything queued with one sender to the memory provider; time it.

    ``batch`` is the sender's claim per pass (its default is 100; the memory provider
    takes 100 per call, so a larger claim makes several calls per pass, in parallel).
    """
    memory = MemoryProvider()
    sender = EmailSender(db, [ProviderRoute(memory)], batch=batch)
    passes = 0
    started = time.perf_counter()
    while await sender.run_once():
        passes += 1
    seconds = time.perf_counter() - started
    outbox = EmailOutboxRecord.__table__
    async with db.transaction(read_only=True) as tx:
        left = (
            await tx.session.execute(
                select(func.count()).where(outbox.c.status != "sent")  # type: ignore[attr-defined]
            )
        ).scalar_one()
    ids = memory.messages
    return DeliverResult(len(ids), seconds, passes, int(left), len(ids) - len(set(ids)))
