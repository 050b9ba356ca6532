"""The operations dashboard in real headless Chromium (Debian's), against `taskboard serve`.

Traffic is made over HTTP first, so every panel has live data to show. Screenshots go to
var/test-output/ (ignored by git), their paths printed in the test log. Under CI=true a
missing chromium or playwright fails the run; elsewhere the tests skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import (
    BOUND_MS,
    Chromium,
    User,
    Watch,
    embedded_server,
    post,
    require_browser,
    screenshot,
    signup,
)
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

PANELS = ["traffic", "alerts", "health", "breakers", "cache", "queries", "live", "backlogs"]
LAPTOP = {"width": 1366, "height": 768}


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browsers = Chromium(playwright, tmp_path)
        try:
            yield browsers
        finally:
            browsers.close()


@pytest.fixture
def server(start_server: Any, tmp_path: Path) -> Server:
    """One embedded taskboard with its query monitor on (the queries panel's statements)
    and a metric history sampled every second (the traffic charts' first points)."""
    env = {"CORESTONE_QUERY_MONITOR": "true", "CORESTONE_ALERTS_HISTORY_STEP_SECONDS": "1"}
    return embedded_server(start_server, tmp_path, env)


def _traffic(base: str, owner: User) -> None:
    """Requests of every kind: writes, cached reads, a 404, so every panel has something."""
    ws = post(base, owner, "/api/workspaces", {"name": "Ops"})["id"]
    for n in range(5):
        task = post(base, owner, f"/api/workspaces/{ws}/tasks", {"title": f"task {n}"})
        for _ in range(3):
            httpx.get(f"{base}/api/workspaces/{ws}/tasks/{task['id']}", headers=owner.auth)
    httpx.get(f"{base}/api/workspaces/{ws}/tasks?limit=50", headers=owner.auth)
    httpx.get(f"{base}/api/workspaces/{ws}/tasks/999999", headers=owner.auth)


def _open(chromium: Chromium, base: str, user: User) -> tuple[Any, Watch]:
    page = chromium.open(viewport=LAPTOP).new_page()
    watch = Watch()
    watch.attach(page)
    page.goto(f"{base}/ops")
    page.get_by_label("API token").fill(user.token)
    page.locator("#sign-in-form button[type=submit]").click()
    return page, watch


def test_an_owner_sees_every_panel_with_live_data(chromium: Chromium, server: Server) -> None:
    """Every panel renders its data (charts drawn, components and breakers named), the page
    loads nothing from another host, logs no error, and fits a laptop screen's width."""
    base = server.url
    owner = signup(base, "Owner")
    _traffic(base, owner)
    page, watch = _open(chromium, base, owner)
    page.locator("#dashboard").wait_for(timeout=BOUND_MS)
    for name in PANELS:
        panel = page.locator(f'[data-panel="{name}"]')
        panel.and_(page.locator('[data-state="ok"]')).wait_for(timeout=BOUND_MS)
    # The history needs two samples for a rate: wait for the chart's first line (a flat
    # line has an empty box, which Playwright calls hidden: attached is what is meant).
    line = page.locator('[data-panel="traffic"] svg polyline').first
    line.wait_for(state="attached", timeout=BOUND_MS)
    assert "database" in page.locator('[data-panel="health"]').inner_text()
    assert "database" in page.locator('[data-panel="breakers"]').inner_text()
    assert "L1" in page.locator('[data-panel="cache"]').inner_text()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= LAPTOP["width"]
    screenshot(page, "ops-dashboard")
    assert watch.errors == []
    assert all(url.startswith(base) for url in watch.requests), watch.requests


def test_a_user_who_owns_nothing_is_refused(chromium: Chromium, server: Server) -> None:
    """A signed-in user who owns no workspace sees "Not allowed", and no panel data."""
    base = server.url
    stranger = signup(base, "Stranger")
    page, watch = _open(chromium, base, stranger)
    page.locator("#denied").wait_for(timeout=BOUND_MS)
    assert page.locator("#dashboard").is_hidden()
    assert page.locator('[data-panel][data-state="ok"]').count() == 0
    screenshot(page, "ops-denied")
    # The refusal itself is the one 403, and Chromium logs it as a failed load.
    refusal = "status of 403 (Forbidden)"
    assert [e for e in watch.errors if "/api/ops/dashboard" not in e and refusal not in e] == []
    assert any(e.startswith("answer: 403") for e in watch.errors)
