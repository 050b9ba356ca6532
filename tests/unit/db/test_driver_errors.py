"""Reading driver errors: what is transient, what leaves a COMMIT's outcome unknown, what is
translated (only the driver's errors)."""

from __future__ import annotations

import pytest
from sqlalchemy import exc

from corestone.db._driver_errors import commit_outcome_unknown, transient_cause, translate_error
from corestone.errors import CommitUnknownError, ConflictError, UnavailableError


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"driver error {sqlstate}")
        self.sqlstate = sqlstate


def _dbapi(sqlstate: str | None, *, invalidated: bool = False) -> exc.DBAPIError:
    return exc.DBAPIError(
        "COMMIT", None, _DriverError(sqlstate), connection_invalidated=invalidated
    )


def test_a_refused_commit_is_transient_and_not_unknown() -> None:
    """40001 / 40P01 sent by the server at COMMIT: nothing committed, worth a retry."""
    for code, cause in (("40001", "serialization"), ("40P01", "deadlock")):
        error = _dbapi(code)
        assert not commit_outcome_unknown(error)
        assert transient_cause(error) == cause
        assert isinstance(translate_error(error), ConflictError)


def test_a_lost_link_during_commit_is_unknown() -> None:
    """A disconnect, a socket error, a client timeout or a driver-made class 08 code."""
    assert commit_outcome_unknown(_dbapi(None, invalidated=True))
    assert commit_outcome_unknown(_dbapi("08003", invalidated=True))
    assert commit_outcome_unknown(ConnectionResetError())
    assert commit_outcome_unknown(TimeoutError())
    assert not commit_outcome_unknown(_dbapi("23503"))  # a deferred constraint: refused


def test_commit_unknown_is_never_transient() -> None:
    """Even chained to a disconnect, CommitUnknownError is not worth a retry."""
    unknown = CommitUnknownError("lost")
    unknown.__cause__ = _dbapi(None, invalidated=True)
    assert transient_cause(unknown.__cause__) == "disconnect"
    assert transient_cause(unknown) is None


@pytest.mark.parametrize(
    "error", [FileNotFoundError("x"), PermissionError("x"), TimeoutError("x"), OSError("x")]
)
def test_application_errors_are_not_translated(error: Exception) -> None:
    """Only SQLAlchemy's errors are the driver's: others come back as they are."""
    assert translate_error(error) is error


def test_a_lost_connection_is_unavailable() -> None:
    """A statement on a lost connection is the database being unavailable (503)."""
    assert isinstance(translate_error(_dbapi(None, invalidated=True)), UnavailableError)
