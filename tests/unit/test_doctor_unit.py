"""The doctor's report formatting, with no services involved."""

from __future__ import annotations

import dataclasses

import pytest

from corestone.doctor import ServiceCheck, format_report


def test_report_aligns_columns_and_gives_reasons_only_for_failures() -> None:
    """Every line starts its URL and latency in the same column; only FAIL lines carry a reason."""
    checks = [
        ServiceCheck("database", "sqlite+aiosqlite:///./var/corestone.db", True, 2.0),
        ServiceCheck("redis", "redis://127.0.0.1:1/0", False, 1234.5, "connection refused"),
    ]
    lines = format_report(checks)
    assert lines == [
        "ok    database  sqlite+aiosqlite:///./var/corestone.db      2.0 ms",
        "FAIL  redis     redis://127.0.0.1:1/0                    1234.5 ms  connection refused",
    ]


def test_empty_report_has_no_lines() -> None:
    """No checks make no lines (and no crash computing column widths)."""
    assert format_report([]) == []


def test_service_check_is_frozen() -> None:
    """A result cannot be changed after the fact, so a report always shows what was found."""
    check = ServiceCheck("smtp", "smtp://127.0.0.1:25", True, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.ok = False  # type: ignore[misc]


def test_an_error_that_cannot_print_itself_is_reported_by_its_type() -> None:
    """A probe failure whose str() raises still gives a reason line: the error's type."""
    from corestone.doctor import _first_line

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert _first_line(Unprintable()) == "Unprintable"
