"""Persistence suite: corestone's repository against asyncpg, SQLAlchemy and advanced-alchemy.

``uv run python -m bench persistence [--quick]`` on the PostgreSQL at ``SERVER_URL``
(issue 3's "Benchmark"). It creates a database ``bench_persistence_<random>``, measures,
and drops it, also on error.

- insert N rows (100,000; quick 10,000) into an empty table by six paths, rows/s;
- ``upsert_many`` of the same N rows over a full table (every row updated);
- page P (1,000; quick 100) of size 50 of an N-row table: OFFSET vs keyset (raw
  SQLAlchemy), corestone ``page`` (offset + total) and ``list`` (keyset, signed cursor),
  advanced-alchemy ``list_and_count`` (its default window-function count, and two
  queries); keyset page 1 too. Median ms;
- ``get`` by id: corestone vs a bare ``session.get``, identity map emptied; median µs;
- one ``update`` in its own transaction, audited vs not; median µs.

Every check is a target from the issue, computed from this run; a missed one prints
MISS and the runner exits 1.
"""

from __future__ import annotations

import os

from sqlalchemy import text

from bench._persistence_inserts import INSERTERS, measure_insert, measure_upsert
from bench._persistence_reads import (
    measure_audited_update,
    measure_get,
    measure_pages,
    measure_server_ms,
)
from bench._persistence_setup import BenchDatabase, bench_database, copy_columns, copy_records
from bench._persistence_setup import task_rows as make_rows
from bench._report import Report

__all__ = ["run"]

_PAGE_SIZE = 50


async def run(quick: bool) -> Report:
    rows_n = 10_000 if quick else 100_000
    page = 100 if quick else 1_000
    rounds = 1 if quick else 2
    page_calls = 30 if quick else 60
    get_calls = 300 if quick else 2_000
    update_calls = 100 if quick else 500

    load_before = os.getloadavg()[0]
    report = Report(suite="persistence", columns=("operation", "contender", "figure", "unit"))
    rows = make_rows(rows_n)
    async with bench_database() as db:
        rates: dict[str, float] = {}
        for key, (label, inserter) in INSERTERS.items():
            seconds = await measure_insert(db, inserter, rows, rounds)
            rates[key] = rows_n / seconds
            report.rows.append((f"insert {rows_n:,} rows", label, rates[key], "rows/s"))
            report.results[f"insert_{key}_rows_per_s"] = rates[key]
        upsert_s = await measure_upsert(db, rows, rounds)
        create_s = rows_n / rates["corestone_create_many"]
        report.rows.append(
            (
                f"upsert {rows_n:,} rows",
                "corestone upsert_many (all update)",
                rows_n / upsert_s,
                "rows/s",
            )
        )
        report.results["upsert_corestone_upsert_many_rows_per_s"] = rows_n / upsert_s

        await _fill(db, rows)
        pages = await measure_pages(db, page=page, size=_PAGE_SIZE, calls=page_calls)
        labels = {
            "raw_offset": f"SQLAlchemy OFFSET, page {page}",
            "raw_keyset": f"SQLAlchemy keyset, page {page}",
            "raw_keyset_page1": "SQLAlchemy keyset, page 1",
            "corestone_page": f"corestone page() + total, page {page}",
            "corestone_list": f"corestone list() cursor, page {page}",
            "corestone_list_page1": "corestone list(), page 1",
            "advanced_alchemy_list_and_count": f"advanced-alchemy list_and_count, page {page}",
            "advanced_alchemy_list_and_count_2q": (
                f"advanced-alchemy list_and_count (2 queries), page {page}"
            ),
        }
        for key, label in labels.items():
            report.rows.append(
                (f"page of {_PAGE_SIZE}, {rows_n:,} rows", label, pages.ms[key], "ms")
            )
            report.results[f"page_{key}_ms"] = pages.ms[key]

        server = await measure_server_ms(db, page=page, size=_PAGE_SIZE)
        for key, label in (
            ("offset", f"OFFSET, page {page}"),
            ("keyset", f"keyset, page {page}"),
            ("keyset_page1", "keyset, page 1"),
            ("count", "count(*) of the table"),
            ("window_count", f"OFFSET + count(*) OVER (), page {page}"),
        ):
            report.rows.append(("server time (EXPLAIN ANALYZE)", label, server[key], "ms"))
            report.results[f"server_{key}_ms"] = server[key]

        gets = await measure_get(db, rows=rows_n, calls=get_calls)
        report.rows.append(("get by id", "SQLAlchemy session.get", gets["session_get"], "µs"))
        report.rows.append(("get by id", "corestone Repository.get", gets["corestone_get"], "µs"))
        report.results["get_session_get_us"] = gets["session_get"]
        report.results["get_corestone_get_us"] = gets["corestone_get"]

        updates = await measure_audited_update(db, calls=update_calls)
        for key, label in (("update_unaudited", "unaudited"), ("update_audited", "audited")):
            report.rows.append(
                ("update 1 row + commit", f"corestone update, {label}", updates[key], "µs")
            )
            report.results[f"{key}_us"] = updates[key]

    _checks(report, rates, upsert_s / create_s, pages.ms, gets, updates, page)
    report.notes += [
        f"{rows_n:,} rows; inserts best of {rounds}, each timed to the end of COMMIT into an "
        "emptied table; the ORM paths include building model instances",
        f"pages: median of {page_calls} calls, size {_PAGE_SIZE}, ordered by id, identity map "
        "emptied before each call; every contender's ids checked equal",
        f"get: median of {get_calls} random ids; update: median of {update_calls}, one "
        "transaction each",
        f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end, on "
        f"{os.cpu_count()} CPUs (PostgreSQL on the same machine)",
    ]
    return report


async def _fill(db: BenchDatabase, rows: list[dict[str, object]]) -> None:
    """The paging table: ``rows`` by COPY into an emptied table (ids 1..n), then ANALYZE."""
    await db.truncate()
    conn = await db.raw()
    try:
        await conn.copy_records_to_table(
            "bench_tasks", records=copy_records(rows), columns=copy_columns()
        )
    finally:
        await conn.close()
    await db.analyze()
    async with db.engine.connect() as check:
        if await check.scalar(text("SELECT max(id) FROM bench_tasks")) != len(rows):
            raise AssertionError("the paging table's ids are not 1..n")


def _checks(
    report: Report,
    rates: dict[str, float],
    upsert_ratio: float,
    ms: dict[str, float],
    gets: dict[str, float],
    updates: dict[str, float],
    page: int,
) -> None:
    ours = rates["corestone_create_many"]
    report.check(
        "create_many rows/s ÷ asyncpg COPY rows/s", ours / rates["asyncpg_copy"], ">=", 0.75
    )
    report.check(
        "create_many rows/s ÷ advanced-alchemy add_many rows/s",
        ours / rates["advanced_alchemy_add_many"],
        ">=",
        10,
    )
    report.check(
        "create_many rows/s ÷ SQLAlchemy Core insert rows/s",
        ours / rates["sqlalchemy_core_insert"],
        ">",
        1,
    )
    report.check(
        "create_many rows/s ÷ ORM add_all rows/s", ours / rates["sqlalchemy_orm_add_all"], ">", 1
    )
    report.check("upsert_many time ÷ create_many time", upsert_ratio, "<=", 1.5)
    if page >= 1_000:  # at --quick's page 100 OFFSET skips only 4,950 rows: no contest
        report.check(
            f"raw keyset page {page} ÷ raw OFFSET page {page}",
            ms["raw_keyset"] / ms["raw_offset"],
            "<=",
            0.1,
        )
    report.check(
        f"corestone list page {page} ÷ its page 1",
        ms["corestone_list"] / ms["corestone_list_page1"],
        "<=",
        1.2,
    )
    report.check(
        f"corestone list page {page} ÷ raw keyset page {page}",
        ms["corestone_list"] / ms["raw_keyset"],
        "<=",
        2,
    )
    report.check(
        f"corestone page()+total ÷ raw OFFSET page {page} alone",
        ms["corestone_page"] / ms["raw_offset"],
        "<=",
        2,
    )
    report.check(
        "corestone page()+total ÷ advanced-alchemy list_and_count",
        ms["corestone_page"] / ms["advanced_alchemy_list_and_count"],
        "<=",
        1,
    )
    report.check(
        "corestone get ÷ session.get", gets["corestone_get"] / gets["session_get"], "<=", 1.3
    )
    report.check(
        "audited update ÷ unaudited update",
        updates["update_audited"] / updates["update_unaudited"],
        "<=",
        1.3,
    )
