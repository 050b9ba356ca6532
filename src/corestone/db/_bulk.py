"""Bulk writes of a repository, on a :class:`~._scope.RepositoryScope`: create_many, upserts.

``create_many`` on PostgreSQL reserves every id from the table's sequence in one query
(``nextval`` over ``generate_series``), then streams the rows with asyncpg's binary
``COPY`` on the transaction's own connection: no per-row round trip and no per-row
statement, and the ids are known without ``RETURNING``. It falls back to batched
multi-row ``INSERT … RETURNING`` (SQLAlchemy's insertmanyvalues) when COPY cannot be
used: SQLite, a caller-supplied id, a column default that is SQL rather than a Python
value, a column type COPY cannot take as is, or rows that leave out a column with only
a server default while others set it.

Upserts are ``INSERT … ON CONFLICT (key) DO UPDATE … WHERE`` the existing row is in the
caller's workspace and not soft-deleted. A row that conflicts with anything else is not
touched, comes back missing from ``RETURNING``, and raises ConflictError. On PostgreSQL
``upsert_many`` first COPYs the rows into a temporary table (dropped at commit) and runs
one ``INSERT … SELECT … ON CONFLICT`` from it, so its statements do not grow with the
rows; batches of ``INSERT … ON CONFLICT`` remain for SQLite, rows that set different
fields, and columns COPY cannot take.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Table, and_, insert, literal_column, select, text, tuple_
from sqlalchemy import column as column_clause
from sqlalchemy import table as table_clause
from sqlalchemy.dialects import postgresql, sqlite

from corestone.db._copy import copy_plan, copy_records, copy_to, reserve_ids
from corestone.db._read_path import refuse_if_read_only
from corestone.db._writes import creation_values, record
from corestone.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.db._scope import RepositoryScope

__all__ = ["create_many", "upsert_many", "upsert_one"]

_CHUNK = 1000
_temp_names = itertools.count(1)


async def create_many(
    scope: RepositoryScope, session: AsyncSession, rows: Sequence[Mapping[str, Any]]
) -> list[Any]:
    _require_rows(rows)
    prepared = [creation_values(scope, row, i) for i, row in enumerate(rows)]
    if not prepared:
        return []
    ids: list[Any] | None = None
    if _dialect(session) == "postgresql":
        # COPY goes to the driver directly, past the read path's statement checks.
        refuse_if_read_only(session, "a COPY was run")
        ids = await _copy_rows(scope, session, prepared)
    if ids is None:
        ids = await _insert_rows(scope, session, prepared)
    if scope.info.audited:
        after = [{**row, scope.info.pk_name: id_} for row, id_ in zip(prepared, ids, strict=True)]
        await record(scope.info, session, "create", [(None, state) for state in after])
    return ids


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name


async def _insert_rows(
    scope: RepositoryScope, session: AsyncSession, rows: list[dict[str, Any]]
) -> list[Any]:
    """Batched INSERT … RETURNING id, one statement per group of rows with the same keys."""
    table = scope.info.table
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(tuple(sorted(row)), []).append(index)
    ids: list[Any] = [None] * len(rows)
    for indexes in groups.values():
        stmt = insert(table).returning(scope.info.pk, sort_by_parameter_order=True)
        result = await session.execute(stmt, [_by_column(scope, rows[i]) for i in indexes])
        for index, id_ in zip(indexes, result.scalars(), strict=True):
            ids[index] = id_
    return ids


def _by_column(scope: RepositoryScope, row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` keyed by column key, as Core statements on the table expect.

    Rows are keyed by attribute name; a column named otherwise (``mapped_column("Na me")``)
    would otherwise be left out of the INSERT without a word.
    """
    columns = scope.info.columns
    return {columns[name].key: value for name, value in row.items()}


async def _copy_rows(
    scope: RepositoryScope, session: AsyncSession, rows: list[dict[str, Any]]
) -> list[Any] | None:
    """COPY new rows with ids reserved from the sequence; None when COPY cannot be used."""
    plan = copy_plan(scope, rows, with_pk=False)
    if plan is None:
        return None
    ids = await reserve_ids(scope, session, len(rows))
    if ids is None:
        return None
    table = scope.info.table
    columns = [scope.info.pk.name, *(column.name for column in plan)]
    records = copy_records(scope, session, plan, rows, ids)
    await copy_to(session, table.name, table.schema, columns, records)
    return ids


def _require_rows(rows: object) -> None:
    if isinstance(rows, Mapping | str | bytes) or not isinstance(rows, Sequence):
        raise InvalidInputError("rows must be a list of objects", field="rows", rule="type")


# -- upserts -----------------------------------------------------------------------------


def _conflict_keys(scope: RepositoryScope, on: Sequence[str]) -> list[str]:
    keys = list(on or (scope.info.pk_name,))
    for key in keys:
        if key not in scope.info.columns:
            raise InvalidInputError(f"unknown upsert key {key!s:.64}", field="on", rule="unknown")
    return keys


def _upsert_statement(
    scope: RepositoryScope,
    session: AsyncSession,
    keys: list[str],
    row_names: Sequence[str],
    *,
    entity: bool,
    source: tuple[list[str], Any] | None = None,
) -> Any:
    """INSERT … ON CONFLICT DO UPDATE of ``row_names``; from ``(columns, SELECT)`` if given."""
    info = scope.info
    table: Table = info.table
    dialect_insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    stmt = dialect_insert(scope.info.model if entity else table)
    if source is not None:
        stmt = stmt.from_select(*source)
    excluded = stmt.excluded
    updates: dict[str, Any] = {
        info.columns[name].name: excluded[info.columns[name].name]
        for name in row_names
        if name not in keys and name != info.pk_name
    }
    for name, column in info.columns.items():
        if name not in row_names and column.onupdate is not None and column.onupdate.is_callable:
            updates[column.name] = column.onupdate.arg(None)  # type: ignore[attr-defined]
    if info.versioned:
        updates["version"] = table.c.version + 1
    where = []
    if info.tenant:
        where.append(table.c.workspace_id == excluded.workspace_id)
    if info.soft_delete:
        where.append(table.c.deleted_at.is_(None))
    if not updates:
        updates[info.pk.name] = table.c[info.pk.name]
    key_columns = [info.columns[k] for k in keys]
    return stmt.on_conflict_do_update(index_elements=key_columns, set_=updates, where=_and(where))


def _and(criteria: list[Any]) -> Any:
    return and_(*criteria) if criteria else None


async def _before_by_keys(
    scope: RepositoryScope, session: AsyncSession, keys: list[str], rows: list[dict[str, Any]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    info = scope.info
    names = list(info.columns)
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    key_columns = [info.columns[k] for k in keys]
    values = [tuple(row.get(k) for k in keys) for row in rows]
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        stmt = select(*info.columns.values()).where(
            tuple_(*key_columns).in_(chunk), *scope.criteria()
        )
        result = await session.execute(stmt.with_for_update(), execution_options=scope.options())
        for row in result:
            state = dict(zip(names, row, strict=True))
            found[tuple(state[k] for k in keys)] = state
    return found


def _prepare_upserts(
    scope: RepositoryScope, rows: Sequence[Mapping[str, Any]], keys: list[str]
) -> list[dict[str, Any]]:
    prepared = [creation_values(scope, row, i) for i, row in enumerate(rows)]
    seen: set[tuple[Any, ...]] = set()
    for index, row in enumerate(prepared):
        if any(k not in row for k in keys):
            raise InvalidInputError(
                f"rows[{index}] lacks the upsert key", field=f"rows[{index}]", rule="required"
            )
        key = tuple(row[k] for k in keys)
        if key in seen:
            raise InvalidInputError(
                f"rows[{index}] repeats an upsert key", field=f"rows[{index}]", rule="unique"
            )
        seen.add(key)
    return prepared


async def upsert_one(
    scope: RepositoryScope, session: AsyncSession, values: Mapping[str, Any], *, on: Sequence[str]
) -> Any:
    keys = _conflict_keys(scope, on)
    [row] = _prepare_upserts(scope, [values], keys)
    before = await _before_by_keys(scope, session, keys, [row]) if scope.info.audited else {}
    stmt = _upsert_statement(scope, session, keys, list(row), entity=True).values(row)
    options = {**scope.options(), "populate_existing": True}
    # Whether the row was inserted: on SQLite (one writer) the lock-read already knows.
    postgresql_row = _dialect(session) == "postgresql"
    inserted: ColumnElement[bool] = literal_column("xmax = 0" if postgresql_row else "1")
    found = (
        await session.execute(stmt.returning(scope.info.model, inserted), execution_options=options)
    ).one_or_none()
    if found is None:
        raise ConflictError("the row conflicts with one this call may not update")
    obj = found[0]
    if scope.info.audited:
        old = before.get(tuple(row[k] for k in keys))
        if old is None and not found[1]:  # created concurrently: see upsert_many
            raise ConflictError(
                "a row was created concurrently with this upsert; retry the transaction"
            )
        await record(
            scope.info,
            session,
            "create" if old is None else "update",
            [(old, scope.info.attribute_values(obj))],
        )
    return obj


async def _copy_upsert(
    scope: RepositoryScope,
    session: AsyncSession,
    keys: list[str],
    rows: list[dict[str, Any]],
    returning: list[Any],
) -> tuple[list[Any], dict[tuple[Any, ...], dict[str, Any]]] | None:
    """PostgreSQL: COPY the rows into a temporary table, then one INSERT … SELECT … ON CONFLICT.

    Returns the RETURNING rows and, for an audited model, the rows as they were before
    (read and locked by joining the temporary table); None when COPY cannot be used
    (rows with different fields, or a column COPY cannot take). The table is dropped at
    commit; its name is unique per call, so a transaction may upsert many times.
    """
    names = list(rows[0])
    if any(len(row) != len(names) or any(n not in row for n in names) for row in rows):
        return None
    plan = copy_plan(scope, rows, with_pk=True)
    if plan is None:
        return None
    info = scope.info
    quote = session.bind.dialect.identifier_preparer
    temp_name = f"corestone_upsert_{next(_temp_names)}"
    columns = [c.name for c in plan]
    listed = ", ".join(quote.quote(c) for c in columns)
    # Identifiers only, each quoted by the dialect: nothing here comes from a caller.
    # Identifiers only, each quoted by the dialect: nothing here comes from a caller.
    source = quote.format_table(info.table)
    create = f"CREATE TEMPORARY TABLE {quote.quote(temp_name)} ON COMMIT DROP AS SELECT "
    await session.execute(text(f"{create}{listed} FROM {source} WITH NO DATA"))
    await copy_to(session, temp_name, None, columns, copy_records(scope, session, plan, rows))
    temp = table_clause(temp_name, *(column_clause(c) for c in columns))
    before: dict[tuple[Any, ...], dict[str, Any]] = {}
    if info.audited:
        on = and_(*(info.columns[k] == temp.c[info.columns[k].name] for k in keys))
        found = await session.execute(
            select(*info.columns.values())
            .join_from(info.table, temp, on)
            .where(*scope.criteria())
            .with_for_update(of=info.table),
            execution_options=scope.options(),
        )
        for row in found:
            state = dict(zip(info.columns, row, strict=True))
            before[tuple(state[k] for k in keys)] = state
    stmt = _upsert_statement(
        scope, session, keys, names, entity=False, source=(columns, select(*temp.c))
    )
    return list(await session.execute(stmt.returning(*returning))), before


async def upsert_many(
    scope: RepositoryScope,
    session: AsyncSession,
    rows: Sequence[Mapping[str, Any]],
    *,
    on: Sequence[str],
) -> int:
    _require_rows(rows)
    keys = _conflict_keys(scope, on)
    prepared = _prepare_upserts(scope, rows, keys)
    if not prepared:
        return 0
    audited = scope.info.audited
    returning: list[Any] = list(scope.info.columns.values()) if audited else [scope.info.pk]
    on_postgresql = _dialect(session) == "postgresql"
    if audited and on_postgresql:
        # Whether each row was inserted (a new tuple has no xmax) or updated: see below.
        returning.append(literal_column("xmax = 0").label("cs_inserted"))
    copied = None
    if on_postgresql:
        copied = await _copy_upsert(scope, session, keys, prepared, returning)
    if copied is not None:
        results, before = copied
    else:
        before = await _before_by_keys(scope, session, keys, prepared) if audited else {}
        results = await _insert_upserts(scope, session, keys, prepared, returning)
    if len(results) != len(prepared):
        raise ConflictError("a row conflicts with one this call may not update")
    if audited:
        names = list(scope.info.columns)
        created: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
        updated: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
        for result in results:
            state = dict(zip(names, result[: len(names)], strict=True))
            old = before.get(tuple(state[k] for k in keys))
            if old is None and on_postgresql and not result[-1]:
                # A concurrent transaction inserted this key after the lock-read and
                # committed: ON CONFLICT waited, then updated a row whose "before" was
                # never read. Logging it as created would lose that update's history.
                raise ConflictError(
                    "a row was created concurrently with this upsert; retry the transaction"
                )
            (created if old is None else updated).append((old, state))
        await record(scope.info, session, "create", created)
        await record(scope.info, session, "update", updated)
    return len(prepared)


async def _insert_upserts(
    scope: RepositoryScope,
    session: AsyncSession,
    keys: list[str],
    rows: list[dict[str, Any]],
    returning: list[Any],
) -> list[Any]:
    """Batched INSERT … ON CONFLICT, one statement per group of rows with the same fields."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    results: list[Any] = []
    for group_names, group in groups.items():
        stmt = _upsert_statement(scope, session, keys, group_names, entity=False)
        result = await session.execute(
            stmt.returning(*returning), [_by_column(scope, row) for row in group]
        )
        results += list(result)
    return results
