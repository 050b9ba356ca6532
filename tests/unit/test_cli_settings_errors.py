"""A bad setting stops a command with one line on stderr and exit status 2 (issue 12, item 1)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from corestone.cli import EXIT_CONFIGURATION, app

_EXAMPLE = 'CORESTONE_BREAKERS={"default": {"wait_in_open_seconds": 10}'


def _doctor(variable: str, value: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["doctor"], env={variable: value})
    return result.exit_code, result.stderr.splitlines()


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("{bad", "is not valid JSON"),
        ("[1,2]", "must be a JSON object, not an array"),
        ("null", "must be a JSON object, not null"),
        ('"fast"', "must be a JSON object, not a string"),
        ('{"database": 5}', "breaker 'database' must map to a JSON object of options"),
        ('{"database": {"minimum_calls": 0}}', "breakers.database.minimum_calls"),
    ],
)
def test_bad_breakers_are_one_line_echoing_what_was_typed(typed: str, problem: str) -> None:
    """Each malformed CORESTONE_BREAKERS gives one line with the typed text, not a Python value.

    Before, '{bad' was a 100-line SettingsError traceback and a decoded value was echoed as
    a dict ("item database = 5"), which is not what the operator wrote.
    """
    status, lines = _doctor("CORESTONE_BREAKERS", typed)

    assert status == EXIT_CONFIGURATION
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"configuration error: CORESTONE_BREAKERS={typed!r}: ")
    assert problem in lines[0]
    assert _EXAMPLE in lines[0]
    assert "Traceback" not in lines[0]


def test_empty_breakers_means_no_breaker_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty CORESTONE_BREAKERS is the default (no overrides), like the other empty lists."""
    from corestone.config import load_settings

    monkeypatch.setenv("CORESTONE_BREAKERS", "")

    assert load_settings().breakers == {}


@pytest.mark.parametrize("typed", ["nonsense", "localhost:5432/app", "/var/app.db"])
def test_a_database_url_without_scheme_shows_the_two_accepted_forms(typed: str) -> None:
    """'nonsense' is not "has scheme 'none'": the line shows both URL forms a user can copy."""
    status, lines = _doctor("CORESTONE_DATABASE_URL", typed)

    assert status == EXIT_CONFIGURATION
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"configuration error: CORESTONE_DATABASE_URL={typed!r}: ")
    assert "is not a database URL" in lines[0]
    assert "postgresql+asyncpg://user:password@host:5432/name" in lines[0]
    assert "sqlite+aiosqlite:///./var/app.db" in lines[0]
    assert "'none'" not in lines[0]
