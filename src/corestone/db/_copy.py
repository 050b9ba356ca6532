"""Binary ``COPY`` of repository rows on PostgreSQL, for ``create_many`` and ``upsert_many``.

asyncpg's ``copy_records_to_table`` on the transaction's own connection streams rows
with no per-row statement. COPY does not run SQLAlchemy's defaults or type processing,
so :func:`copy_plan` says which columns to send (given ones, plus those with a Python
default, filled here as INSERT would) or None when COPY cannot reproduce what INSERT
would do: a column type COPY cannot take as is, a SQL default, or rows that leave out a
column with only a server default while others set it. Callers then fall back to
batched INSERTs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Enum, LargeBinary, text
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
from corestone.db.models import utc_now
from corestone.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.db._scope import RepositoryScope

__all__ = ["copy_plan", "copy_records", "copy_to", "reserve_ids"]

_COPY_SAFE = (Integer, String, Boolean, DateTime, Date, Time, Float, Numeric, JSON, Uuid, Enum)


def _base(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    while isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    return type_


def copy_plan(
    scope: RepositoryScope, rows: Sequence[dict[str, Any]], *, with_pk: bool
) -> list[Column[Any]] | None:
    """The columns to COPY, in table order, or None when COPY cannot stand in for INSERT.

    ``with_pk``: the rows carry their ids (an upsert on the id); otherwise they must not,
    and the key is left to the caller (reserved ids) or the table's default.
    """
    info = scope.info
    pk_given = any(info.pk_name in row for row in rows)
    if pk_given and not with_pk:
        return None
    if not pk_given and info.pk.autoincrement not in (True, "auto"):
        return None
    given = set().union(*rows)
    plan: list[Column[Any]] = []
    for name, column in info.columns.items():
        if column is info.pk and not pk_given:
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


async def reserve_ids(
    scope: RepositoryScope, session: AsyncSession, count: int
) -> list[Any] | None:
    """``count`` ids from the table's sequence in one query, or None if it has none."""
    info = scope.info
    # pg_get_serial_sequence parses its first argument as SQL (a name that is not all
    # lower case, or holds a space or a quote, must come quoted) and takes the column
    # name literally.
    quoted = session.bind.dialect.identifier_preparer.format_table(info.table)
    sequence = await session.scalar(
        text("SELECT pg_get_serial_sequence(:table, :column)"),
        {"table": quoted, "column": info.pk.name},
    )
    if sequence is None:
        return None
    return list(
        await session.scalar(
            text("SELECT array_agg(nextval(:seq)) FROM generate_series(1, :n)"),
            {"seq": sequence, "n": count},
        )
        or []
    )


def copy_records(
    scope: RepositoryScope,
    session: AsyncSession,
    plan: list[Column[Any]],
    rows: Sequence[dict[str, Any]],
    ids: Sequence[Any] | None = None,
) -> list[tuple[Any, ...]]:
    """COPY records: the reserved id if ``ids``, then each planned column, bind-processed.

    A ``utc_now`` default is read once for the whole call (the rows are created together,
    like PostgreSQL's ``now()``); any other callable default runs per row.
    """
    dialect = session.bind.dialect
    now = utc_now()
    getters = []
    for name, column in scope.info.columns.items():
        if column not in plan:
            continue
        # The dialect's own implementation, as execution uses: the generic type's
        # processor may differ (Numeric's turns a Decimal into a float on asyncpg).
        processor = column.type.dialect_impl(dialect).bind_processor(dialect)
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
        # A type that evaluates None (JSON unless none_as_null) turns it into its own
        # value, as INSERT does: JSON ``null``, not SQL NULL.
        evaluate_none = column.type.should_evaluate_none
        getters.append((name, processor, fallback, per_row, evaluate_none))
    records = []
    for index, row in enumerate(rows):
        values: list[Any] = [] if ids is None else [ids[index]]
        for name, processor, fallback, per_row, evaluate_none in getters:
            if name in row:
                value = row[name]
            elif per_row is not None:
                value = per_row(None)
            else:
                values.append(fallback)
                continue
            if processor is not None and (value is not None or evaluate_none):
                value = processor(value)
            values.append(value)
        records.append(tuple(values))
    return records


async def copy_to(
    session: AsyncSession,
    table: str,
    schema: str | None,
    columns: Sequence[str],
    records: list[tuple[Any, ...]],
) -> None:
    """COPY ``records`` into ``table`` on the session's connection, driver errors mapped.

    COPY goes around SQLAlchemy's statement events, so the read path's write check is
    made here: a read-only (autocommitted) session refuses it.
    """
    import asyncpg

    refuse_if_read_only(session, "a COPY was run")
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    try:
        await driver.copy_records_to_table(  # type: ignore[union-attr]
            table, schema_name=schema, columns=list(columns), records=records
        )
    except asyncpg.IntegrityConstraintViolationError as error:
        raise ConflictError("the change conflicts with existing data") from error
    except asyncpg.DataError as error:
        raise InvalidInputError("a value does not fit its column", field="rows") from error
