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


def test_a_raw_connection_reset_is_the_applications_not_the_databases() -> None:
    """A bare ConnectionResetError is not transient; below a SQLAlchemy error it is a
    disconnect."""
    assert transient_cause(ConnectionResetError("the provider hung up")) is None
    wrapped = exc.DBAPIError("SELECT 1", None, ConnectionResetError("reset"))
    wrapped.__cause__ = wrapped.orig  # as SQLAlchemy raises it: from the driver's error
    assert transient_cause(wrapped) == "disconnect"


class _SqliteError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"sqlite error {code}")
        self.sqlite_errorcode = code


@pytest.mark.parametrize(("code", "unavailable"), [(1, False), (10, True), (266, True)])
def test_sqlite_result_codes_decide_unavailability(code: int, unavailable: bool) -> None:
    """SQLITE_ERROR (1: no such table, syntax) is an answer; SQLITE_IOERR (10, and its
    extended codes such as 266) means the database cannot serve."""
    error = exc.OperationalError("SELECT 1", None, _SqliteError(code))
    assert isinstance(translate_error(error), UnavailableError) is unavailable
