"""The http suite's stores: a throwaway PostgreSQL database and a Redis key namespace.

Both are removed on the way out, also on error: the database with ``DROP DATABASE …
WITH (FORCE)`` (servers still connected are cut off), the namespace by deleting every
key that carries it.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as redis

__all__ = ["PG_HOST", "PG_PORT", "REDIS_URL", "postgres_database", "redis_namespace"]

PG_HOST = "127.0.0.1"
PG_PORT = 5432
REDIS_URL = "redis://127.0.0.1:6379/0"
_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, empty database ``bench_http_<random>`` (its name), dropped on exit."""
    name = f"bench_http_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def redis_namespace() -> AsyncIterator[str]:
    """A cache namespace no one else uses; every key containing it is deleted on exit."""
    namespace = f"bench-http-{secrets.token_hex(4)}"
    try:
        yield namespace
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            doomed = [key async for key in client.scan_iter(match=f"*{namespace}*", count=1000)]
            for start in range(0, len(doomed), 500):
                await client.delete(*doomed[start : start + 500])
        finally:
            await client.aclose()
