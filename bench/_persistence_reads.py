"""Reads: one deep page five ways, ``get`` by id two ways, and a single-row update audited or not.

Every contender loads ORM objects, and the session's identity map is emptied before each
call (outside the timing), so each call is a real SELECT that builds fresh objects. The
contenders are interleaved call by call, so a drift in the machine's load hits all alike.
The raw statements carry ``workspace_id = :ws`` as the repository's do: the same query a
hand-written tenant-aware service would send.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from advanced_alchemy.filters import LimitOffset, OrderBy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bench._persistence_setup import (
    SIGNING_KEY,
    WORKSPACE,
    AuditedTask,
    AuditedTaskRepository,
    BenchDatabase,
    BenchTask,
    PeerTaskRepository,
    Stopwatch,
    TaskRepository,
    median_us,
)

__all__ = [
    "PageFigures",
    "measure_audited_update",
    "measure_get",
    "measure_pages",
    "measure_server_ms",
]


@dataclass(frozen=True, slots=True)
class PageFigures:
    """Median milliseconds per page, keyed by contender, and the page's first id."""

    ms: dict[str, float]
    page: int
    first_id: int


def _ids(items: Any) -> list[int]:
    return [task.id for task in items]


async def measure_pages(db: BenchDatabase, *, page: int, size: int, calls: int) -> PageFigures:
    """Page ``page`` (and page 1 for keyset) by every contender; each checked to agree."""
    offset = (page - 1) * size
    base = select(BenchTask).where(BenchTask.workspace_id == WORKSPACE).order_by(BenchTask.id)
    async with db.session() as raw, db.session() as peer, db.session() as mine:
        ours = TaskRepository(mine, workspace=WORKSPACE, signing_key=SIGNING_KEY)
        theirs = PeerTaskRepository(session=peer)
        # The keyset positions: the last id before the page (raw), a cursor (corestone),
        # reached by walking the pages as a client would.
        after_id = offset  # ids are 1..n after RESTART IDENTITY; checked below
        cursor: str | None = None
        for _ in range(page - 1):
            walked = await ours.list(limit=size, cursor=cursor)
            cursor = walked.next_cursor
        mine.expunge_all()
        expected = list(range(offset + 1, offset + size + 1))

        async def raw_offset() -> list[int]:
            return _ids(await raw.scalars(base.offset(offset).limit(size)))

        async def raw_keyset() -> list[int]:
            return _ids(await raw.scalars(base.where(BenchTask.id > after_id).limit(size)))

        async def raw_keyset_first() -> list[int]:
            return _ids(await raw.scalars(base.limit(size)))

        async def corestone_list() -> list[int]:
            return _ids((await ours.list(limit=size, cursor=cursor)).items)

        async def corestone_list_first() -> list[int]:
            return _ids((await ours.list(limit=size)).items)

        async def corestone_page() -> list[int]:
            result = await ours.page(page=page, page_size=size)
            assert result.total >= offset + size
            return _ids(result.items)

        async def aa_list_and_count() -> list[int]:
            items, total = await theirs.list_and_count(
                LimitOffset(limit=size, offset=offset), OrderBy("id", "asc")
            )
            assert total >= offset + size
            return _ids(items)

        async def aa_list_and_count_two_queries() -> list[int]:
            items, total = await theirs.list_and_count(
                LimitOffset(limit=size, offset=offset),
                OrderBy("id", "asc"),
                count_with_window_function=False,
            )
            assert total >= offset + size
            return _ids(items)

        contenders: dict[str, tuple[AsyncSession, Callable[[], Awaitable[list[int]]]]] = {
            "raw_offset": (raw, raw_offset),
            "raw_keyset": (raw, raw_keyset),
            "raw_keyset_page1": (raw, raw_keyset_first),
            "corestone_page": (mine, corestone_page),
            "corestone_list": (mine, corestone_list),
            "corestone_list_page1": (mine, corestone_list_first),
            "advanced_alchemy_list_and_count": (peer, aa_list_and_count),
            "advanced_alchemy_list_and_count_2q": (peer, aa_list_and_count_two_queries),
        }
        watches = {name: Stopwatch() for name in contenders}
        first_page = list(range(1, size + 1))
        order = list(contenders.items())
        shuffler = random.Random(11)
        for call in range(calls + 3):  # three warm-up rounds, discarded
            shuffler.shuffle(order)  # no contender always follows the slow OFFSET scan
            for name, (session, fn) in order:
                session.expunge_all()
                got = await watches[name].time(fn)
                want = first_page if name.endswith("page1") else expected
                if got != want:
                    raise AssertionError(f"{name} returned ids {got[:3]}…, not {want[:3]}…")
                if call < 3:
                    watches[name].samples.clear()
        return PageFigures(
            ms={name: median_us(w) / 1000 for name, w in watches.items()},
            page=page,
            first_id=expected[0],
        )


async def measure_get(db: BenchDatabase, *, rows: int, calls: int) -> dict[str, float]:
    """Median µs of ``session.get`` and ``Repository.get`` on random existing ids."""
    picker = random.Random(7)
    ids = [picker.randint(1, rows) for _ in range(calls + 20)]
    async with db.session() as bare, db.session() as mine:
        ours = TaskRepository(mine, workspace=WORKSPACE)
        watch_bare, watch_ours = Stopwatch(), Stopwatch()
        for index, id_ in enumerate(ids):
            bare.expunge_all()
            mine.expunge_all()
            if index % 2:
                b = await watch_ours.time(partial(ours.get, id_))
                a = await watch_bare.time(partial(bare.get, BenchTask, id_))
            else:
                a = await watch_bare.time(partial(bare.get, BenchTask, id_))
                b = await watch_ours.time(partial(ours.get, id_))
            if a is None or a.id != id_ or b.id != id_:
                raise AssertionError(f"get({id_}) disagreed")
            if index < 20:  # warm-up
                watch_bare.samples.clear()
                watch_ours.samples.clear()
    return {"session_get": median_us(watch_bare), "corestone_get": median_us(watch_ours)}


async def measure_audited_update(db: BenchDatabase, *, calls: int) -> dict[str, float]:
    """Median µs of one ``Repository.update`` in its own transaction, audited vs not.

    The two tables have the same columns and rows; only ``AuditedMixin`` differs. Each
    update changes the title (so the audit log has a change to record) and commits.
    """
    seed = [{"title": f"Task {i}", "description": "x" * 200, "status": "open"} for i in range(200)]
    for repo_type in (TaskRepository, AuditedTaskRepository):
        async with db.session() as session, session.begin():
            await repo_type(session, workspace=WORKSPACE).create_many(seed)
    plain_ids = await _first_ids(db, BenchTask, len(seed))
    audited_ids = await _first_ids(db, AuditedTask, len(seed))
    watches = {"update_unaudited": Stopwatch(), "update_audited": Stopwatch()}
    targets: list[tuple[str, type[Any], list[int]]] = [
        ("update_unaudited", TaskRepository, plain_ids),
        ("update_audited", AuditedTaskRepository, audited_ids),
    ]
    for call in range(calls + 10):
        for name, repo_type, ids in targets if call % 2 else targets[::-1]:
            id_ = ids[call % len(ids)]

            async def update(repo_type: Any = repo_type, id_: int = id_, n: int = call) -> None:
                async with db.session() as session, session.begin():
                    repo = repo_type(session, workspace=WORKSPACE)
                    await repo.update(id_, {"title": f"Renamed {n}"})

            await watches[name].time(update)
            if call < 10:
                watches[name].samples.clear()
    return {name: median_us(w) for name, w in watches.items()}


async def _first_ids(db: BenchDatabase, model: type[Any], count: int) -> list[int]:
    async with db.session() as session:
        stmt = select(model.id).order_by(model.id.desc()).limit(count)
        return list(await session.scalars(stmt))


async def measure_server_ms(db: BenchDatabase, *, page: int, size: int) -> dict[str, float]:
    """PostgreSQL's own execution time (EXPLAIN ANALYZE), median of 15: no driver, no ORM.

    What the database spends on each query shape, which the end-to-end figures above
    bury under round trips and object loading on a small or busy machine.
    """
    offset = (page - 1) * size
    where = f"FROM bench_tasks WHERE workspace_id = {WORKSPACE}"
    shapes = {
        "offset": f"SELECT * {where} ORDER BY id LIMIT {size} OFFSET {offset}",
        "keyset": f"SELECT * {where} AND id > {offset} ORDER BY id LIMIT {size + 1}",
        "keyset_page1": f"SELECT * {where} ORDER BY id LIMIT {size + 1}",
        "count": f"SELECT count(*) {where}",
        "window_count": (
            f"SELECT *, count(*) OVER () {where} ORDER BY id LIMIT {size} OFFSET {offset}"
        ),
    }
    conn = await db.raw()
    try:
        figures: dict[str, float] = {}
        for name, sql in shapes.items():
            times = []
            for _ in range(18):
                plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
                times.append(float(json.loads(plan)[0]["Execution Time"]))
            figures[name] = statistics.median(times[3:])
        return figures
    finally:
        await conn.close()
