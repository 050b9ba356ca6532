"""docs/auth.md's example runs as written, on both databases, with a real Redis."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response

from corestone import CorestoneError
from corestone.cache import TieredCache
from corestone.db import Database
from corestone.testing import QueryCounter
from corestone.web import forget_access_after_commit, problem_for_error, token_digest
from tests.integration.cache._support import fresh_namespace

DOC = Path(__file__).resolve().parents[2] / "docs" / "auth.md"
SCHEMA = (
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE tokens (digest TEXT PRIMARY KEY, user_id INTEGER NOT NULL)",
    "CREATE TABLE members (workspace_id INTEGER, user_id INTEGER, role TEXT NOT NULL)",
    "INSERT INTO users VALUES (1, 'Ada')",
    "INSERT INTO members VALUES (5, 1, 'owner')",
)


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


async def test_the_example_authenticates_from_the_cache_and_revokes(
    database_url: str, redis_url: str
) -> None:
    """The example's app answers from the cache, 401s unknown tokens, 404s non-members,
    and its revocation block makes the token fail."""
    example, revoke = _blocks()[:2]
    namespace: dict[str, Any] = {}
    exec(compile(example, str(DOC), "exec", dont_inherit=True), namespace)
    token = f"tok-{uuid.uuid4().hex}"
    digest = token_digest(token)
    async with (
        fresh_namespace(redis_url) as ns,
        TieredCache.from_url(redis_url, namespace=ns) as cache,
    ):
        db = Database(database_url, cache=cache)
        await db.start()
        try:
            async with db.transaction() as tx:
                for statement in SCHEMA:
                    await tx.session.execute(text(statement))
                await tx.session.execute(text("INSERT INTO tokens VALUES (:d, 1)"), {"d": digest})
            app = namespace["build_app"](db)

            async def problem(_request: Request, error: Exception) -> Response:
                assert isinstance(error, CorestoneError)
                return problem_for_error(error)

            app.add_exception_handler(CorestoneError, problem)  # what instrument() adds
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://doc") as client:
                auth = {"Authorization": f"Bearer {token}"}
                first = await client.get("/workspaces/5/whoami", headers=auth)
                assert first.json() == {"name": "Ada", "role": "owner"}
                with QueryCounter(db.engine) as counter:
                    again = await client.get("/workspaces/5/whoami", headers=auth)
                    assert again.json() == first.json()
                    assert counter.events == []
                elsewhere = await client.get("/workspaces/6/whoami", headers=auth)
                assert elsewhere.status_code == 404
                stranger = {"Authorization": "Bearer nobody"}
                assert (
                    await client.get("/workspaces/5/whoami", headers=stranger)
                ).status_code == 401
                scope = {
                    "db": db,
                    "text": text,
                    "digest": digest,
                    "forget_access_after_commit": forget_access_after_commit,
                }
                runner = "async def _revoke():\n" + "".join(
                    f"    {line}\n" for line in revoke.splitlines()
                )
                exec(compile(runner, str(DOC), "exec", dont_inherit=True), scope)
                await scope["_revoke"]()
                assert (await client.get("/workspaces/5/whoami", headers=auth)).status_code == 401
        finally:
            await db.aclose()


def test_the_doc_has_the_two_blocks() -> None:
    """The example and the revocation are the first two Python blocks of docs/auth.md."""
    blocks = _blocks()
    assert "build_app" in blocks[0]
    assert "forget_access_after_commit" in blocks[1]
