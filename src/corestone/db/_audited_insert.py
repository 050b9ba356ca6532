"""PostgreSQL: an audited single-row insert and its audit row in one statement.

::

    WITH ins AS (INSERT INTO t (…) VALUES (…) RETURNING t.*),
         aud AS (INSERT INTO corestone_audit_log (…)
                 SELECT …, <every field as jsonb> FROM ins)
    SELECT <t's columns> FROM ins

One round trip where the generic path takes two (INSERT … RETURNING, then the audit
INSERT), so a create is BEGIN, this statement and COMMIT. The entry is built from the
row the insert returned — the id, Python and server defaults, whatever a trigger
wrote — as the generic path builds it from the row it reads back, under the rules of
:mod:`._audit_sql`: a model with a field whose JSON only Python writes takes the
generic path.

Like the audited update, the statement is built once per shape (model and the fields
given) and sent as Core: an INSERT has nothing for the session's scoping listener to
scope, and the workspace was checked before (``creation_values``). Python-side column
defaults still fire: SQLAlchemy fills them in for an INSERT inside a CTE as for any
other. A default that takes the execution context (``get_current_parameters()`` fails
for an INSERT inside a CTE) sends its model down the generic path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, insert, select
from sqlalchemy.sql.expression import ClauseElement

from corestone.db._audit_sql import (
    NOISE,
    as_entity,
    audit_cte,
    audit_params,
    cached_statement,
    changes_object,
    field_pair,
    json_exact,
    param_prefix,
    row_columns,
    workspace_exact,
)

if TYPE_CHECKING:
    from sqlalchemy import Column
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.db._model_info import ModelInfo
    from corestone.db._scope import RepositoryScope

__all__ = ["audited_insert", "can_insert_in_sql"]


def can_insert_in_sql(info: ModelInfo, row: Mapping[str, Any]) -> bool:
    """Whether :func:`audited_insert` records exactly what the generic path would.

    Values must be plain (bound as parameters of a statement built once per shape), and
    every field the entry records must have a type whose JSON the server writes as
    Python, or be redacted (the model's part of the answer is worked out once).
    """
    if any(isinstance(value, ClauseElement) for value in row.values()):
        return False
    return _exact(info)


_EXACT: dict[type[Any], bool] = {}


def _exact(info: ModelInfo) -> bool:
    exact = _EXACT.get(info.model)
    if exact is None:
        exact = _EXACT[info.model] = workspace_exact(info) and all(
            (name in NOISE or name in info.audit_exclude or json_exact(column))
            and _context_free(column)
            for name, column in info.columns.items()
        )
    return exact


def _context_free(column: Column[Any]) -> bool:
    """Whether ``column``'s Python default, if any, ignores the execution context.

    SQLAlchemy wraps a default that takes no argument (``functools.update_wrapper``: it
    has ``__wrapped__``); one that takes the context may call
    ``get_current_parameters()``, which works only when the INSERT is the statement
    itself, not a CTE of it.
    """
    default = column.default
    if default is None or not default.is_callable:
        return True
    return hasattr(default.arg, "__wrapped__")  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the statement's SQL depends on: everything else is a bound parameter."""

    model: type[Any]
    names: tuple[str, ...]


def _build(info: ModelInfo, names: tuple[str, ...], prefix: str) -> Select[Any]:
    table = info.table
    values = {
        info.columns[name]: bindparam(info.columns[name].key, type_=info.columns[name].type)
        for name in names
    }
    ins = insert(table).values(values).returning(*table.c).cte("ins")
    # As the generic create: every field, before null (the row did not exist).
    pairs = [
        (name, field_pair(info, name, None, ins.c[column.name]))
        for name, column in info.columns.items()
        if name not in NOISE
    ]
    aud = audit_cte(info, ins, "create", changes_object(pairs), prefix=prefix)
    return select(*row_columns(info, ins)).add_cte(aud)


async def audited_insert(
    scope: RepositoryScope, session: AsyncSession, row: Mapping[str, Any]
) -> Any:
    """Insert ``row`` (checked by ``creation_values``) and its audit entry; the new entity.

    Only when :func:`can_insert_in_sql` says so.
    """
    info = scope.info
    names = tuple(row)
    prefix = param_prefix(info)
    stmt = cached_statement(_Shape(info.model, names), lambda: _build(info, names, prefix))
    params = audit_params(prefix)
    columns = info.columns
    for name, value in row.items():
        params[columns[name].key] = value
    result = await session.execute(stmt, params, execution_options=scope.options())
    return await as_entity(info, session, result.one(), new=True)
