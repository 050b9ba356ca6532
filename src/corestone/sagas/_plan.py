"""What a saga does next, decided by step key from its log, never by position.

Pure functions, private to the orchestrator. The log (``results``) names the steps whose
action completed; the definition names the steps and their order. A deploy may add,
reorder or drop steps between a saga's crash and its recovery, so everything here goes
by key: a step with a record never runs again, a step without one runs in definition
order, and a recorded key the definition no longer has is refused, not guessed around.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from corestone.sagas.saga import Saga, SagaStep

__all__ = ["compensation_plan", "cut_off", "missing_steps", "refusal", "unrecorded"]


def unrecorded(saga: Saga, results: Mapping[str, Any]) -> list[SagaStep]:
    """The steps with no record, in definition order: what running forward still runs."""
    return [step for step in saga.steps if step.key not in results]


def cut_off(saga: Saga, results: Mapping[str, Any]) -> str | None:
    """The step a dead process may have been running: the first without a record.

    None if every step has a record, or if that step is transactional: its work rolled
    back with its record, so nothing of it can need undoing. An external step's action
    may have taken effect, so it is compensated too (compensations are harmless when
    there is nothing to undo).
    """
    pending = unrecorded(saga, results)
    return pending[0].key if pending and not pending[0].transactional else None


def missing_steps(saga: Saga, keys: Iterable[str]) -> list[str]:
    """The keys among ``keys`` that ``saga`` no longer defines, sorted."""
    return sorted(key for key in set(keys) if saga.step(key) is None)


def compensation_plan(saga: Saga, results: Mapping[str, Any], *, first: str | None) -> list[str]:
    """The keys whose compensation must run, next first.

    ``first`` is a step that may have taken effect without a record (it failed after its
    effect, its result could not be stored, or it was cut off); then every recorded
    step, the last defined first. Steps without a compensation are left out.
    """
    keys = [step.key for step in reversed(saga.steps) if step.key in results]
    if first is not None and first not in results:
        keys.insert(0, first)
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
