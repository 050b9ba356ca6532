"""What a saga does next is decided by step key from its log, never by position."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from corestone.sagas import Saga, SagaStep, StepContext
from corestone.sagas._plan import compensation_plan, missing_steps, refusal, suspects, unrecorded


async def _act(ctx: StepContext) -> None:
    return None


async def _undo(ctx: StepContext) -> None:
    return None


def _saga(*keys: str, transactional: tuple[str, ...] = (), bare: tuple[str, ...] = ()) -> Saga:
    return Saga(
        "t.plan",
        [
            SagaStep(key, _act, None if key in bare else _undo, transactional=key in transactional)
            for key in keys
        ],
    )


def test_unrecorded_steps_run_in_definition_order_whatever_their_position() -> None:
    """A step inserted before a recorded one still runs; the recorded one does not."""
    saga = _saga("validate", "reserve", "charge")
    assert [s.key for s in unrecorded(saga, {"reserve": 1})] == ["validate", "charge"]


def test_recorded_keys_the_definition_lacks_are_named() -> None:
    """Every recorded key that is no longer defined is reported, and the refusal names it."""
    saga = _saga("charge", "ship")
    assert missing_steps(saga, ["reserve", "charge", "hold"]) == ["hold", "reserve"]
    assert "'reserve'" in refusal(saga, ["reserve"])


def test_compensations_run_last_defined_first_after_the_steps_that_took_effect() -> None:
    """Unrecorded steps that may have taken effect come first, then recorded steps in reverse."""
    saga = _saga("a", "b", "c", "d", bare=("b",))
    assert compensation_plan(saga, {"a": 1, "b": 2}, first=["c"]) == ["c", "a"]
    assert compensation_plan(saga, {"a": 1, "b": 2}, first=["c", "d"]) == ["d", "c", "a"]
    assert compensation_plan(saga, {"a": 1, "c": 2}) == ["c", "a"]
    assert compensation_plan(saga, {"a": 1}, first=["a"]) == ["a"]


def test_every_unrecorded_external_step_is_a_suspect() -> None:
    """After a deploy any external step without a record may have been cut off; never a tx one."""
    saga = _saga("a", "b", "c", "d", transactional=("c",))
    assert suspects(saga, {"a": 1}) == ["b", "d"]
    assert suspects(saga, {"a": 1, "b": 2}) == ["d"]
    assert suspects(saga, {"a": 1, "b": 2, "c": 3, "d": 4}) == []


def test_compensation_keys_differ_from_the_action_key() -> None:
    """A compensation's idempotency key is its own; the action's stays reachable."""
    no_database: Any = None
    action = StepContext("s1", "t.plan", "charge", {}, {}, 1, no_database)
    compensation = replace(action, compensating=True)
    assert action.idempotency_key == action.action_key == "s1:charge"
    assert compensation.idempotency_key == "s1:charge:compensate"
    assert compensation.action_key == "s1:charge"


def test_no_action_shares_an_idempotency_key_with_a_compensation() -> None:
    """A step key that would make its action's key another step's compensation key is refused."""
    with pytest.raises(ValueError, match="compensate"):
        _saga("charge", "charge:compensate")
