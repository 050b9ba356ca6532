"""The log names the external step in flight, so recovery knows exactly what was cut off.

On SQLite and PostgreSQL. A process "dies" inside a step here by raising a
``BaseException`` nothing in the orchestrator catches: the saga row is left as a killed
process leaves it (leased, nothing released), and the test then expires the lease.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from corestone.db import Database, utc_now
from corestone.sagas import Saga, SagaStatus, SagaStep, StepContext
from tests.integration.saga_support import SAGAS, Trail, open_db, orchestrator


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_db(database_url) as database:
        yield database


class Died(BaseException):
    """The process died here: nothing after this line of the step ran."""


def dies(trail: Trail, key: str) -> Any:
    """An action that takes effect (it is in the trail) and then its process dies."""

    async def run(ctx: StepContext) -> None:
        trail.calls.append(("do", key))
        raise Died

    return run


async def die_in(db: Database, saga: Saga) -> str:
    """Run ``saga`` until its process dies in a step; expire the lease; the saga's id."""
    with pytest.raises(Died):
        await orchestrator(db, saga).run(saga, {})
    async with db.transaction() as tx:
        await tx.session.execute(
            update(SAGAS).values(locked_until=utc_now() - timedelta(seconds=5))
        )
        saga_id: str = await tx.session.scalar(select(SAGAS.c.id))
    return saga_id


def v1(trail: Trail, charge: Any) -> Saga:
    """reserve, charge, ship and notify: every step external, with a compensation."""
    return Saga(
        "t.order",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge", charge, trail.undo("charge")),
            SagaStep("ship", trail.action("ship"), trail.undo("ship")),
            SagaStep("notify", trail.action("notify"), trail.undo("notify")),
        ],
    )


async def test_the_step_in_flight_is_logged_before_its_action_and_cleared_by_its_record(
    db: Database,
) -> None:
    """While an external action runs the log names its step; its record clears it."""
    seen: list[Any] = []

    async def charge(ctx: StepContext) -> dict[str, int]:
        async with ctx.database.transaction(read_only=True) as tx:
            seen.append(await tx.session.scalar(select(SAGAS.c.in_flight)))
        return {"paid": 1}

    trail = Trail()
    saga = v1(trail, charge)
    outcome = await orchestrator(db, saga).run(saga, {})

    assert outcome.status is SagaStatus.COMPLETED
    assert seen == [["charge"]]
    stored = await orchestrator(db, saga).get(outcome.id)
    assert stored is not None
    assert stored.in_flight == ()


async def test_recovery_refuses_a_definition_that_renamed_the_step_in_flight(
    db: Database,
) -> None:
    """v2 renamed the cut-off charge: recovery fails the saga naming it and never charges again."""
    trail = Trail()
    await die_in(db, v1(trail, dies(trail, "charge")))
    v2 = Saga(
        "t.order",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge_card", trail.action("charge_card"), trail.undo("charge_card")),
            SagaStep("ship", trail.action("ship"), trail.undo("ship")),
        ],
    )

    (outcome,) = await orchestrator(db, v2).recover()

    assert outcome.status is SagaStatus.FAILED
    assert outcome.error is not None
    assert "'charge'" in outcome.error
    assert trail.calls == [("do", "reserve"), ("do", "charge")]


async def test_recovery_refuses_a_definition_that_removed_the_step_in_flight(
    db: Database,
) -> None:
    """v2 dropped the cut-off charge: refused; fixed, the retry refunds exactly it and reserve."""
    trail = Trail()
    saga_id = await die_in(db, v1(trail, dies(trail, "charge")))
    v2 = Saga(
        "t.order",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("ship", trail.action("ship"), trail.undo("ship")),
            SagaStep("notify", trail.action("notify"), trail.undo("notify")),
        ],
    )

    (outcome,) = await orchestrator(db, v2).recover()

    assert outcome.status is SagaStatus.FAILED
    assert outcome.error is not None
    assert "'charge'" in outcome.error
    assert trail.calls == [("do", "reserve"), ("do", "charge")]

    fixed = v1(trail, trail.action("charge"))
    retried = await orchestrator(db, fixed).retry_compensation(saga_id)
    assert retried.status is SagaStatus.COMPENSATED
    assert trail.calls[2:] == [("undo", "charge"), ("undo", "reserve")]


async def test_giving_up_compensates_exactly_the_step_in_flight_and_the_recorded_ones(
    db: Database,
) -> None:
    """Past max_attempts: charge (cut off) and reserve are undone; ship and notify never ran."""
    trail = Trail()
    saga_id = await die_in(db, v1(trail, dies(trail, "charge")))
    async with db.transaction() as tx:
        await tx.session.execute(update(SAGAS).where(SAGAS.c.id == saga_id).values(attempts=3))

    (outcome,) = await orchestrator(db, v1(trail, trail.action("charge")), max_attempts=3).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls[2:] == [("undo", "charge"), ("undo", "reserve")]


async def test_a_failure_after_a_deploy_compensates_only_the_step_in_flight(db: Database) -> None:
    """v2 adds validate first and it fails: the cut-off charge is refunded, ship is not touched."""
    trail = Trail()
    await die_in(db, v1(trail, dies(trail, "charge")))
    v2 = Saga(
        "t.order",
        [
            SagaStep("validate", trail.action("validate", fail=ValueError("invalid"))),
            *v1(trail, trail.action("charge")).steps,
        ],
    )

    (outcome,) = await orchestrator(db, v2).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls[2:] == [("do", "validate"), ("undo", "charge"), ("undo", "reserve")]


async def test_a_cut_off_step_stays_in_flight_while_a_step_before_it_runs(db: Database) -> None:
    """v2 runs a new external step before the cut-off charge and dies there: both are undone."""
    trail = Trail()
    saga_id = await die_in(db, v1(trail, dies(trail, "charge")))
    v2 = Saga(
        "t.order",
        [
            SagaStep("hold", dies(trail, "hold"), trail.undo("hold")),
            *v1(trail, trail.action("charge")).steps,
        ],
    )
    await die_in_recovery(db, v2)
    async with db.transaction() as tx:
        await tx.session.execute(update(SAGAS).where(SAGAS.c.id == saga_id).values(attempts=3))

    (outcome,) = await orchestrator(db, v2, max_attempts=3).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls[2:] == [
        ("do", "hold"),
        ("undo", "charge"),
        ("undo", "hold"),
        ("undo", "reserve"),
    ]


async def die_in_recovery(db: Database, saga: Saga) -> None:
    """Recover ``saga`` until its process dies in a step, then expire the lease."""
    with pytest.raises(Died):
        await orchestrator(db, saga).recover()
    async with db.transaction() as tx:
        await tx.session.execute(
            update(SAGAS).values(locked_until=utc_now() - timedelta(seconds=5))
        )
