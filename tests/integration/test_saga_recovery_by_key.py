"""Recovery after a deploy resumes by step key; giving up compensates the interrupted step.

On SQLite and PostgreSQL. The stuck rows are what a process that died would leave, built
directly (tests/integration/test_saga_crash.py kills real processes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from corestone import SagaFailedError
from corestone.db import Database
from corestone.sagas import Saga, SagaStatus, SagaStep
from tests.integration.saga_support import Trail, make_stuck, open_db, orchestrator


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_db(database_url) as database:
        yield database


def order(trail: Trail, *keys: str) -> Saga:
    """Version N of the order saga: the given steps, each with a compensation."""
    return Saga("t.order", [SagaStep(key, trail.action(key), trail.undo(key)) for key in keys])


RESERVED = {"reserve": {"step": "reserve", "seen": []}}
"""What v1 (reserve, charge, ship) recorded before it died inside charge."""


async def test_recovery_after_a_deploy_resumes_by_step_key(db: Database) -> None:
    """v2 inserts validate first: recovery runs validate, never reserve again, then the rest."""
    trail = Trail()
    v2 = order(trail, "validate", "reserve", "charge", "ship")
    stuck = await make_stuck(db, v2, current_step=1, results=RESERVED)

    (outcome,) = await orchestrator(db, v2).recover()

    assert outcome.id == stuck.id
    assert outcome.status is SagaStatus.COMPLETED
    assert trail.calls == [("do", "validate"), ("do", "charge"), ("do", "ship")]
    assert outcome.results["reserve"] == RESERVED["reserve"]
    assert sorted(outcome.results) == ["charge", "reserve", "ship", "validate"]


async def test_a_definition_without_a_recorded_step_is_refused_loudly(db: Database) -> None:
    """v3 dropped reserve: the saga is failed naming the key, nothing runs, nothing is guessed."""
    trail = Trail()
    v3 = order(trail, "charge", "ship")
    stuck = await make_stuck(db, v3, current_step=1, results=RESERVED, in_flight=["charge"])

    (outcome,) = await orchestrator(db, v3).recover()

    assert outcome.status is SagaStatus.FAILED
    assert outcome.error is not None
    assert "'reserve'" in outcome.error
    assert trail.calls == []
    with pytest.raises(SagaFailedError):
        outcome.raise_for_status()
    stored = await orchestrator(db, v3).get(stuck.id)
    assert stored is not None
    assert (stored.status, dict(stored.results)) == (SagaStatus.FAILED, RESERVED)

    # With a definition that knows the step again, an operator's retry compensates: the
    # step the log names in flight, then the recorded one; ship never ran.
    fixed = order(trail, "reserve", "charge", "ship")
    retried = await orchestrator(db, fixed).retry_compensation(stuck.id)
    assert retried.status is SagaStatus.COMPENSATED
    assert trail.calls == [("undo", "charge"), ("undo", "reserve")]


async def test_giving_up_compensates_the_interrupted_step_then_the_earlier_ones(
    db: Database,
) -> None:
    """Past max_attempts, the step the log names in flight is compensated too, first."""
    trail = Trail()
    saga = order(trail, "reserve", "charge", "ship")
    await make_stuck(db, saga, attempts=3, current_step=1, results=RESERVED, in_flight=["charge"])

    (outcome,) = await orchestrator(db, saga, max_attempts=3).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("undo", "charge"), ("undo", "reserve")]
    assert [(ctx.recorded, ctx.result) for ctx in trail.contexts] == [
        (False, None),
        (True, RESERVED["reserve"]),
    ]
    assert outcome.error == "gave up after 3 interrupted executions"


async def test_a_compensation_the_definition_lost_is_refused_loudly(db: Database) -> None:
    """A saga left compensating reserve, recovered by a definition without it, fails naming it."""
    trail = Trail()
    v3 = order(trail, "charge", "ship")
    await make_stuck(
        db, v3, status="compensating", current_step=1, results=RESERVED, to_compensate=["reserve"]
    )

    (outcome,) = await orchestrator(db, v3).recover()

    assert outcome.status is SagaStatus.FAILED
    assert outcome.error is not None
    assert "'reserve'" in outcome.error
    assert trail.calls == []


async def test_a_cut_off_transactional_step_is_not_compensated(db: Database) -> None:
    """Giving up: a transactional step without a record rolled back, so only earlier ones undo."""
    trail = Trail()
    saga = Saga(
        "t.order",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("ship", trail.action("ship"), trail.undo("ship"), transactional=True),
        ],
    )
    await make_stuck(db, saga, attempts=3, current_step=1, results=RESERVED)

    (outcome,) = await orchestrator(db, saga, max_attempts=3).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("undo", "reserve")]
