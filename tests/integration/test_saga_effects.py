"""Effects that must not be lost or doubled: unstorable results, compensation keys, commit unknown.

On SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from corestone.db import Database, utc_now
from corestone.errors import CommitUnknownError, InvalidInputError, UnavailableError
from corestone.sagas import Saga, SagaStatus, SagaStep, StepContext
from tests.integration.saga_support import (
    FAST,
    ROWS,
    SAGAS,
    Trail,
    make_stuck,
    open_db,
    orchestrator,
    row_keys,
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_db(database_url) as database:
        yield database


async def expire_leases(db: Database) -> None:
    """What waiting for the lease to run out would do."""
    async with db.transaction() as tx:
        await tx.session.execute(update(SAGAS).values(locked_until=utc_now() - timedelta(1)))


async def test_a_result_that_cannot_be_stored_compensates_its_step(db: Database) -> None:
    """An external action that returned NaN took effect: it is compensated, nothing is stored."""
    trail = Trail()

    async def charge(ctx: StepContext) -> dict[str, float]:
        trail.calls.append(("do", "charge"))
        return {"amount": math.nan}

    saga = Saga(
        "t.nan",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge", charge, trail.undo("charge")),
            SagaStep("ship", trail.action("ship")),
        ],
    )
    orch = orchestrator(db, saga)
    outcome = await orch.run(saga, {})

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [
        ("do", "reserve"),
        ("do", "charge"),
        ("undo", "charge"),
        ("undo", "reserve"),
    ]
    assert outcome.error is not None
    assert outcome.error.startswith("step charge: ValueError")
    stored = await orch.get(outcome.id)
    assert stored is not None
    assert sorted(stored.results) == ["reserve"]


async def test_a_transactional_step_with_an_unstorable_result_rolls_back(db: Database) -> None:
    """A database step returning infinity rolls its work back; there is nothing to compensate."""
    trail = Trail()

    async def put(ctx: StepContext) -> float:
        await ctx.session.execute(insert(ROWS).values(key=ctx.idempotency_key))
        return math.inf

    saga = Saga("t.inf", [SagaStep("put", put, trail.undo("put"), transactional=True)])
    outcome = await orchestrator(db, saga).run(saga, {})

    assert outcome.status is SagaStatus.COMPENSATED
    assert await row_keys(db) == []
    assert trail.calls == []


async def test_a_payload_with_nan_is_refused_before_anything_is_written(db: Database) -> None:
    """NaN cannot be stored on PostgreSQL, so it is refused on every database."""
    saga = Saga("t.nan_payload", [SagaStep("a", Trail().action("a"))])
    with pytest.raises(InvalidInputError):
        await orchestrator(db, saga).run(saga, {"amount": math.nan})
    async with db.transaction(read_only=True) as tx:
        assert (await tx.session.execute(select(SAGAS))).all() == []


async def test_compensations_have_their_own_stable_idempotency_key(db: Database) -> None:
    """A compensation's key differs from its action's, and is the same on retry and recovery."""
    trail = Trail()
    seen: list[tuple[str, str, str]] = []

    async def refund(ctx: StepContext) -> None:
        seen.append((ctx.saga_id, ctx.idempotency_key, ctx.action_key))
        if len(seen) == 1:
            raise UnavailableError("refunds busy")  # retried with the same key

    saga = Saga(
        "t.keys",
        [
            SagaStep("charge", trail.action("charge"), refund, retry=FAST),
            SagaStep("ship", trail.action("ship", fail=ValueError("no stock"))),
        ],
    )
    outcome = await orchestrator(db, saga).run(saga, {})
    assert outcome.status is SagaStatus.COMPENSATED
    action_key = trail.contexts[0].idempotency_key
    assert action_key == f"{outcome.id}:charge"
    assert seen == [(outcome.id, f"{outcome.id}:charge:compensate", action_key)] * 2

    # A process died while compensating charge: recovery uses the very same key.
    stuck = await make_stuck(
        db, saga, status="compensating", current_step=1, results={"charge": {"step": "charge"}}
    )
    seen.clear()
    (recovered,) = await orchestrator(db, saga).recover()
    assert recovered.status is SagaStatus.COMPENSATED
    assert seen[-1] == (stuck.id, f"{stuck.id}:charge:compensate", f"{stuck.id}:charge")


def always(error: BaseException) -> bool:
    return True


async def test_commit_unknown_in_a_step_stops_the_run_without_guessing(db: Database) -> None:
    """Commit unknown: no re-run even if retry_on says so, no compensation; recovery finishes."""
    trail = Trail()
    attempts: list[int] = []

    async def charge(ctx: StepContext) -> dict[str, Any]:
        attempts.append(ctx.attempt)
        if len(attempts) == 1:
            raise CommitUnknownError("connection lost after COMMIT was sent")
        return {"charged": ctx.idempotency_key}

    saga = Saga(
        "t.unknown",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge", charge, trail.undo("charge"), retry=FAST, retry_on=always),
        ],
    )
    orch = orchestrator(db, saga)
    with pytest.raises(CommitUnknownError):
        await orch.run(saga, {})

    assert attempts == [1]
    assert trail.calls == [("do", "reserve")]
    async with db.transaction(read_only=True) as tx:
        row = (await tx.session.execute(select(SAGAS))).one()
    # Still running, still leased to this process: recovery waits for the lease to lapse.
    assert (row.status, row.current_step, row.owner) == ("running", 1, orch.owner)
    assert row.locked_until is not None
    assert await orchestrator(db, saga).recover() == []

    await expire_leases(db)
    (outcome,) = await orchestrator(db, saga).recover()
    assert outcome.status is SagaStatus.COMPLETED
    assert attempts == [1, 1]
    assert outcome.results["charge"] == {"charged": f"{row.id}:charge"}


async def test_commit_unknown_in_a_compensation_leaves_it_to_recovery(db: Database) -> None:
    """A compensation whose commit outcome is unknown stops; the saga is not marked failed."""
    refunds: list[str] = []

    async def refund(ctx: StepContext) -> None:
        refunds.append(ctx.idempotency_key)
        if len(refunds) == 1:
            raise CommitUnknownError("connection lost after COMMIT was sent")

    trail = Trail()
    saga = Saga(
        "t.unknown_undo",
        [
            SagaStep("charge", trail.action("charge"), refund, retry=FAST, retry_on=always),
            SagaStep("ship", trail.action("ship", fail=ValueError("no stock"))),
        ],
    )
    with pytest.raises(CommitUnknownError):
        await orchestrator(db, saga).run(saga, {})
    async with db.transaction(read_only=True) as tx:
        row = (await tx.session.execute(select(SAGAS))).one()
    assert (row.status, len(refunds)) == ("compensating", 1)

    await expire_leases(db)
    (outcome,) = await orchestrator(db, saga).recover()
    assert outcome.status is SagaStatus.COMPENSATED
    assert refunds == [f"{row.id}:charge:compensate"] * 2


async def test_a_step_cannot_rewrite_what_earlier_steps_recorded(db: Database) -> None:
    """A step mutating ctx.results or ctx.payload changes neither the log nor later steps."""
    seen: list[Any] = []

    async def first(ctx: StepContext) -> dict[str, Any]:
        return {"reservation": "r-1", "items": [1]}

    async def meddle(ctx: StepContext) -> None:
        ctx.results["a"]["reservation"] = "tampered"
        ctx.results["a"]["items"].append(2)
        ctx.payload["order"]["amount"] = 0

    async def last(ctx: StepContext) -> None:
        seen.append((dict(ctx.results["a"]), ctx.payload["order"]["amount"]))

    saga = Saga("t.meddle", [SagaStep("a", first), SagaStep("b", meddle), SagaStep("c", last)])
    orch = orchestrator(db, saga)
    outcome = await orch.run(saga, {"order": {"amount": 5}})

    assert outcome.status is SagaStatus.COMPLETED
    assert seen == [({"reservation": "r-1", "items": [1]}, 5)]
    stored = await orch.get(outcome.id)
    assert stored is not None
    assert stored.results["a"] == {"reservation": "r-1", "items": [1]}


async def test_a_compensation_tells_a_none_result_from_no_record(db: Database) -> None:
    """ctx.recorded is True for a step that recorded None, False for one that never recorded."""
    seen: list[tuple[str, bool, Any]] = []

    async def returns_none(ctx: StepContext) -> None:
        return None

    async def undo(ctx: StepContext) -> None:
        seen.append((ctx.step_key, ctx.recorded, ctx.result))

    async def fails(ctx: StepContext) -> None:
        raise ValueError("declined")

    saga = Saga(
        "t.recorded",
        [
            SagaStep("reserve", returns_none, undo),
            SagaStep("charge", fails, undo, compensate_on_failure=True),
        ],
    )

    outcome = await orchestrator(db, saga).run(saga, {})

    assert outcome.status is SagaStatus.COMPENSATED
    assert seen == [("charge", False, None), ("reserve", True, None)]
