"""The naming contract of /metrics on a running taskboard, checked by rules and by promtool."""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corestone.testing.services import services_required
from tests.integration.conftest import Board

# Units that are not Prometheus base units: a name says seconds, bytes or ratio instead.
_NOT_BASE_UNITS = {
    "ms", "millis", "milliseconds", "us", "micros", "microseconds", "ns", "nanoseconds",
    "minutes", "hours", "days", "kb", "mb", "gb", "kilobytes", "megabytes", "gigabytes",
    "percent", "pct",
}  # fmt: skip
_UNITS = {"seconds", "bytes", "ratio"}
_FAMILY = re.compile(r"corestone_(?P<component>[a-z][a-z0-9]*)_(?P<rest>[a-z0-9_]+)")
_TIME_WORDS = re.compile(r"\b(seconds?|latency|duration|time|how long)\b", re.IGNORECASE)


async def _scrape(board: Board) -> str:
    """/metrics after traffic that touches the API, errors, health and the events path."""
    _, auth = await board.signup("Metrics")
    workspace = await board.workspace(auth)
    await board.task(auth, workspace, title="counted")
    assert (await board.client.get("/api/workspaces/999999/tasks", headers=auth)).status_code
    assert (await board.client.get("/health/ready")).status_code == 200
    response = await board.client.get("/metrics")
    assert response.status_code == 200
    return response.text


def _contract_breaches(exposition: str) -> list[str]:
    breaches = []
    for family in text_string_to_metric_families(exposition):
        name = family.name + ("_total" if family.type == "counter" else "")
        match = _FAMILY.fullmatch(name)
        words = name.split("_")
        if match is None:
            breaches.append(f"{name}: not corestone_<component>_…")
        if family.type == "counter" and not name.endswith("_total"):
            breaches.append(f"{name}: a counter ends in _total")
        if _NOT_BASE_UNITS & set(words):
            breaches.append(f"{name}: not in a base unit (seconds, bytes, ratio)")
        unit_positions = [i for i, word in enumerate(words) if word in _UNITS]
        last = len(words) - (2 if name.endswith("_total") else 1)
        if any(i != last for i in unit_positions):
            breaches.append(f"{name}: the unit comes last (before _total)")
        if (
            family.type == "histogram"
            and _TIME_WORDS.search(family.documentation)
            and not name.endswith("_seconds")
        ):
            breaches.append(f"{name}: a time histogram ends in _seconds")
        if family.type != "counter" and name.endswith("_total"):
            breaches.append(f"{name}: only counters end in _total")
    return breaches


async def test_every_family_follows_the_naming_contract(board: Board) -> None:
    """Every family is corestone_<component>_… in base units, unit last, counters _total."""
    exposition = await _scrape(board)

    assert "corestone_http_requests_total" in exposition
    assert _contract_breaches(exposition) == []


async def test_promtool_accepts_the_exposition(board: Board) -> None:
    """`promtool check metrics` finds no problem in /metrics (Prometheus's own linter)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (Debian package prometheus; .ci/run installs it)"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    exposition = await _scrape(board)

    checked = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(checked.communicate(exposition.encode()), timeout=60)
    assert (checked.returncode, output.decode()) == (0, "")


def test_the_contract_rules_catch_what_they_name() -> None:
    """The rules above flag a wrong prefix, a non-base unit, a misplaced unit and _total."""
    bad = "\n".join(
        [
            "# TYPE app_requests_total counter",
            "app_requests_total 1",
            "# TYPE corestone_db_wait_ms gauge",
            "corestone_db_wait_ms 1",
            "# TYPE corestone_db_seconds_waited gauge",
            "corestone_db_seconds_waited 1",
            "# HELP corestone_http_latency Request latency.",
            "# TYPE corestone_http_latency histogram",
            'corestone_http_latency_bucket{le="+Inf"} 1',
            "corestone_http_latency_count 1",
            "corestone_http_latency_sum 1",
            "# TYPE corestone_db_rows_total gauge",
            "corestone_db_rows_total 1",
            "",
        ]
    )
    assert [breach.split(":")[0] for breach in _contract_breaches(bad)] == [
        "app_requests_total",
        "corestone_db_wait_ms",
        "corestone_db_seconds_waited",
        "corestone_http_latency",
        "corestone_db_rows_total",
    ]
