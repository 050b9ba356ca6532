"""The traffic panel over a real metric history: rates, ratio and quantiles per minute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corestone import Infrastructure, Settings
from corestone.observability.dashboard import Dashboard
from corestone.observability.history import MetricsHistory
from corestone.testing import ManualClock
from corestone.web.dashboard import HISTORY_WINDOW_SECONDS, standard_panels


def _requests(infra: Infrastructure, count: int, *, status: str, seconds: float) -> None:
    """What the HTTP middleware records for ``count`` requests (the same metric objects)."""
    m = infra.metrics
    total = m.counter("http_requests_total", "", ["method", "route", "status"])
    latency = m.histogram("http_request_duration_seconds", "", ["method", "route"])
    for _ in range(count):
        total.labels("GET", "/t", status).inc()
        latency.labels("GET", "/t").observe(seconds)


@pytest.fixture
def infra(tmp_path: Path) -> Infrastructure:
    return Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 't.db'}"))


async def test_the_panel_charts_the_history_it_registered(infra: Infrastructure) -> None:
    """Started, the panel watches its expressions; after ten minutes of 60 requests a
    minute, 10% of them 5xx, it shows 1 req/s, a 0.1 error ratio and quantiles in range."""
    clock = ManualClock(1_000_000.0)
    history = MetricsHistory(infra.metrics, step=10.0, clock=clock)
    panels = standard_panels(infra, history=lambda: history, wall=clock)
    board = Dashboard([p for p in panels if p.name == "traffic"], clock=clock)
    await board.start()
    for _ in range(60):  # ten minutes, a sample every 10 s
        _requests(infra, 9, status="200", seconds=0.02)
        _requests(infra, 1, status="500", seconds=0.4)
        history.sample()
        clock.advance(10.0)
    answer: dict[str, Any] = (await board.snapshot())["panels"]["traffic"]
    assert answer["ok"] is True, answer
    data = answer["data"]
    assert data["window_seconds"] == HISTORY_WINDOW_SECONDS
    series = data["series"]
    assert set(series) == {"request_rate", "error_ratio", "p50", "p95", "p99"}
    # A point a minute where the history has data: ten minutes of an hour's window.
    assert len(series["request_rate"]) == 10
    last = {name: points[-1][1] for name, points in series.items()}
    assert last["request_rate"] == pytest.approx(1.0)
    assert last["error_ratio"] == pytest.approx(0.1)
    assert 0.01 <= last["p50"] <= 0.025
    assert 0.25 <= last["p99"] <= 0.5


async def test_without_a_history_the_panel_says_why(infra: Infrastructure) -> None:
    """No alerts set up: the traffic panel's error says there is no history; it starts."""
    board = Dashboard([p for p in standard_panels(infra) if p.name == "traffic"])
    await board.start()
    answer = (await board.snapshot())["panels"]["traffic"]
    assert answer == {"ok": False, "error": "LookupError: no metric history in this process"}
