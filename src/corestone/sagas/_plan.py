"""What a saga does next, decided by step key from its log, never by position.

Pure functions, private to the orchestrator. The log (``results``) names the steps whose
action completed; the definition names the steps and their order. A deploy may add,
reorder or drop steps between a saga's crash and its recovery, so everything here goes
by key: a step with a record never runs again, a step without one runs in definition
order, and a recorded key the definition no longer has is refused, not guessed around.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from corestone.sagas.saga import Saga, SagaStep

__all__ = ["compensation_plan", "missing_steps", "refusal", "suspects", "unrecorded"]


def unrecorded(saga: Saga, results: Mapping[str, Any]) -> list[SagaStep]:
    """The steps with no record, in definition order: what running forward still runs."""
    return [step for step in saga.steps if step.key not in results]


def suspects(saga: Saga, results: Mapping[str, Any]) -> list[str]:
    """For a row logged before the log named its steps in flight: what may have been cut off.

    Every external step without a record, in order. Under the definition that ran, only
    the first of them can have been in flight; but a deploy may have added or moved
    steps since, and such a row does not say which step was running, so none is ruled
    out (compensations must succeed when there is nothing to undo). A transactional step
    never is one: its work rolled back with its record. Rows with ``in_flight`` use that.
    """
    return [step.key for step in unrecorded(saga, results) if not step.transactional]


def missing_steps(saga: Saga, keys: Iterable[str]) -> list[str]:
    """The keys among ``keys`` that ``saga`` no longer defines, sorted."""
    return sorted(key for key in set(keys) if saga.step(key) is None)


def compensation_plan(
    saga: Saga, results: Mapping[str, Any], *, first: Collection[str] = ()
) -> list[str]:
    """The keys whose compensation must run, next first.

    ``first`` names steps that may have taken effect without a record (one failed after
    its effect, its result could not be stored, or it was cut off): those without a
    record come first, the last defined first; then every recorded step, the last
    defined first. Steps without a compensation are left out.
    """
    ordered = list(reversed(saga.steps))
    keys = [step.key for step in ordered if step.key in first and step.key not in results]
    keys += [step.key for step in ordered if step.key in results]
    return [key for key in keys if _compensable(saga, key)]


def _compensable(saga: Saga, key: str) -> bool:
    step = saga.step(key)
    return step is not None and step.compensate is not None


def refusal(saga: Saga, keys: list[str]) -> str:
    """Why a saga whose log names ``keys`` cannot run on this definition, for its ``error``."""
    named = ", ".join(repr(key) for key in keys)
    return (
        f"saga type {saga.name!r} no longer defines step {named}, which this saga recorded: "
        "deploy a definition that has it, then retry (corestone saga retry)"
    )
