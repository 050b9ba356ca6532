"""The corestone error hierarchy: one root, stable codes, no driver errors leaking out.

Every error a corestone component raises on purpose is a :class:`CorestoneError` with a
stable string ``code`` that HTTP layers map to problem+json and that callers may match on
without parsing messages. Adapters translate driver errors at their boundary and chain
them (``raise UnavailableError(...) from exc``) so the cause is kept for logs.

::

    CorestoneError                      code
    ├── InvalidInputError               invalid_input          (field, rule)
    │   ├── PayloadTooLargeError        payload_too_large      (limit_bytes)
    │   └── UnknownEventTypeError       unknown_event_type     (event_type)
    ├── AuthenticationError             unauthenticated
    ├── PermissionDeniedError           forbidden
    ├── NotFoundError                   not_found
    ├── ConflictError                   conflict
    │   └── StaleVersionError           stale_version          (current_version)
    ├── PreconditionRequiredError       precondition_required  (header)
    ├── UnavailableError                unavailable            (retry_after)
    │   ├── CircuitOpenError            circuit_open           (name, retry_after)
    │   ├── BulkheadFullError           bulkhead_full          (name)
    │   └── LoadTimeoutError            load_timeout           (key, timeout)
    ├── CommitUnknownError              commit_unknown         (never retried: may have committed)
    ├── EmailProviderError              email_provider         (provider, retryable, retry_after)
    ├── SagaFailedError                 saga_failed            (saga_id)
    ├── SagaLeaseLostError              saga_lease_lost        (saga_id)
    ├── ConfigurationError              configuration
    │   └── MissingExtraError           missing_extra          (extras, missing)
    ├── WorkspaceRequiredError          workspace_required     (a programming error: HTTP 500)
    ├── StartupError                    startup                (component)
    └── ShutdownError                   shutdown               (failures)

A test keeps this tree complete: every error class appears in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "BulkheadFullError",
    "CircuitOpenError",
    "CommitUnknownError",
    "ConfigurationError",
    "ConflictError",
    "CorestoneError",
    "EmailProviderError",
    "InvalidInputError",
    "LoadTimeoutError",
    "MissingExtraError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PreconditionRequiredError",
    "SagaFailedError",
    "SagaLeaseLostError",
    "ShutdownError",
    "StaleVersionError",
    "StartupError",
    "UnavailableError",
    "UnknownEventTypeError",
    "WorkspaceRequiredError",
]


class CorestoneError(Exception):
    """The root of every error corestone raises on purpose.

    ``code`` is stable across releases; ``message`` is for people. ``details`` carries
    machine-readable extras (a field name, a version) that HTTP layers copy into the
    problem document.
    """

    code: ClassVar[str] = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def details(self) -> Mapping[str, object]:
        """Machine-readable extras, safe to show to the caller."""
        return {}


class InvalidInputError(CorestoneError):
    """The caller sent something that breaks a rule; ``field`` names where, ``rule`` which."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule

    @property
    def details(self) -> Mapping[str, object]:
        return {"field": self.field, "rule": self.rule}


class PayloadTooLargeError(InvalidInputError):
    """A request body (or an event: ``what``) is larger than the configured limit."""

    code = "payload_too_large"

    def __init__(
        self, limit_bytes: int, *, what: str = "request body", field: str = "body"
    ) -> None:
        super().__init__(f"{what} exceeds {limit_bytes} bytes", field=field, rule="max_bytes")
        self.limit_bytes = limit_bytes

    @property
    def details(self) -> Mapping[str, object]:
        return {**super().details, "limit_bytes": self.limit_bytes}


class UnknownEventTypeError(InvalidInputError):
    """An event names a type no registry knows (or a schema version newer than it knows).

    Recording one is a programming error; receiving one (a newer producer, a forged
    message) sends it to the consumer's dead letters with this as the reason.
    """

    code = "unknown_event_type"

    def __init__(self, event_type: str, message: str | None = None) -> None:
        super().__init__(
            message or f"unknown event type {event_type[:100]!r}", field="type", rule="registered"
        )
        self.event_type = event_type

    @property
    def details(self) -> Mapping[str, object]:
        return {**super().details, "event_type": self.event_type}


class AuthenticationError(CorestoneError):
    """No credentials, or credentials that do not identify anyone."""

    code = "unauthenticated"


class PermissionDeniedError(CorestoneError):
    """The caller is known but may not do this (only raised where existence is no secret)."""

    code = "forbidden"


class NotFoundError(CorestoneError):
    """The thing does not exist, or the caller may not know that it does."""

    code = "not_found"


class ConflictError(CorestoneError):
    """The request contradicts the current state (a duplicate, a broken constraint)."""

    code = "conflict"


class StaleVersionError(ConflictError):
    """An optimistic-locking check failed: someone else changed the row first."""

    code = "stale_version"

    def __init__(self, message: str, *, current_version: int | None = None) -> None:
        super().__init__(message)
        self.current_version = current_version

    @property
    def details(self) -> Mapping[str, object]:
        return {"current_version": self.current_version}


class PreconditionRequiredError(CorestoneError):
    """A conditional write arrived without its precondition (e.g. no ``If-Match``).

    Refusing it, rather than writing unconditionally, is what keeps a client that forgot
    the header from silently overwriting someone else's change (RFC 6585, status 428).
    """

    code = "precondition_required"

    def __init__(self, message: str, *, header: str) -> None:
        super().__init__(message)
        self.header = header

    @property
    def details(self) -> Mapping[str, object]:
        return {"header": self.header}


class EmailProviderError(CorestoneError):
    """An email provider refused or failed a message; ``retryable`` says whether to try again.

    Providers map their own errors onto this one: a timeout, a 429 or a 5xx is retryable
    (``retry_after`` when the provider said how long to wait); a rejected address, a bad
    request or a refused credential is permanent, and the message ends as failed with the
    reason. The delivery service decides what happens next, never the provider.
    """

    code = "email_provider"

    def __init__(
        self, provider: str, reason: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider = provider
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after

    @property
    def details(self) -> Mapping[str, object]:
        return {"provider": self.provider, "retryable": self.retryable}


class SagaFailedError(CorestoneError):
    """A saga failed and could not be compensated: it needs an operator.

    The ``corestone_sagas`` row (status ``failed``) keeps the step and the error.
    """

    code = "saga_failed"

    def __init__(self, saga_id: str, message: str) -> None:
        super().__init__(f"saga {saga_id} failed: {message}")
        self.saga_id = saga_id

    @property
    def details(self) -> Mapping[str, object]:
        return {"saga_id": self.saga_id}


class SagaLeaseLostError(CorestoneError):
    """Another process took this saga over (its lease expired); this run stopped.

    Nothing is lost: the new owner carries on from the last recorded step.
    """

    code = "saga_lease_lost"

    def __init__(self, saga_id: str) -> None:
        super().__init__(f"saga {saga_id} was taken over by another process")
        self.saga_id = saga_id

    @property
    def details(self) -> Mapping[str, object]:
        return {"saga_id": self.saga_id}


class UnavailableError(CorestoneError):
    """A dependency cannot serve right now; trying again later may work."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def details(self) -> Mapping[str, object]:
        return {"retry_after": self.retry_after}


class CircuitOpenError(UnavailableError):
    """A circuit breaker rejected the call without trying it."""

    code = "circuit_open"

    def __init__(self, name: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"circuit {name!r} is open", retry_after=retry_after)
        self.name = name

    @property
    def details(self) -> Mapping[str, object]:
        return {**super().details, "circuit": self.name}


class BulkheadFullError(UnavailableError):
    """A bulkhead had no free slot and no room in its wait queue; the call was not made."""

    code = "bulkhead_full"

    def __init__(self, name: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"bulkhead {name!r} is full", retry_after=retry_after)
        self.name = name

    @property
    def details(self) -> Mapping[str, object]:
        return {**super().details, "bulkhead": self.name}


class LoadTimeoutError(UnavailableError):
    """A cache loader ran past its hard timeout and no stale value could stand in."""

    code = "load_timeout"

    def __init__(self, key: str, timeout: float) -> None:
        super().__init__(f"a cache load took longer than {timeout:g} s", retry_after=timeout)
        self.key = key
        self.timeout = timeout


class CommitUnknownError(CorestoneError):
    """The connection was lost after COMMIT was sent: the transaction may have committed.

    Not an :class:`UnavailableError` on purpose: retrying the work could apply it twice.
    Neither commit nor rollback hooks have run; the caller must find out what happened
    (read back, or rely on an idempotency key) before doing anything again.
    """

    code = "commit_unknown"


class ConfigurationError(CorestoneError):
    """Settings are invalid; the message names each variable and what was expected."""

    code = "configuration"


class MissingExtraError(ConfigurationError, ModuleNotFoundError):
    """A part of corestone was imported without the extra that brings its dependencies.

    Raised instead of the bare ``ModuleNotFoundError`` from deep inside a third-party
    import, so the message says what to install. Still a ``ModuleNotFoundError``: code
    that probes for an optional part with ``except ImportError`` keeps working.
    """

    code = "missing_extra"

    def __init__(self, module: str, extras: tuple[str, ...], missing: str) -> None:
        commands = " or ".join(f"pip install 'corestone[{extra}]'" for extra in extras)
        if len(extras) == 1:
            wanted = f"the '{extras[0]}' extra, which is not installed"
        else:
            wanted = "one of the extras " + " or ".join(f"'{e}'" for e in extras)
            wanted += ", and none is installed"
        super().__init__(f"{module} needs {wanted} (no module named {missing!r}): {commands}")
        self.name = missing
        self.module = module
        self.extras = extras
        self.missing = missing

    @property
    def details(self) -> Mapping[str, object]:
        return {"extras": list(self.extras), "missing": self.missing}


class WorkspaceRequiredError(CorestoneError):
    """Tenant data was touched with no workspace in context and no explicit opt-out.

    A bug in the caller, not bad input: bind the workspace
    (``corestone.context.bind(workspace=...)``) or pass ``ALL_WORKSPACES`` on purpose.
    Refusing is what keeps a forgotten binding from reading every tenant's rows.
    """

    code = "workspace_required"


class StartupError(CorestoneError):
    """A component failed to start; everything started before it has been stopped again."""

    code = "startup"

    def __init__(self, component: str, cause: BaseException) -> None:
        super().__init__(f"component {component!r} failed to start: {_printable(cause, str)}")
        self.component = component


class ShutdownError(CorestoneError):
    """One or more components failed to stop cleanly; every other one was still stopped."""

    code = "shutdown"

    def __init__(self, failures: Mapping[str, BaseException]) -> None:
        listed = ", ".join(f"{name}: {_printable(exc, repr)}" for name, exc in failures.items())
        super().__init__(f"components failed to stop: {listed}")
        self.failures = dict(failures)


def _printable(error: BaseException, show: Callable[[object], str]) -> str:
    # A cause whose __str__/__repr__ raises must still give a startup or shutdown error.
    try:
        return show(error)
    except Exception:  # noqa: BLE001 - the message is best effort, the error is not
        return f"<{type(error).__name__}, unprintable>"
