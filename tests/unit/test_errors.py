"""The error hierarchy: one root, stable distinct codes, machine-readable details."""

from __future__ import annotations

import pytest

import corestone.errors as errors_module
from corestone.errors import (
    AuthenticationError,
    BulkheadFullError,
    CircuitOpenError,
    CommitUnknownError,
    ConfigurationError,
    ConflictError,
    CorestoneError,
    EmailProviderError,
    InvalidInputError,
    LoadTimeoutError,
    MissingExtraError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PreconditionRequiredError,
    SagaFailedError,
    SagaLeaseLostError,
    ShutdownError,
    StaleVersionError,
    StartupError,
    UnavailableError,
    UnknownEventTypeError,
    WorkspaceRequiredError,
)

EXPECTED_CODES = {
    CorestoneError: "error",
    CommitUnknownError: "commit_unknown",
    EmailProviderError: "email_provider",
    InvalidInputError: "invalid_input",
    PayloadTooLargeError: "payload_too_large",
    PreconditionRequiredError: "precondition_required",
    SagaFailedError: "saga_failed",
    SagaLeaseLostError: "saga_lease_lost",
    AuthenticationError: "unauthenticated",
    PermissionDeniedError: "forbidden",
    NotFoundError: "not_found",
    ConflictError: "conflict",
    StaleVersionError: "stale_version",
    UnavailableError: "unavailable",
    CircuitOpenError: "circuit_open",
    BulkheadFullError: "bulkhead_full",
    LoadTimeoutError: "load_timeout",
    ConfigurationError: "configuration",
    MissingExtraError: "missing_extra",
    StartupError: "startup",
    ShutdownError: "shutdown",
    WorkspaceRequiredError: "workspace_required",
    UnknownEventTypeError: "unknown_event_type",
}


def _all_error_classes() -> list[type[CorestoneError]]:
    return [getattr(errors_module, name) for name in errors_module.__all__]


def test_every_exported_error_has_a_stable_code() -> None:
    """Each error class carries the code the HTTP layer and callers match on."""
    assert {cls: cls.code for cls in _all_error_classes()} == EXPECTED_CODES


def test_codes_are_distinct() -> None:
    """No two error classes share a code, so a code identifies exactly one kind of failure."""
    codes = [cls.code for cls in _all_error_classes()]

    assert len(codes) == len(set(codes))


def test_every_error_derives_from_the_root_and_names_end_in_error() -> None:
    """All errors are CorestoneErrors and Exceptions, named *Error, shadowing no built-in."""
    import builtins

    for cls in _all_error_classes():
        assert issubclass(cls, CorestoneError)
        assert issubclass(cls, Exception)
        assert cls.__name__.endswith("Error")
        assert not hasattr(builtins, cls.__name__)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (StaleVersionError, ConflictError),
        (CircuitOpenError, UnavailableError),
        (BulkheadFullError, UnavailableError),
        (LoadTimeoutError, UnavailableError),
        (PayloadTooLargeError, InvalidInputError),
        (NotFoundError, CorestoneError),
        (AuthenticationError, CorestoneError),
        (PermissionDeniedError, CorestoneError),
        (ConfigurationError, CorestoneError),
        (StartupError, CorestoneError),
        (ShutdownError, CorestoneError),
    ],
)
def test_hierarchy(child: type[CorestoneError], parent: type[CorestoneError]) -> None:
    """A more specific error can be caught as its more general parent."""
    assert issubclass(child, parent)


def test_siblings_are_not_related() -> None:
    """A conflict is not a not-found, and unavailability is not invalid input."""
    assert not issubclass(ConflictError, NotFoundError)
    assert not issubclass(UnavailableError, InvalidInputError)
    assert not issubclass(AuthenticationError, PermissionDeniedError)


def test_plain_errors_have_a_message_and_no_details() -> None:
    """Errors without extras keep their message and give empty details."""
    error = NotFoundError("task 7 not found")

    assert error.message == "task 7 not found"
    assert str(error) == "task 7 not found"
    assert dict(error.details) == {}


def test_invalid_input_details_name_the_field_and_rule() -> None:
    """InvalidInputError reports which field broke which rule."""
    error = InvalidInputError("title is too long", field="title", rule="max_length")

    assert dict(error.details) == {"field": "title", "rule": "max_length"}


def test_payload_too_large_details_carry_the_limit() -> None:
    """PayloadTooLargeError names the body and the byte limit."""
    error = PayloadTooLargeError(1024)

    assert error.limit_bytes == 1024
    assert "1024" in error.message
    assert dict(error.details) == {"field": "body", "rule": "max_bytes", "limit_bytes": 1024}


def test_stale_version_details_carry_the_current_version() -> None:
    """StaleVersionError tells the caller which version is current."""
    error = StaleVersionError("task changed", current_version=4)

    assert error.current_version == 4
    assert dict(error.details) == {"current_version": 4}


def test_unavailable_details_carry_retry_after() -> None:
    """UnavailableError says when trying again may work."""
    assert dict(UnavailableError("db down", retry_after=2.5).details) == {"retry_after": 2.5}
    assert dict(UnavailableError("db down").details) == {"retry_after": None}


def test_circuit_open_names_the_circuit() -> None:
    """CircuitOpenError names the breaker and inherits retry_after."""
    error = CircuitOpenError("smtp", retry_after=3.0)

    assert error.name == "smtp"
    assert "smtp" in error.message
    assert dict(error.details) == {"retry_after": 3.0, "circuit": "smtp"}


def test_startup_error_names_the_component_and_cause() -> None:
    """StartupError says which component failed and why."""
    error = StartupError("database", OSError("connection refused"))

    assert error.component == "database"
    assert "database" in error.message
    assert "connection refused" in error.message


def test_shutdown_error_lists_every_failure() -> None:
    """ShutdownError keeps each failed component and its exception."""
    first, second = RuntimeError("stuck"), TimeoutError()
    error = ShutdownError({"cache": first, "events": second})

    assert error.failures == {"cache": first, "events": second}
    assert "cache" in error.message
    assert "events" in error.message


def test_errors_chain_their_cause() -> None:
    """Translating a driver error with `raise ... from` keeps the original as __cause__."""
    original = OSError("refused")

    def connect() -> None:
        try:
            raise original
        except OSError as exc:
            raise UnavailableError("database unreachable") from exc

    with pytest.raises(UnavailableError) as caught:
        connect()

    assert caught.value.__cause__ is original


def test_the_error_tree_in_the_docstring_lists_every_error() -> None:
    """Every error class, with its code, is drawn in the errors module's docstring."""
    doc = errors_module.__doc__ or ""
    lines = {
        line.split("── ")[-1].split()[0]: line.split() for line in doc.splitlines() if "── " in line
    }

    missing = [
        cls.__name__
        for cls in _all_error_classes()
        if cls is not CorestoneError and cls.code not in lines.get(cls.__name__, [])
    ]

    assert missing == []
