"""A saga for crash tests: reserve (database), charge (external, a ledger file), ship (database).

Run as ``python tests/integration/saga_crash_app.py DATABASE_URL`` to start one saga in a
process the test then kills: with ``SAGA_CRASH_AT=<step key>`` that step writes
``$SAGA_CRASH_DIR/ready`` (reserve and charge after their work — reserve before its commit —
ship before any) and sleeps until killed. ``SAGA_CRASH_FAIL=ship`` makes the last step
fail, so recovery has to compensate; ``SAGA_CRASH_FAIL_REFUND=1`` makes the refund fail
too. Imported, it is the registry recovery uses (``registry``), in the tests and in
``corestone saga recover --app tests.integration.saga_crash_app:registry``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table, delete, insert

from corestone.db import Database
from corestone.sagas import Saga, SagaOrchestrator, SagaRecord, SagaRegistry, SagaStep, StepContext

__all__ = ["ITEMS", "LEASE_SECONDS", "SAGA", "calls", "create_schema", "ledger", "registry"]

LEASE_SECONDS = 1.0

ITEMS = Table(
    "saga_crash_items",
    MetaData(),
    Column("key", String(100), primary_key=True),
    Column("step", String(20), nullable=False),
)


def _dir() -> Path:
    return Path(os.environ["SAGA_CRASH_DIR"])


def ledger() -> list[str]:
    """The external system's record: one line per charge or refund it carried out."""
    path = _dir() / "ledger"
    return path.read_text().splitlines() if path.exists() else []


def calls() -> list[str]:
    """Every action and compensation invocation, in order, across all processes."""
    path = _dir() / "calls"
    return path.read_text().splitlines() if path.exists() else []


def _called(name: str) -> None:
    with (_dir() / "calls").open("a") as file:
        file.write(name + "\n")


def _post_once(line: str) -> None:
    """An idempotent external call: the idempotency key makes a repeat a no-op."""
    if line not in ledger():
        with (_dir() / "ledger").open("a") as file:
            file.write(line + "\n")


async def _maybe_crash(step: str) -> None:
    if os.environ.get("SAGA_CRASH_AT") == step:
        (_dir() / "ready").write_text(step)
        await asyncio.sleep(120)  # the test kills us here


async def reserve(ctx: StepContext) -> dict[str, str]:
    _called("reserve")
    await ctx.session.execute(insert(ITEMS).values(key=ctx.idempotency_key, step="reserve"))
    await _maybe_crash("reserve")
    return {"reservation": ctx.idempotency_key}


async def unreserve(ctx: StepContext) -> None:
    _called("unreserve")
    await ctx.session.execute(delete(ITEMS).where(ITEMS.c.key == ctx.action_key))


async def charge(ctx: StepContext) -> dict[str, str]:
    _called("charge")
    _post_once(f"charge {ctx.idempotency_key} {ctx.payload['amount']}")
    await _maybe_crash("charge")
    return {"charge": ctx.idempotency_key}


async def refund(ctx: StepContext) -> None:
    _called("refund")
    if os.environ.get("SAGA_CRASH_FAIL_REFUND"):
        raise RuntimeError("refunds are down")
    _post_once(f"refund {ctx.idempotency_key}")


async def ship(ctx: StepContext) -> dict[str, str]:
    _called("ship")
    await _maybe_crash("ship")  # before any of its work: "between steps"
    if os.environ.get("SAGA_CRASH_FAIL") == "ship":
        raise ValueError("out of stock")
    await ctx.session.execute(insert(ITEMS).values(key=ctx.idempotency_key, step="ship"))
    return {"shipment": ctx.idempotency_key}


SAGA = Saga(
    "tests.order",
    [
        SagaStep("reserve", reserve, compensate=unreserve, transactional=True),
        SagaStep("charge", charge, compensate=refund),
        SagaStep("ship", ship, transactional=True),
    ],
)
registry = SagaRegistry([SAGA])


async def create_schema(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(SagaRecord.__table__.create, checkfirst=True)
        await conn.run_sync(ITEMS.create, checkfirst=True)


async def _main(url: str) -> None:
    db = Database(url)
    await db.start()
    try:
        orchestrator = SagaOrchestrator(db, registry, lease_seconds=LEASE_SECONDS)
        await orchestrator.run(SAGA, {"amount": 42})
    finally:
        await db.aclose()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
