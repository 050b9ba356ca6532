"""PostgreSQL: an audited single-row update, its lock and its audit row in one statement.

::

    WITH old AS (SELECT … FROM t WHERE id = :id AND <scope> FOR UPDATE),
         upd AS (UPDATE t SET … FROM old WHERE t.id = old.id AND <scope>
                 RETURNING t.*, old.* AS old_*),
         aud AS (INSERT INTO corestone_audit_log (…)
                 SELECT …, <changes as jsonb> FROM upd WHERE <changes> <> '{}')
    SELECT <t's columns> FROM upd

One round trip where the generic path takes two (UPDATE … RETURNING, then the audit
INSERT). ``old`` takes the row lock and sees the latest committed row, so the "before"
is exactly what the update replaced. The changes are built by the server, so this path
is taken only when every field that can change has a type whose JSON the server writes
exactly as :func:`~corestone.db.audit.audit_value` would (integers, strings, booleans,
UTC timestamps), or is redacted; anything else (dates, decimals, enums, custom types)
takes the generic path, so the log never depends on which path wrote it (the rules and
the pieces shared with the audited insert: :mod:`._audit_sql`).

Cost is what decided the rest: the statement is built once per shape (model, fields,
action, scope) with bound parameters, so SQLAlchemy reuses its cache key and compiled
form; it is sent as Core (the scoping is in its WHERE, and the session's listener would
re-walk every nested SELECT), and the row becomes the session's instance by
``merge(load=False)``, with no SQL.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, bindparam, case, select
from sqlalchemy import update as sql_update
from sqlalchemy.sql.expression import ClauseElement

from corestone.db._audit_sql import (
    NOISE,
    as_entity,
    audit_cte,
    audit_params,
    cached_statement,
    changes_object,
    empty_changes,
    field_pair,
    json_exact,
    merge_objects,
    param_prefix,
    row_columns,
    workspace_exact,
)
from corestone.db._model_info import ModelInfo
from corestone.db.audit import AuditAction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.db._scope import RepositoryScope

__all__ = ["audited_update", "can_audit_in_sql"]


def _changing(info: ModelInfo, values: Collection[str]) -> list[str]:
    """The attribute names an UPDATE setting ``values`` can change, noise left out."""
    names = [name for name in info.columns if name in values]
    names += [
        name
        for name, column in info.columns.items()
        if name not in values and column.onupdate is not None
    ]
    return [name for name in names if name not in NOISE]


def can_audit_in_sql(info: ModelInfo, values: Mapping[str, Any]) -> bool:
    """Whether :func:`audited_update` records exactly what the generic path would.

    Values must be plain (bound as parameters of a statement built once per shape), and
    every field that can change must have a type whose JSON the server writes as Python.
    """
    if any(isinstance(value, ClauseElement) for value in values.values()):
        return False
    return workspace_exact(info) and all(
        name in info.audit_exclude or json_exact(info.columns[name])
        for name in _changing(info, values)
    )


def _set(info: ModelInfo, names: Sequence[str], prefix: str) -> dict[Any, Any]:
    """SET clause: each given field and each Python ``onupdate`` from a bound parameter."""
    table = info.table
    changes: dict[Any, Any] = {}
    for name, column in info.columns.items():
        if name in names or (column.onupdate is not None and column.onupdate.is_callable):
            changes[column] = bindparam(f"{prefix}set_{name}", type_=column.type)
    if info.versioned:
        changes[table.c.version] = table.c.version + 1
    return changes


def _changes(
    info: ModelInfo, names: Sequence[str], old: Mapping[str, Any], new: Any
) -> ColumnElement[Any]:
    """``{field: {"before", "after"}}`` as jsonb, for the fields whose values differ."""
    parts: list[ColumnElement[Any]] = []
    for name in names:
        column = info.columns[name].name
        before, after = old[column], new[column]
        parts.append(
            case(
                (
                    before.is_distinct_from(after),
                    changes_object([(name, field_pair(info, name, before, after))]),
                ),
                else_=empty_changes(),
            )
        )
    return merge_objects(parts)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the statement's SQL depends on: everything else is a bound parameter."""

    model: type[Any]
    names: tuple[str, ...]
    action: AuditAction
    workspace: bool
    live_only: bool
    versioned: bool


def _build(info: ModelInfo, shape: _Shape, prefix: str) -> Select[Any]:
    table = info.table
    pk = info.pk.name
    key = bindparam(f"{prefix}id", type_=info.pk.type)
    criteria: list[ColumnElement[bool]] = [info.pk == key]
    if shape.workspace:
        workspace = bindparam(f"{prefix}ws", type_=table.c.workspace_id.type)
        criteria.append(table.c.workspace_id == workspace)
    if shape.live_only:
        criteria.append(table.c.deleted_at.is_(None))
    if shape.versioned:
        version = bindparam(f"{prefix}version", type_=table.c.version.type)
        criteria.append(table.c.version == version)
    old = select(*table.c).where(*criteria).with_for_update().cte("old")
    # ``upd`` returns the new and the old values side by side under one set of names: the
    # old ones get a prefix no column name starts the same way with (a table may well
    # have ``status`` and ``old_status``).
    old_ = "old_"
    while any(f"{old_}{c.name}" in table.c for c in table.c):
        old_ = f"_{old_}"
    upd = (
        sql_update(table)
        # The criteria again on the outer row, so it is found by index, not by joining the
        # whole table against the CTE (a generic plan did exactly that).
        .where(table.c[pk] == old.c[pk], *criteria)
        .values(_set(info, shape.names, prefix))
        # The old values come back beside the new ones (PostgreSQL returns columns of
        # UPDATE … FROM), so ``old`` is read once and the audit INSERT reads only ``upd``.
        .returning(*table.c, *(old.c[c.name].label(f"{old_}{c.name}") for c in table.c))
        .cte("upd")
    )
    before = {c.name: upd.c[f"{old_}{c.name}"] for c in table.c}
    changes = _changes(info, _changing(info, shape.names), before, upd.c)
    # An update that changed nothing logs nothing.
    skip = shape.action == "update"
    aud = audit_cte(info, upd, shape.action, changes, prefix=prefix, skip_unchanged=skip)
    return select(*row_columns(info, upd)).add_cte(aud)


async def audited_update(
    scope: RepositoryScope,
    session: AsyncSession,
    key: Any,
    values: Mapping[str, Any],
    *,
    expected_version: int | None,
    action: AuditAction,
) -> Any:
    """Lock, update and audit row ``key`` in ``scope``; the updated entity or None.

    None when no row matched (absent, out of scope, deleted or at another version): the
    caller finds out which. Only when :func:`can_audit_in_sql` says so.
    """
    info = scope.info
    workspace = scope.workspace if isinstance(scope.workspace, int) else None
    shape = _Shape(
        model=info.model,
        names=tuple(values),
        action=action,
        workspace=workspace is not None,
        live_only=info.soft_delete and not scope.include_deleted,
        versioned=expected_version is not None,
    )
    prefix = param_prefix(info)
    params = audit_params(prefix)
    params[f"{prefix}id"] = key
    if workspace is not None:
        params[f"{prefix}ws"] = workspace
    if expected_version is not None:
        params[f"{prefix}version"] = expected_version
    for name, column in info.columns.items():
        if name in values:
            params[f"{prefix}set_{name}"] = values[name]
        elif column.onupdate is not None and column.onupdate.is_callable:
            params[f"{prefix}set_{name}"] = column.onupdate.arg(None)  # type: ignore[attr-defined]
    # Sent as Core: the session's scoping listener would re-walk (clone, compile) every
    # nested SELECT of an ORM statement, three times this statement's own cost, and the
    # scope is already in every WHERE above.
    stmt = cached_statement(shape, lambda: _build(info, shape, prefix))
    result = await session.execute(stmt, params, execution_options=scope.options())
    row = result.one_or_none()
    if row is None:
        return None
    return await as_entity(info, session, row)
