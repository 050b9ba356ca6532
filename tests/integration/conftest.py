"""taskboard over HTTP in process, on each database: an httpx client and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from corestone import Infrastructure, Settings
from taskboard.app import create_app
from tests.integration.lifespan import lifespan_of
from tests.integration.migrated import MigratedTemplates


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("templates"))
    yield templates
    templates.drop()


@pytest.fixture
def taskboard_schema() -> None:
    """Asks ``database_url`` for a database already at taskboard's head revision.

    A fixture that starts a taskboard app requests it beside ``database_url``; the test
    then gets a copy of a migrated template instead of migrating an empty database
    (tests/integration/migrated.py says why).
    """


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs twice: on a SQLite file and on a fresh PostgreSQL database.

    Empty, unless the test's fixtures request ``taskboard_schema``: then migrated.
    """
    migrated = "taskboard_schema" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        if migrated:
            request.getfixturevalue("migrated_templates").copy_sqlite(path)
        return f"sqlite+aiosqlite:///{path}"
    if migrated:
        template = request.getfixturevalue("migrated_templates").postgres()
        clone: str = request.getfixturevalue("make_postgres_database")(template=template)
        return clone
    empty: str = request.getfixturevalue("postgres_url")
    return empty


@dataclass
class Board:
    """A running taskboard and the client that talks to it."""

    client: httpx.AsyncClient
    infra: Infrastructure

    async def signup(
        self, name: str = "Ada", email: str | None = None
    ) -> tuple[int, dict[str, str]]:
        """Create a user; return their id and the auth headers for them."""
        email = email or f"{name.lower()}-{id(object())}@example.com"
        response = await self.client.post("/api/users", json={"name": name, "email": email})
        assert response.status_code == 201, response.text
        body = response.json()
        return body["user"]["id"], {"Authorization": f"Bearer {body['token']}"}

    async def workspace(self, headers: dict[str, str], name: str = "Home") -> int:
        response = await self.client.post("/api/workspaces", json={"name": name}, headers=headers)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def task(self, headers: dict[str, str], ws: int, **fields: object) -> dict[str, object]:
        body = {"title": "Write tests", **fields}
        response = await self.client.post(f"/api/workspaces/{ws}/tasks", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
async def board(database_url: str, taskboard_schema: None, tmp_path: Path) -> AsyncIterator[Board]:
    settings = Settings(
        database_url=database_url,
        env="test",
        http_max_body_bytes=64 * 1024,
        email_file_dir=str(tmp_path / "mail"),
    )
    infra = Infrastructure(settings)
    app = create_app(infra)
    async with lifespan_of(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskboard") as client:
            yield Board(client, infra)
