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
touched, comes back missing from ``RETURNING``, and raises ConflictError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Enum, LargeBinary, Table, insert, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    String,
    Time,
    TypeDecorator,
    TypeEngine,
    Uuid,
)

from corestone.db._read_path import refuse_if_read_only
from corestone.db._writes import creation_values, record
from corestone.db.models import utc_now
from corestone.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.db._scope import RepositoryScope

__all__ = ["create_many", "upsert_many", "upsert_one"]

_COPY_SAFE = (Integer, String, Boolean, DateTime, Date, Time, Float, Numeric, JSON, Uuid, Enum)
_CHUNK = 1000


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


def _base(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    while isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    return type_


def _copy_plan(scope: RepositoryScope, rows: list[dict[str, Any]]) -> list[Column[Any]] | None:
    """The columns to COPY, or None when COPY cannot reproduce what INSERT would do."""
    info = scope.info
    if any(info.pk_name in row for row in rows) or info.pk.autoincrement not in (True, "auto"):
        return None
    given = set().union(*rows)
    plan: list[Column[Any]] = []
    for name, column in info.columns.items():
        if column is info.pk:
            continue
        base = _base(column.type)
        if not isinstance(base, _COPY_SAFE) or isinstance(base, LargeBinary):
            return None
        default = column.default
        if default is not None and not (default.is_scalar or default.is_callable):
            return None
        if name in given:
            partial = any(name not in row for row in rows)
            if partial and default is None and column.server_default is not None:
                return None
            plan.append(column)
        elif default is not None:
            plan.append(column)
    return plan


async def _copy_rows(
    scope: RepositoryScope, session: AsyncSession, rows: list[dict[str, Any]]
) -> list[Any] | None:
    plan = _copy_plan(scope, rows)
    if plan is None:
        return None
    import asyncpg

    info = scope.info
    table = info.table
    # pg_get_serial_sequence parses its first argument as SQL (a name that is not all
    # lower case, or holds a space or a quote, must come quoted) and takes the column
    # name literally.
    quoted = session.bind.dialect.identifier_preparer.format_table(table)
    sequence = await session.scalar(
        text("SELECT pg_get_serial_sequence(:table, :column)"),
        {"table": quoted, "column": info.pk.name},
    )
    if sequence is None:
        return None
    ids: list[int] = list(
        await session.scalar(
            text("SELECT array_agg(nextval(:seq)) FROM generate_series(1, :n)"),
            {"seq": sequence, "n": len(rows)},
        )
        or []
    )
    records = _records(scope, session, plan, ids, rows)
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    try:
        await driver.copy_records_to_table(  # type: ignore[union-attr]
            table.name,
            schema_name=table.schema,
            columns=[info.pk.name, *(column.name for column in plan)],
            records=records,
        )
    except asyncpg.IntegrityConstraintViolationError as error:
        raise ConflictError("the change conflicts with existing data") from error
    except asyncpg.DataError as error:
        raise InvalidInputError("a value does not fit its column", field="rows") from error
    return ids


def _records(
    scope: RepositoryScope,
    session: AsyncSession,
    plan: list[Column[Any]],
    ids: list[int],
    rows: list[dict[str, Any]],
) -> list[tuple[Any, ...]]:
    """COPY records: the id, then each planned column's value, bind-processed.

    A ``utc_now`` default is read once for the whole call (the rows are created together,
    like PostgreSQL's ``now()``); any other callable default runs per row.
    """
    dialect = session.bind.dialect
    now = utc_now()
    getters = []
    for name, column in scope.info.columns.items():
        if column not in plan:
            continue
        processor = column.type.bind_processor(dialect)
        default = column.default
        fallback: Any = None
        per_row: Callable[[Any], Any] | None = None
        if default is not None and default.is_scalar:
            fallback = default.arg  # type: ignore[attr-defined]
        elif default is not None and default.is_callable:
            arg = default.arg  # type: ignore[attr-defined]
            if getattr(arg, "__wrapped__", None) is utc_now:
                fallback = now
            else:
                per_row = arg
        if fallback is not None and processor is not None:
            fallback = processor(fallback)
        getters.append((name, processor, fallback, per_row))
    records = []
    for id_, row in zip(ids, rows, strict=True):
        values: list[Any] = [id_]
        for name, processor, fallback, per_row in getters:
            if name in row:
                value = row[name]
                values.append(processor(value) if processor and value is not None else value)
            elif per_row is not None:
                value = per_row(None)
                values.append(processor(value) if processor and value is not None else value)
            else:
                values.append(fallback)
        records.append(tuple(values))
    return records


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
) -> Any:
    info = scope.info
    table: Table = info.table
    dialect_insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    stmt = dialect_insert(scope.info.model if entity else table)
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
    from sqlalchemy import and_

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
    obj = (
        await session.scalars(stmt.returning(scope.info.model), execution_options=options)
    ).one_or_none()
    if obj is None:
        raise ConflictError("the row conflicts with one this call may not update")
    if scope.info.audited:
        old = before.get(tuple(row[k] for k in keys))
        await record(
            scope.info,
            session,
            "create" if old is None else "update",
            [(old, scope.info.attribute_values(obj))],
        )
    return obj


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
    before = await _before_by_keys(scope, session, keys, prepared) if audited else {}
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in prepared:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    names = list(scope.info.columns)
    written: list[dict[str, Any]] = []
    for group_names, group in groups.items():
        stmt = _upsert_statement(scope, session, keys, group_names, entity=False)
        returning = list(scope.info.columns.values()) if audited else [scope.info.pk]
        result = await session.execute(
            stmt.returning(*returning), [_by_column(scope, row) for row in group]
        )
        if audited:
            written += [dict(zip(names, r, strict=True)) for r in result]
        elif len(result.all()) != len(group):
            raise ConflictError("a row conflicts with one this call may not update")
    if audited:
        if len(written) != len(prepared):
            raise ConflictError("a row conflicts with one this call may not update")
        created: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
        updated: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
        for state in written:
            old = before.get(tuple(state[k] for k in keys))
            (created if old is None else updated).append((old, state))
        await record(scope.info, session, "create", created)
        await record(scope.info, session, "update", updated)
    return len(prepared)
