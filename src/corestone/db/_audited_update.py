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
exactly as :func:`~corestone.db.audit.audit_value` would (integers, strings, booleans),
or is redacted; anything else (dates, decimals, enums, custom types) takes the generic
path, so the log never depends on which path wrote it.

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

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Enum,
    Integer,
    Select,
    String,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.sql.expression import ClauseElement

from corestone import context
from corestone.db.audit import REDACTED, AuditAction, audit_table
from corestone.db.models import utc_now

if TYPE_CHECKING:
    from sqlalchemy import Column
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.db._model_info import ModelInfo
    from corestone.db._scope import RepositoryScope

__all__ = ["audited_update", "can_audit_in_sql"]

# Changes the audit log leaves out (as in _writes): they change on every write.
_NOISE = frozenset({"version", "updated_at"})
_EXACT_JSON = (Integer, String, Boolean)


def _changing(info: ModelInfo, values: Collection[str]) -> list[str]:
    """The attribute names an UPDATE setting ``values`` can change, noise left out."""
    names = [name for name in info.columns if name in values]
    names += [
        name
        for name, column in info.columns.items()
        if name not in values and column.onupdate is not None
    ]
    return [name for name in names if name not in _NOISE]


def _exact(column: Column[Any]) -> bool:
    # Exact types only: a TypeDecorator may change the value on the way out, and an
    # Enum stores the member's name where audit_value records its value.
    type_ = column.type
    return isinstance(type_, _EXACT_JSON) and not isinstance(type_, Enum)


def can_audit_in_sql(info: ModelInfo, values: Mapping[str, Any]) -> bool:
    """Whether :func:`audited_update` records exactly what the generic path would.

    Values must be plain (bound as parameters of a statement built once per shape), and
    every field that can change must have a type whose JSON the server writes as Python.
    """
    if any(isinstance(value, ClauseElement) for value in values.values()):
        return False
    return all(
        name in info.audit_exclude or _exact(info.columns[name]) for name in _changing(info, values)
    )


def _set(info: ModelInfo, names: Sequence[str]) -> dict[Any, Any]:
    """SET clause: each given field and each Python ``onupdate`` from a bound parameter."""
    table = info.table
    changes: dict[Any, Any] = {}
    for name, column in info.columns.items():
        if name in names or (column.onupdate is not None and column.onupdate.is_callable):
            changes[column] = bindparam(f"cs_set_{name}", type_=column.type)
    if info.versioned:
        changes[table.c.version] = table.c.version + 1
    return changes


def _name(name: str) -> ColumnElement[str]:
    return cast(literal(name, String), String)


def _changes(
    info: ModelInfo, names: Sequence[str], old: Mapping[str, Any], new: Any
) -> ColumnElement[Any]:
    """``{field: {"before", "after"}}`` as jsonb, for the fields whose values differ."""
    empty = literal_column("'{}'::jsonb", JSONB)
    redacted = func.jsonb_build_object(
        _name("before"), _name(REDACTED), _name("after"), _name(REDACTED)
    )
    parts: list[ColumnElement[Any]] = []
    for name in names:
        column = info.columns[name].name
        before, after = old[column], new[column]
        pair = (
            redacted
            if name in info.audit_exclude
            else func.jsonb_build_object(
                _name("before"), func.to_jsonb(before), _name("after"), func.to_jsonb(after)
            )
        )
        parts.append(
            case(
                (before.is_distinct_from(after), func.jsonb_build_object(_name(name), pair)),
                else_=empty,
            )
        )
    result: ColumnElement[Any] = parts[0] if parts else empty
    for part in parts[1:]:
        result = result.op("||", return_type=JSONB)(part)
    return result


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the statement's SQL depends on: everything else is a bound parameter."""

    model: type[Any]
    names: tuple[str, ...]
    action: AuditAction
    workspace: bool
    live_only: bool
    versioned: bool


_STATEMENTS: dict[_Shape, Select[Any]] = {}
_MAX_STATEMENTS = 512


def _statement(info: ModelInfo, shape: _Shape) -> Select[Any]:
    """The statement for ``shape``, built once: SQLAlchemy then reuses its cache key and
    compiled form, where building the tree per call cost more than the saved round trip."""
    stmt = _STATEMENTS.get(shape)
    if stmt is None:
        if len(_STATEMENTS) >= _MAX_STATEMENTS:
            _STATEMENTS.clear()
        stmt = _STATEMENTS[shape] = _build(info, shape)
    return stmt


def _build(info: ModelInfo, shape: _Shape) -> Select[Any]:
    table = info.table
    pk = info.pk.name
    criteria: list[ColumnElement[bool]] = [info.pk == bindparam("cs_id", type_=info.pk.type)]
    if shape.workspace:
        criteria.append(table.c.workspace_id == bindparam("cs_ws", type_=table.c.workspace_id.type))
    if shape.live_only:
        criteria.append(table.c.deleted_at.is_(None))
    if shape.versioned:
        criteria.append(table.c.version == bindparam("cs_version", type_=table.c.version.type))
    old = select(*table.c).where(*criteria).with_for_update().cte("old")
    # ``upd`` returns the new and the old values side by side under one set of names: the
    # old ones get a prefix no column name starts the same way with (a table may well
    # have ``status`` and ``old_status``).
    prefix = "old_"
    while any(f"{prefix}{c.name}" in table.c for c in table.c):
        prefix = f"_{prefix}"
    upd = (
        sql_update(table)
        # The criteria again on the outer row, so it is found by index, not by joining the
        # whole table against the CTE (a generic plan did exactly that).
        .where(table.c[pk] == old.c[pk], *criteria)
        .values(_set(info, shape.names))
        # The old values come back beside the new ones (PostgreSQL returns columns of
        # UPDATE … FROM), so ``old`` is read once and the audit INSERT reads only ``upd``.
        .returning(*table.c, *(old.c[c.name].label(f"{prefix}{c.name}") for c in table.c))
        .cte("upd")
    )
    before = {c.name: upd.c[f"{prefix}{c.name}"] for c in table.c}
    changes = _changes(info, _changing(info, shape.names), before, upd.c)
    audit = audit_table()
    entry = select(
        bindparam("cs_at", type_=audit.c.at.type),
        literal(info.entity, String),
        cast(upd.c[pk], String),
        literal(shape.action, String),
        bindparam("cs_actor", type_=String()),
        upd.c.workspace_id if info.tenant else literal(None, Integer),
        cast(changes, JSON),
        bindparam("cs_correlation", type_=String()),
    ).select_from(upd)
    if shape.action == "update":  # an update that changed nothing logs nothing
        entry = entry.where(changes != literal_column("'{}'::jsonb", JSONB))
    names = ["at", "entity", "entity_id", "action", "actor_id", "workspace_id", "changes"]
    aud = insert(audit).from_select([*names, "correlation_id"], entry).cte("aud")
    return select(*(upd.c[c.name] for c in info.columns.values())).add_cte(aud)


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
    actor = context.actor_id()
    correlation = context.correlation_id()
    params: dict[str, Any] = {
        "cs_id": key,
        "cs_at": utc_now(),
        "cs_actor": actor[:64] if actor else None,
        "cs_correlation": (
            correlation[: context.MAX_CORRELATION_ID_LENGTH] if correlation else None
        ),
    }
    if workspace is not None:
        params["cs_ws"] = workspace
    if expected_version is not None:
        params["cs_version"] = expected_version
    for name, column in info.columns.items():
        if name in values:
            params[f"cs_set_{name}"] = values[name]
        elif column.onupdate is not None and column.onupdate.is_callable:
            params[f"cs_set_{name}"] = column.onupdate.arg(None)  # type: ignore[attr-defined]
    # Sent as Core: the session's scoping listener would re-walk (clone, compile) every
    # nested SELECT of an ORM statement, three times this statement's own cost, and the
    # scope is already in every WHERE above.
    result = await session.execute(
        _statement(info, shape), params, execution_options=scope.options()
    )
    row = result.one_or_none()
    if row is None:
        return None
    return await _as_entity(info, session, row)


async def _as_entity(info: ModelInfo, session: AsyncSession, row: Any) -> Any:
    """The session's instance for ``row``, refreshed with its values (``populate_existing``).

    ``merge(load=False)`` copies the loaded state onto the instance the session already
    holds for that identity (or adds this one) without SQL, and leaves it clean.
    """
    obj = info.model.__mapper__.class_manager.new_instance()
    for name, value in zip(info.columns, row, strict=True):
        setattr(obj, name, value)
    make_transient_to_detached(obj)
    return await session.merge(obj, load=False)
