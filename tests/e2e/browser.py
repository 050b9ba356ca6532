"""Helpers of the page's browser tests: Debian's chromium through Playwright, users made
over HTTP, and what a page logged.

Playwright drives /usr/bin/chromium (never a browser Playwright downloads). Under CI=true
a missing chromium or playwright fails the run; elsewhere the tests skip.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.conftest import ROOT, Server, free_port, taskboard_command

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

__all__ = [
    "BOUND_MS",
    "Chromium",
    "User",
    "Watch",
    "embedded_server",
    "post",
    "require_browser",
    "row",
    "screenshot",
    "sign_in",
    "signup",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = ROOT / "var" / "test-output"
BOUND_MS = 30_000  # a bound on waiting for the page, never an expected duration


def require_browser(chromium: Path = CHROMIUM) -> None:
    """Skip without chromium or playwright, except under CI, where that is a failure."""
    missing = [
        what
        for what, there in (
            (str(chromium), chromium.exists()),
            ("playwright", importlib.util.find_spec("playwright") is not None),
        )
        if not there
    ]
    if not missing:
        return
    message = f"the browser test needs {' and '.join(missing)} (.ci/run installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Chromium:
    """Opens browser profiles of Debian's chromium, each in its own directory, all closed at
    the end.

    A persistent profile, not Playwright's default incognito-like context: in incognito
    Chromium refuses the Push API and logs a console error of its own.
    """

    def __init__(self, playwright: Playwright, directory: Path) -> None:
        self.playwright = playwright
        self.directory = directory
        self.opened: list[BrowserContext] = []

    def open(self, **options: Any) -> BrowserContext:
        profile = self.directory / f"profile-{len(self.opened)}"
        context = self.playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, **options
        )
        self.opened.append(context)
        return context

    def close(self) -> None:
        for context in self.opened:
            context.close()


def embedded_server(start_server: Any, tmp_path: Path, env: dict[str, str] | None = None) -> Server:
    """One `taskboard serve` on a SQLite file of the test's, ready."""
    port = free_port()
    database = {"CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"}
    server: Server = start_server(taskboard_command(port), database | (env or {}), port)
    server.wait_ready()
    return server


@dataclass
class User:
    id: int
    name: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def signup(base: str, name: str) -> User:
    response = httpx.post(
        f"{base}/api/users", json={"name": name, "email": f"{name.lower()}@example.com"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return User(body["user"]["id"], name, body["token"])


def post(base: str, user: User, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{base}{path}", json=body, headers=user.auth)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


@dataclass
class Watch:
    """What a page did that a test must see: errors (console, page, 4xx/5xx answers), dialogs,
    and every URL it requested."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on(
            "response",
            lambda response: (
                self.errors.append(f"answer: {response.status} {response.url}")
                if response.status >= 400
                else None
            ),
        )

        def dialog(opened: Any) -> None:
            self.dialogs.append(opened.message)
            opened.dismiss()

        page.on("dialog", dialog)


def screenshot(page: Page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")  # the test log names where it is
    return path


def sign_in(page: Page, base: str, user: User, path: str = "/") -> None:
    page.goto(f"{base}{path}")
    page.get_by_label("API token").fill(user.token)
    page.locator("#sign-in-form button[type=submit]").click()
    page.locator("#live[data-state=live]").wait_for(timeout=BOUND_MS)


def row(page: Page, title: str) -> Any:
    return page.locator("#task-rows tr").filter(
        has=page.locator("td.title", has_text=re.compile("^" + re.escape(title) + "$"))
    )
