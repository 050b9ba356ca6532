"""taskboard over HTTP in process, on each database: an httpx client and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from corestone import Infrastructure, Settings
from taskboard.app import create_app
from tests.integration.lifespan import lifespan_of


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
async def board(database_url: str, tmp_path: Path) -> AsyncIterator[Board]:
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
