"""Finding the real servers tests run against, and refusing to skip them under CI.

pytest is imported only to skip or fail a test, so ``corestone.testing`` (ManualClock,
RedisServer, QueryCounter) imports where pytest is not installed: pytest is no dependency
of corestone, and a unittest suite wants the fakes too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from corestone.errors import MissingExtraError

__all__ = [
    "postgres_admin_url",
    "redis_test_url",
    "require_service",
    "run_sync",
    "services_required",
]

T = TypeVar("T")


def services_required() -> bool:
    """True under CI (``CI=true``): a missing server is then a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgres_admin_url() -> str:
    """A URL to a PostgreSQL database the tests may create other databases from."""
    return os.environ.get(
        "CORESTONE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )


def redis_test_url() -> str:
    return os.environ.get("CORESTONE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""

    async def runner() -> T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, runner()).result()


def require_service(name: str, probe: Callable[[], Awaitable[object]]) -> None:
    """Run ``probe``; if it fails, skip the test (locally) or fail it (under CI).

    A missing extra is not a server that is down but an install to fix: it fails the test
    with the extra's name everywhere, or a project that forgot ``corestone[redis]`` would
    see its Redis tests skipped, not broken.
    """
    try:
        run_sync(probe)
    except MissingExtraError:
        raise
    except Exception as error:  # noqa: BLE001 - any other failure means "not available"
        _unavailable(name, error)


def _unavailable(name: str, error: BaseException) -> NoReturn:
    import pytest  # a test is running: pytest is there

    message = f"{name} is not available: {error!r}"
    if services_required():
        pytest.fail(f"{message} (CI=true: services are required)", pytrace=False)
    pytest.skip(message)
