"""N+1 in a web request: a naive endpoint is reported with its line, a batched one is not.

A small FastAPI app on corestone (both databases): authors and their books, read the
naive way (one query per author) and the batched way (one IN query for all of them).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import ForeignKey, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from structlog.testing import capture_logs

from corestone import Infrastructure, Settings
from corestone.db.monitor import QueryMonitor
from corestone.testing import QueryCounter
from corestone.web import instrument

AUTHORS = 6
THRESHOLD = 3


class _Base(DeclarativeBase):
    pass


class Author(_Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Book(_Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"), index=True)
    title: Mapped[str]


def _app(infra: Infrastructure) -> FastAPI:
    app = FastAPI()

    @app.get("/naive")
    async def naive() -> list[dict[str, Any]]:
        async with infra.db.transaction(read_only=True) as tx:
            authors = (await tx.session.scalars(select(Author).order_by(Author.id))).all()
            shelf = []
            for author in authors:
                titles = await tx.session.scalars(  # N+1 HERE
                    select(Book.title).where(Book.author_id == author.id)
                )
                shelf.append({"author": author.name, "books": list(titles)})
            return shelf

    @app.get("/batched")
    async def batched() -> list[dict[str, Any]]:
        async with infra.db.transaction(read_only=True) as tx:
            authors = (await tx.session.scalars(select(Author).order_by(Author.id))).all()
            books = await tx.session.scalars(
                select(Book).where(Book.author_id.in_([a.id for a in authors]))
            )
            by_author: dict[int, list[str]] = {}
            for book in books:
                by_author.setdefault(book.author_id, []).append(book.title)
            return [{"author": a.name, "books": by_author.get(a.id, [])} for a in authors]

    return app


@dataclass
class Shop:
    client: httpx.AsyncClient
    infra: Infrastructure

    @property
    def monitor(self) -> QueryMonitor:
        assert self.infra.db.monitor is not None
        return self.infra.db.monitor


@pytest.fixture
async def shop(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Shop]:
    env = getattr(request, "param", "dev")
    settings = Settings(
        database_url=database_url,
        env=env,
        query_monitor=True,
        query_n_plus_one_threshold=THRESHOLD,
    )
    async with Infrastructure(settings) as infra:
        async with infra.db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.create_all)
        async with infra.db.transaction() as tx:
            for n in range(AUTHORS):
                tx.session.add(Author(id=n, name=f"author {n}"))
                tx.session.add(Book(id=n, author_id=n, title=f"book {n}"))
        asgi = instrument(_app(infra), infra)
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield Shop(client, infra)


def _naive_line() -> str:
    lines, first = inspect.getsourcelines(_app)
    offset = next(n for n, line in enumerate(lines) if "# N+1 HERE" in line)
    return f"{__file__}:{first + offset}"


async def test_the_naive_loop_is_reported_as_n_plus_one_with_its_line(shop: Shop) -> None:
    """One query per author is reported once per request, at the loop's line in this file."""
    with capture_logs() as logs:
        response = await shop.client.get("/naive")
    assert response.status_code == 200
    assert len(response.json()) == AUTHORS

    reports = [e for e in logs if e["event"] == "n+1 query"]
    assert len(reports) == 1
    assert reports[0]["location"] == _naive_line()
    assert reports[0]["correlation_id"] == response.headers["x-request-id"]
    (finding,) = shop.monitor.n_plus_one()
    assert finding.location == _naive_line()
    assert finding.fingerprint.text.startswith("SELECT books.title FROM books WHERE")


async def test_the_batched_version_is_not_reported(shop: Shop) -> None:
    """Two queries, whatever the number of authors: no N+1."""
    with capture_logs() as logs:
        response = await shop.client.get("/batched")
    assert response.status_code == 200

    assert [e for e in logs if e["event"] == "n+1 query"] == []
    assert shop.monitor.n_plus_one() == []


async def test_in_development_the_response_says_its_query_count_and_time(shop: Shop) -> None:
    """X-Query-Count counts the request's queries (not BEGIN/COMMIT); X-Query-Time-Ms their time."""
    naive = await shop.client.get("/naive")
    batched = await shop.client.get("/batched")

    assert naive.headers["x-query-count"] == str(1 + AUTHORS)
    assert batched.headers["x-query-count"] == "2"
    assert float(batched.headers["x-query-time-ms"]) > 0
    assert float(naive.headers["x-query-time-ms"]) > 0


@pytest.mark.parametrize("shop", ["test"], indirect=True)
async def test_outside_development_there_are_no_query_headers(shop: Shop) -> None:
    """The headers are a development aid: off by default in other environments."""
    response = await shop.client.get("/batched")

    assert response.status_code == 200
    assert "x-query-count" not in response.headers
    assert "x-query-time-ms" not in response.headers


async def test_at_most_k_queries_passes_the_batched_endpoint(shop: Shop) -> None:
    """The helper lets through a block that stays within its budget (BEGIN not counted)."""
    async with QueryCounter(shop.infra.db, at_most=2) as counter:
        await shop.client.get("/batched")

    assert len(counter.queries) == 2


async def test_at_most_k_queries_fails_the_naive_endpoint_listing_the_statements(
    shop: Shop,
) -> None:
    """Over the budget, the helper fails and the message lists every query sent."""
    with pytest.raises(AssertionError) as failure:
        async with QueryCounter(shop.infra.db, at_most=2):
            await shop.client.get("/naive")

    message = str(failure.value)
    assert message.startswith(f"expected at most 2 queries, {1 + AUTHORS} were sent:")
    assert message.count("FROM books") == AUTHORS
    assert "  1. SELECT authors.id" in message


async def test_at_most_k_queries_keeps_the_blocks_own_error(shop: Shop) -> None:
    """A block that raises keeps its error; the count is not checked on top of it."""
    with pytest.raises(LookupError):
        async with QueryCounter(shop.infra.db, at_most=0):
            await shop.client.get("/naive")
            raise LookupError("the test's own failure")


async def test_at_most_k_queries_works_as_a_plain_with_block(shop: Shop) -> None:
    """The same helper as a sync context manager, on an engine."""
    with (
        pytest.raises(AssertionError, match="expected at most 1 queries, 2 were sent"),
        QueryCounter(shop.infra.db.engine, at_most=1),
    ):
        await shop.client.get("/batched")
