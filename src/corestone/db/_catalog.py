"""What the database says about its own tables: rows, size, columns, indexes, foreign keys.

The plan analysis and the index advisor both need it: "is this table large?", "is this
foreign key column indexed?", "does an index with these leading columns exist already?".
:func:`read_catalog` reads it once per report from the catalogs (PostgreSQL: ``pg_class``,
``pg_index``, ``pg_constraint``, ``pg_stat_user_indexes`` in the current schema; SQLite:
``sqlite_master`` and the ``PRAGMA`` table functions), so it costs a few catalog queries,
never a scan of user data and never a lock on PostgreSQL (row counts and sizes are the
planner's ``reltuples`` and ``relpages``, as of the last VACUUM or ANALYZE).
SQLite keeps no row estimate: its tables are counted, which is fine for an embedded
database and an on-demand report, not for a scrape.

Names read here are the only names the advisor ever puts into DDL, always quoted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Catalog", "IndexInfo", "TableInfo", "read_catalog", "same_predicate"]


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """One index: its key columns in order (``""`` for an expression), and what it is for.

    ``predicate`` is the WHERE of a partial index (as the database prints it), else None.
    ``scans`` is how often it was used since the statistics were reset (PostgreSQL), None
    where the database does not count.
    """

    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False
    primary: bool = False
    predicate: str | None = None
    scans: int | None = None
    size_bytes: int | None = None
    valid: bool = True
    method: str = "btree"


@dataclass(frozen=True, slots=True)
class TableInfo:
    """One table: estimated rows, size, its columns, and its foreign keys' column lists."""

    name: str
    rows: float
    columns: frozenset[str]
    foreign_keys: tuple[tuple[str, ...], ...] = ()
    size_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Catalog:
    """The tables and indexes of one database (the current schema on PostgreSQL)."""

    dialect: str
    tables: Mapping[str, TableInfo] = field(default_factory=dict)
    indexes: tuple[IndexInfo, ...] = ()
    schema: str | None = None
    """The schema the tables are of (``current_schema()``; SQLite's ``main``): a statement's
    table qualified with another one is not any of these."""

    def table(self, name: str) -> TableInfo | None:
        return self.tables.get(name)

    def indexes_of(self, table: str) -> list[IndexInfo]:
        return [i for i in self.indexes if i.table == table and i.valid]

    def serving_index(
        self, table: str, columns: tuple[str, ...], predicate: str | None = None
    ) -> IndexInfo | None:
        """An index that already has ``columns`` as its leading columns, else None.

        A full index serves a partial candidate too; a partial index serves only a
        candidate with the same predicate.
        """
        for index in self.indexes_of(table):
            if index.method != "btree" or index.columns[: len(columns)] != columns:
                continue
            if index.predicate is None or same_predicate(index.predicate, predicate):
                return index
        return None

    def is_foreign_key(self, table: str, column: str) -> bool:
        """Whether ``column`` leads one of ``table``'s foreign keys."""
        info = self.tables.get(table)
        return info is not None and any(fk[:1] == (column,) for fk in info.foreign_keys)

    def has_leading_index(self, table: str, column: str) -> bool:
        return any(i.columns[:1] == (column,) for i in self.indexes_of(table))


_PREDICATE_NOISE = re.compile(r'[\s()"`]')


def same_predicate(a: str | None, b: str | None) -> bool:
    """Whether two partial-index predicates are the same text, parentheses and quotes aside."""
    if a is None or b is None:
        return a is b
    return _PREDICATE_NOISE.sub("", a).lower() == _PREDICATE_NOISE.sub("", b).lower()


async def read_catalog(conn: AsyncConnection) -> Catalog:
    """The catalog of the database ``conn`` is connected to."""
    if conn.dialect.name == "postgresql":
        return await _postgres(conn)
    if conn.dialect.name == "sqlite":
        return await _sqlite(conn)
    return Catalog(conn.dialect.name)


_PG_TABLES = text("""
SELECT c.relname, GREATEST(c.reltuples, 0)::float8,
       c.relpages::bigint * current_setting('block_size')::bigint,
       ARRAY(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
""")
_PG_FOREIGN_KEYS = text("""
SELECT t.relname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE con.contype = 'f' AND n.nspname = current_schema()
""")
_PG_INDEXES = text("""
SELECT t.relname, i.relname, ix.indisunique, ix.indisprimary, ix.indisvalid,
       pg_get_expr(ix.indpred, ix.indrelid), am.amname,
       ARRAY(SELECT COALESCE(a.attname, '')
             FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
             WHERE k.ord <= ix.indnkeyatts ORDER BY k.ord),
       s.idx_scan, i.relpages::bigint * current_setting('block_size')::bigint
FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = ix.indexrelid
WHERE n.nspname = current_schema()
ORDER BY t.relname, i.relname
""")


async def _postgres(conn: AsyncConnection) -> Catalog:
    foreign: dict[str, list[tuple[str, ...]]] = {}
    for table, columns in await conn.execute(_PG_FOREIGN_KEYS):
        foreign.setdefault(table, []).append(tuple(columns))
    tables = {
        name: TableInfo(name, rows, frozenset(columns), tuple(foreign.get(name, ())), size)
        for name, rows, size, columns in await conn.execute(_PG_TABLES)
    }
    indexes = tuple(
        IndexInfo(
            name=name,
            table=table,
            columns=tuple(columns),
            unique=unique,
            primary=primary,
            predicate=predicate,
            scans=scans,
            size_bytes=size,
            valid=valid,
            method=method,
        )
        for table, name, unique, primary, valid, predicate, method, columns, scans, size in (
            await conn.execute(_PG_INDEXES)
        )
    )
    schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
    return Catalog("postgresql", tables, indexes, schema)


_SQLITE_WHERE = re.compile(r"\bWHERE\b(.*)$", re.IGNORECASE | re.DOTALL)


async def _sqlite(conn: AsyncConnection) -> Catalog:
    quote = conn.dialect.identifier_preparer.quote
    rows = await conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    names = [r[0] for r in rows]
    definitions = {
        r[0]: r[1]
        for r in await conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    tables: dict[str, TableInfo] = {}
    indexes: list[IndexInfo] = []
    for name in names:
        q = quote(name)
        count_sql = f"SELECT count(*) FROM {q}"  # noqa: S608 - a quoted name from sqlite_master
        count = (await conn.exec_driver_sql(count_sql)).scalar_one()
        info = list(await conn.exec_driver_sql(f"PRAGMA table_info({q})"))
        columns = frozenset(r[1] for r in info)
        keys = [r for r in info if r[5]]
        if len(keys) == 1 and str(keys[0][2]).upper() == "INTEGER":  # the rowid: no index row
            indexes.append(IndexInfo(f"{name}_rowid", name, (keys[0][1],), True, True))
        fks: dict[int, list[str]] = {}
        for fk in await conn.exec_driver_sql(f"PRAGMA foreign_key_list({q})"):
            fks.setdefault(fk[0], []).append(fk[3])
        tables[name] = TableInfo(name, float(count), columns, tuple(tuple(c) for c in fks.values()))
        for entry in await conn.exec_driver_sql(f"PRAGMA index_list({q})"):
            indexes.append(await _sqlite_index(conn, name, entry, definitions))
    return Catalog("sqlite", tables, tuple(indexes), "main")


async def _sqlite_index(
    conn: AsyncConnection, table: str, entry: Any, definitions: Mapping[str, str]
) -> IndexInfo:
    _, index, unique, origin, partial = entry[:5]
    info = await conn.exec_driver_sql(
        f"PRAGMA index_info({conn.dialect.identifier_preparer.quote(index)})"
    )
    columns = tuple(r[2] or "" for r in sorted(info, key=lambda r: r[0]))
    predicate = None
    if partial:
        found = _SQLITE_WHERE.search(definitions.get(index, ""))
        predicate = found.group(1).strip() if found else "?"
    return IndexInfo(
        name=index,
        table=table,
        columns=columns,
        unique=bool(unique),
        primary=origin == "pk",
        predicate=predicate,
    )
