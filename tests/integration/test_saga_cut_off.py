"""An external step cut off by a dead process is compensated whenever its saga compensates.

On SQLite and PostgreSQL. The stuck rows are what a process that died inside ``charge``
(after the remote charged, before the record) would leave: ``charge`` in flight. Recovery
may then fail forward before ``charge`` runs again, or ``charge``'s re-run may fail:
either way the earlier charge must be refunded, also after a deploy that changed the
definition. tests/integration/test_saga_in_flight.py kills runs for real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from corestone.db import Database
from corestone.sagas import Saga, SagaStatus, SagaStep
from tests.integration.saga_support import FAST, Trail, make_stuck, open_db, orchestrator


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_db(database_url) as database:
        yield database


RESERVED = {"reserve": {"step": "reserve", "seen": []}}
"""What v1 (reserve, charge, ship) recorded before it died inside charge."""
CHARGING = ["charge"]
"""The step v1's log names in flight: the one it died in."""


async def test_a_cut_off_step_whose_rerun_fails_is_compensated(db: Database) -> None:
    """The re-run of the step a dead process cut off fails for good: its first effect is undone."""
    trail = Trail()
    saga = Saga(
        "t.order",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep(
                "charge",
                trail.action("charge", fail=ConnectionError("payments down")),
                trail.undo("charge"),
                retry=FAST,
            ),
            SagaStep("ship", trail.action("ship"), transactional=True),
        ],
    )
    await make_stuck(db, saga, attempts=1, current_step=1, results=RESERVED, in_flight=CHARGING)

    (outcome,) = await orchestrator(db, saga).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls[-2:] == [("undo", "charge"), ("undo", "reserve")]


async def test_a_step_added_before_the_cut_off_one_failing_compensates_it(db: Database) -> None:
    """v2 adds validate first and it fails: the charge v1 cut off is still compensated."""
    trail = Trail()
    v2 = Saga(
        "t.order",
        [
            SagaStep("validate", trail.action("validate", fail=ValueError("invalid"))),
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge", trail.action("charge"), trail.undo("charge")),
            SagaStep("ship", trail.action("ship"), transactional=True),
        ],
    )
    await make_stuck(db, v2, attempts=2, current_step=1, results=RESERVED, in_flight=CHARGING)

    (outcome,) = await orchestrator(db, v2).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("do", "validate"), ("undo", "charge"), ("undo", "reserve")]


async def test_giving_up_after_a_deploy_compensates_the_step_that_was_cut_off(
    db: Database,
) -> None:
    """v2 inserts a transactional step first; giving up still refunds the charge v1 cut off."""
    trail = Trail()
    v2 = Saga(
        "t.order",
        [
            SagaStep("validate", trail.action("validate"), transactional=True),
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge", trail.action("charge"), trail.undo("charge")),
            SagaStep("ship", trail.action("ship"), transactional=True),
        ],
    )
    await make_stuck(db, v2, attempts=3, current_step=1, results=RESERVED, in_flight=CHARGING)

    (outcome,) = await orchestrator(db, v2, max_attempts=3).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("undo", "charge"), ("undo", "reserve")]


async def test_a_row_logged_before_in_flight_was_kept_compensates_every_unrecorded_step(
    db: Database,
) -> None:
    """in_flight null (revision 0007 not yet run when logged): each unrecorded external step."""
    trail = Trail()
    saga = Saga(
        "t.order",
        [
            SagaStep("reserve", trail.action("reserve"), trail.undo("reserve")),
            SagaStep("charge", trail.action("charge"), trail.undo("charge")),
            SagaStep("ship", trail.action("ship"), trail.undo("ship")),
        ],
    )
    await make_stuck(db, saga, attempts=3, current_step=1, results=RESERVED, in_flight=None)

    (outcome,) = await orchestrator(db, saga, max_attempts=3).recover()

    assert outcome.status is SagaStatus.COMPENSATED
    assert trail.calls == [("undo", "ship"), ("undo", "charge"), ("undo", "reserve")]
