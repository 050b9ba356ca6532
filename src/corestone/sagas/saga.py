"""Durable sagas, the definitions: steps with compensations, stable keys, retry policies.

A saga is a sequence of steps that together must either all happen or be undone, where
one transaction cannot hold them all (they span transactions, services, or time). Each
:class:`SagaStep` has a stable ``key``, an ``action`` and an optional ``compensate``; the
:class:`~corestone.sagas.orchestrator.SagaOrchestrator` runs the actions in order,
records each completion by key in ``corestone_sagas``, and when an action fails for good
runs the compensations of the completed steps in reverse.

Rules for step code, because any step may run more than once (a crash between the work
and its record, a lease taken over by recovery):

- an action is idempotent: ``ctx.idempotency_key`` (``"{saga_id}:{step_key}"``) is the
  same on every run of the step — pass it to the remote API or store it with the row;
- a compensation is idempotent too, with a key of its own
  (``"{saga_id}:{step_key}:compensate"``), and must succeed when there is nothing left
  to undo: it also runs for a step that was interrupted, whose result is unknown
  (``ctx.recorded`` is False, ``ctx.result`` None; ``ctx.action_key`` finds what the
  action did);
- a ``transactional`` step does its database work on ``ctx.session``: the orchestrator
  records the step's completion in that same transaction, so the work and the record
  commit together and the step takes effect exactly once;
- an action either takes effect and returns, or raises without effect. A step whose
  action can fail after taking effect (a remote call that timed out) sets
  ``compensate_on_failure=True`` so its own compensation runs too;
- results are JSON (they are stored; NaN and infinities are refused) and keys never
  change once sagas with them exist: recovery after a deploy resumes by key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from corestone.db.transactions import Transaction, transient_cause
from corestone.errors import CommitUnknownError, SagaFailedError, UnavailableError
from corestone.resilience.retry import Retry
from corestone.sagas.store import SagaStatus

if TYPE_CHECKING:
    from corestone.db.database import Database

__all__ = [
    "STEP_RETRY",
    "Action",
    "Compensation",
    "Saga",
    "SagaOutcome",
    "SagaRegistry",
    "SagaStep",
    "StepContext",
    "is_transient",
]

_COMPENSATE_SUFFIX = ":compensate"
"""Ends a compensation's idempotency key; no step key may end with it."""

Action = Callable[["StepContext"], Awaitable[Any]]
Compensation = Callable[["StepContext"], Awaitable[None]]

STEP_RETRY = Retry(
    attempts=3, initial_wait_seconds=0.05, max_wait_seconds=1.0, deadline_seconds=10.0
)
"""The default step retry: 3 attempts, full-jitter backoff, 10 s in all (first attempt included)."""


def is_transient(error: BaseException) -> bool:
    """The default retry predicate: database hiccups, unavailable services, timeouts.

    Never a commit whose outcome is unknown: trying again could apply it twice.
    """
    if isinstance(error, CommitUnknownError):
        return False
    return transient_cause(error) is not None or isinstance(
        error, UnavailableError | TimeoutError | ConnectionError
    )


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step's action or compensation gets: who it is, its input, and its keys."""

    saga_id: str
    saga_type: str
    step_key: str
    payload: Mapping[str, Any]
    results: Mapping[str, Any]
    """Results of the steps completed before this one, by step key."""
    attempt: int
    database: Database
    tx: Transaction | None = None
    result: Any = None
    """In a compensation: this step's own result (None if its action failed or was cut off)."""
    recorded: bool = False
    """In a compensation: whether the action recorded a result (``result`` may be None)."""
    compensating: bool = False
    """True in a compensation."""

    @property
    def action_key(self) -> str:
        """``"{saga_id}:{step_key}"``: the key the step's action gets, on every run.

        A compensation whose step never recorded (``recorded`` False) uses it to find
        what the action did.
        """
        return f"{self.saga_id}:{self.step_key}"

    @property
    def idempotency_key(self) -> str:
        """The key of this call, the same on every run of it: pass it to the remote API.

        The action's is :attr:`action_key`; a compensation's is
        ``"{saga_id}:{step_key}:compensate"``, a request of its own (one key names one
        request at Stripe-style APIs, so a refund must not reuse the charge's).
        """
        return f"{self.action_key}{_COMPENSATE_SUFFIX}" if self.compensating else self.action_key

    @property
    def session(self) -> AsyncSession:
        """The session of a transactional step's transaction (the saga record shares it)."""
        if self.tx is None:
            raise RuntimeError(f"step {self.step_key!r} is not transactional: it has no session")
        return self.tx.session


@dataclass(frozen=True, slots=True)
class SagaStep:
    """One step: an action, its compensation, and how to retry them.

    ``retry`` applies to the action and to the compensation alike; ``retry_on`` says
    which errors are worth another attempt (anything else fails the step at once). A
    :class:`~corestone.errors.CommitUnknownError` is never retried, whatever
    ``retry_on`` says: it stops the run. ``timeout_seconds`` bounds one attempt; a
    timeout counts as transient.
    """

    key: str
    action: Action
    compensate: Compensation | None = None
    transactional: bool = False
    compensate_on_failure: bool = False
    retry: Retry = STEP_RETRY
    retry_on: Callable[[BaseException], bool] = is_transient
    timeout_seconds: float | None = 30.0

    def __post_init__(self) -> None:
        if not self.key or len(self.key) > 64:
            raise ValueError("a step key is 1 to 64 characters")
        if self.key.endswith(_COMPENSATE_SUFFIX):
            # Its action's key would be the compensation key of the step named by the rest.
            raise ValueError(f"a step key may not end with {_COMPENSATE_SUFFIX!r}")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")


@dataclass(frozen=True, slots=True)
class Saga:
    """A saga type: a stable name and its steps, in order."""

    name: str
    steps: Sequence[SagaStep]
    _by_key: dict[str, SagaStep] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 100:
            raise ValueError("a saga name is 1 to 100 characters")
        if not self.steps:
            raise ValueError(f"saga {self.name!r} has no steps")
        keys = [step.key for step in self.steps]
        if len(set(keys)) != len(keys):
            raise ValueError(f"saga {self.name!r} has duplicate step keys")
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "_by_key", {step.key: step for step in self.steps})

    def step(self, key: str) -> SagaStep | None:
        """The step with this key, or None if this definition has no such step."""
        return self._by_key.get(key)


class SagaRegistry:
    """The saga types a process knows, by name: what recovery can resume."""

    def __init__(self, sagas: Iterable[Saga] = ()) -> None:
        self._sagas: dict[str, Saga] = {}
        for saga in sagas:
            self.register(saga)

    def register(self, saga: Saga) -> Saga:
        """Add ``saga``; a second, different saga under the same name is an error."""
        known = self._sagas.get(saga.name)
        if known is not None and known is not saga:
            raise ValueError(f"a different saga named {saga.name!r} is already registered")
        self._sagas[saga.name] = saga
        return saga

    def get(self, name: str) -> Saga | None:
        return self._sagas.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._sagas)

    def __contains__(self, name: object) -> bool:
        return name in self._sagas

    def __len__(self) -> int:
        return len(self._sagas)


@dataclass(frozen=True, slots=True)
class SagaOutcome:
    """How one run of a saga ended (a run stopped by a lost lease raises instead)."""

    id: str
    type: str
    status: SagaStatus
    results: Mapping[str, Any]
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def raise_for_status(self) -> SagaOutcome:
        """Return self if the saga completed; otherwise raise why it did not.

        Compensated: the step's own exception (the caller's real reason, e.g. a conflict),
        with a note naming the saga. Failed: :class:`SagaFailedError`.
        """
        if self.status is SagaStatus.COMPLETED:
            return self
        if self.status is SagaStatus.COMPENSATED and self.exception is not None:
            self.exception.add_note(f"saga {self.id} ({self.type}) was compensated")
            raise self.exception
        raise SagaFailedError(self.id, self.error or self.status.value) from self.exception
