"""The corestone pytest plugin: real databases and Redis for tests, created and dropped per test.

Loaded by pytest wherever corestone is installed, extras or not, so it imports the
drivers only inside the fixtures that use them: a fixture whose extra is missing fails
with the extra's name, and every other test is untouched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from corestone._extras import requires_extra
from corestone.testing.redis_server import RedisServer
from corestone.testing.services import (
    postgres_admin_url,
    redis_test_url,
    require_service,
    run_sync,
)

__all__ = ["database_url", "make_postgres_database", "postgres_url", "redis_server", "redis_url"]


if TYPE_CHECKING:
    from sqlalchemy.engine import URL


def _url(url: str) -> URL:
    with requires_extra(__name__, "postgres"):
        from sqlalchemy.engine import make_url

    return make_url(url)


def _asyncpg_dsn(url: str) -> str:
    return _url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _asyncpg_connect(dsn: str, connect_timeout: float) -> Any:
    with requires_extra(__name__, "postgres"):
        import asyncpg

    return await asyncpg.connect(dsn, timeout=connect_timeout)


@pytest.fixture(scope="session")
def _postgres_admin() -> str:
    url = postgres_admin_url()

    async def probe() -> None:
        conn = await _asyncpg_connect(_asyncpg_dsn(url), connect_timeout=5)
        await conn.close()

    require_service("PostgreSQL", probe)
    return url


@pytest.fixture
def make_postgres_database(_postgres_admin: str) -> Iterator[Callable[..., str]]:
    """A factory of new PostgreSQL databases; all dropped (forcibly) after the test.

    ``make()`` gives an empty one; ``make(template="name")`` a copy of that database
    (``CREATE DATABASE … TEMPLATE``), which is how a suite migrates once and still gives
    each test a database of its own. PostgreSQL refuses to copy a database anyone is
    connected to: a pool just closed may still hold a backend that is exiting, so a
    refusal is retried for a few seconds before it fails the test.
    """
    admin = _asyncpg_dsn(_postgres_admin)
    created: list[str] = []

    async def execute(sql: str) -> None:
        conn = await _asyncpg_connect(admin, connect_timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def make(template: str | None = None) -> str:
        name = f"cs_test_{uuid.uuid4().hex[:16]}"
        create = f'CREATE DATABASE "{name}"'
        if template is not None:
            create += f' TEMPLATE "{template}"'
        run_sync(lambda: _retry_while_in_use(lambda: execute(create)))
        created.append(name)
        return _url(_postgres_admin).set(database=name).render_as_string(hide_password=False)

    yield make
    for name in created:
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        run_sync(lambda drop=drop: execute(drop))  # type: ignore[misc]


async def _retry_while_in_use(create: Callable[[], Awaitable[None]]) -> None:
    for _ in range(_IN_USE_ATTEMPTS - 1):
        try:
            await create()
        except Exception as error:  # asyncpg's ObjectInUseError, known by its SQLSTATE
            if getattr(error, "sqlstate", None) != _OBJECT_IN_USE:
                raise
            await asyncio.sleep(0.1)
        else:
            return
    await create()


_OBJECT_IN_USE = "55006"
_IN_USE_ATTEMPTS = 50


@pytest.fixture
def postgres_url(make_postgres_database: Callable[..., str]) -> str:
    """A new empty PostgreSQL database for this test; dropped (forcibly) afterwards."""
    return make_postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis server (tests must use their own key prefix on it)."""
    url = redis_test_url()

    async def probe() -> None:
        with requires_extra(__name__, "redis"):
            import redis.asyncio as redis

        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        try:
            await cast("Awaitable[object]", client.ping())
        finally:
            await client.aclose()

    require_service("Redis", probe)
    return url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own on a spare port, for killing and freezing."""
    with RedisServer(tmp_path) as server:
        yield server
