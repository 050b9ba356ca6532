"""Single-row and by-filter writes of a repository, on a :class:`~._scope.RepositoryScope`.

Every statement carries the repository's scope twice: in its own WHERE (so the write
cannot touch another workspace's row even on a session without the scoping listener)
and through the session's ``do_orm_execute`` listener. UPDATE/DELETE use ``RETURNING``
the entity with ``populate_existing``, so objects already in the session see the change.

Audit "before" values come from a ``SELECT … FOR UPDATE`` taken just before the write
(PostgreSQL locks the rows, so nobody changes them in between; SQLite writers are
serialized by ``BEGIN IMMEDIATE``). Unaudited writes skip that read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, insert, select
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update

from corestone import context
from corestone.db._audited_insert import audited_insert, can_insert_in_sql
from corestone.db._audited_update import audited_update, can_audit_in_sql
from corestone.db._model_info import ModelInfo
from corestone.db.audit import REDACTED, AuditAction, audit_value, write_audit
from corestone.db.models import utc_now
from corestone.errors import InvalidInputError, StaleVersionError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from corestone.db._scope import RepositoryScope

__all__ = [
    "audit_changes",
    "create",
    "creation_values",
    "delete",
    "purge",
    "record",
    "require_mapping",
    "restore",
    "update",
    "update_many",
]

# Changes the audit log leaves out: they change on every write and say nothing new.
_NOISE = frozenset({"version", "updated_at"})

_WRITE = {"synchronize_session": False, "populate_existing": True}


def require_mapping(value: object, field: str) -> None:
    """Raise InvalidInputError unless ``value`` is a mapping (callers may pass parsed JSON)."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{field} must be an object", field=field, rule="type")


def creation_values(
    scope: RepositoryScope, values: Mapping[str, Any], index: int | None
) -> dict[str, Any]:
    """``values`` checked for a new row, with the workspace filled in from the scope."""
    if type(values) is not dict:
        require_mapping(values, "values" if index is None else f"rows[{index}]")
    prefix = "" if index is None else f"rows[{index}]."
    info = scope.info
    row = dict(values)
    info.check_create(row, field_prefix=prefix)
    if info.tenant:
        workspace = scope.workspace
        given = row.get("workspace_id")
        if isinstance(workspace, int):
            if given is not None and given != workspace:
                raise InvalidInputError(
                    f"{prefix}workspace_id must be the current workspace",
                    field=f"{prefix}workspace_id",
                    rule="workspace",
                )
            row["workspace_id"] = workspace
        elif given is None:
            raise InvalidInputError(
                f"{prefix}workspace_id is required with ALL_WORKSPACES",
                field=f"{prefix}workspace_id",
                rule="required",
            )
    return row


def audit_changes(
    info: ModelInfo, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """``{field: {"before", "after"}}`` for the fields that differ, excluded ones redacted."""
    names = (
        list((before or after or {}).keys())
        if before is None or after is None
        else [name for name in after if name in before]
    )
    changes: dict[str, dict[str, Any]] = {}
    for name in names:
        old = None if before is None else before.get(name)
        new = None if after is None else after.get(name)
        if name in _NOISE or (before is not None and after is not None and old == new):
            continue
        if name in info.audit_exclude:
            changes[name] = {"before": REDACTED, "after": REDACTED}
        else:
            changes[name] = {"before": audit_value(old), "after": audit_value(new)}
    return changes


async def record(
    info: ModelInfo,
    session: AsyncSession,
    action: AuditAction,
    entries: Sequence[tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]],
) -> None:
    """Write audit rows for ``(before, after)`` pairs if the model is audited."""
    if not info.audited:
        return
    rows = []
    for before, after in entries:
        state = after if after is not None else before
        assert state is not None
        changes = audit_changes(info, before, after)
        if not changes and action == "update":
            continue
        rows.append((state[info.pk_name], state.get("workspace_id"), changes))
    await write_audit(session, entity=info.entity, action=action, rows=rows)


async def create(scope: RepositoryScope, session: AsyncSession, values: Mapping[str, Any]) -> Any:
    row = creation_values(scope, values, None)
    info = scope.info
    if info.audited and session.bind.dialect.name == "postgresql" and can_insert_in_sql(info, row):
        # One statement: the row and its audit entry (_audited_insert).
        return await audited_insert(scope, session, row)
    stmt = insert(info.model).values(row).returning(info.model)
    obj = (await session.scalars(stmt, execution_options=scope.options())).one()
    if info.audited:
        await record(info, session, "create", [(None, info.attribute_values(obj))])
    return obj


def _set_values(info: ModelInfo, values: Mapping[str, Any]) -> dict[str, Any]:
    changes = dict(values)
    table = info.table
    if info.versioned:
        changes["version"] = table.c.version + 1
    return changes


async def _before(
    info: ModelInfo,
    session: AsyncSession,
    criteria: Sequence[ColumnElement[bool]],
    options: Mapping[str, Any],
) -> dict[Any, dict[str, Any]]:
    """Current values of the rows matching ``criteria``, locked on PostgreSQL."""
    columns = list(info.columns.values())
    stmt = select(*columns).where(*criteria).with_for_update()
    result = await session.execute(stmt, execution_options=options)
    names = list(info.columns)
    return {row[names.index(info.pk_name)]: dict(zip(names, row, strict=True)) for row in result}


async def _why_missing(
    scope: RepositoryScope,
    session: AsyncSession,
    key: Any,
    expected_version: int | None,
    include_deleted: bool = False,
) -> Exception:
    criteria = [scope.info.pk == key, *scope.criteria(include_deleted=include_deleted)]
    options = scope.options(include_deleted=include_deleted)
    if expected_version is not None and scope.info.versioned:
        current = await session.scalar(
            select(scope.info.table.c.version).where(*criteria), execution_options=options
        )
        if current is not None:
            return StaleVersionError(
                f"{scope.info.entity} {key} is at version {current}, not {expected_version}",
                current_version=int(current),
            )
    return scope.not_found(key)


async def update(
    scope: RepositoryScope,
    session: AsyncSession,
    id_: object,
    values: Mapping[str, Any],
    *,
    expected_version: int | None,
    action: AuditAction = "update",
) -> Any:
    key = scope.coerce_id(id_)
    require_mapping(values, "values")
    scope.info.check_update(values)
    _check_expected(scope, expected_version)
    criteria = [scope.info.pk == key, *scope.criteria()]
    if expected_version is not None:
        criteria.append(scope.info.table.c.version == expected_version)
    options = scope.options()
    if not values:
        current = await session.scalar(
            select(scope.info.model).where(*criteria), execution_options=options
        )
        if current is None:
            raise await _why_missing(scope, session, key, expected_version)
        return current
    if (
        scope.info.audited
        and session.bind.dialect.name == "postgresql"
        and can_audit_in_sql(scope.info, values)
    ):
        # One statement: lock, update and the audit row (_audited_update).
        obj = await audited_update(
            scope, session, key, values, expected_version=expected_version, action=action
        )
        if obj is None:
            raise await _why_missing(scope, session, key, expected_version)
        return obj
    if scope.info.audited and session.bind.dialect.name == "postgresql":
        # A field whose audit JSON only Python writes: UPDATE … RETURNING old, then INSERT.
        obj, old = await _update_returning_before(scope.info, session, criteria, values, options)
    else:  # unaudited, or SQLite: lock-read, UPDATE, INSERT
        before = await _before(scope.info, session, criteria, options) if scope.info.audited else {}
        stmt = sql_update(scope.info.model).where(*criteria).values(_set_values(scope.info, values))
        result = await session.scalars(
            stmt.returning(scope.info.model), execution_options={**options, **_WRITE}
        )
        obj, old = result.one_or_none(), before.get(key)
    if obj is None:
        raise await _why_missing(scope, session, key, expected_version)
    if scope.info.audited:
        await record(scope.info, session, action, [(old, scope.info.attribute_values(obj))])
    return obj


async def _update_returning_before(
    info: ModelInfo,
    session: AsyncSession,
    criteria: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
    options: Mapping[str, Any],
) -> tuple[Any, dict[str, Any] | None]:
    """PostgreSQL: lock, read the old row and update it in one statement.

    ``UPDATE t SET … FROM (SELECT … FOR UPDATE) old WHERE t.id = old.id RETURNING t.*,
    old.*`` — the subquery takes the row lock and sees the latest committed version, so
    the "before" it returns is exactly what the update replaced. One round trip instead
    of a SELECT and an UPDATE. (SQLite cannot return columns of a FROM table.)
    """
    old = select(*info.columns.values()).where(*criteria).with_for_update().subquery("old")
    stmt = (
        sql_update(info.model)
        # The criteria again on the outer row, so it is found by index, not by joining the
        # whole table against the subquery (a generic plan did exactly that).
        .where(info.pk == old.c[info.pk.name], *criteria)
        .values(_set_values(info, values))
        .returning(info.model, *(old.c[c.name] for c in info.columns.values()))
    )
    row = (await session.execute(stmt, execution_options={**options, **_WRITE})).first()
    if row is None:
        return None, None
    return row[0], dict(zip(info.columns, row[1:], strict=True))


def _require_version(expected: object) -> None:
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
        raise InvalidInputError("version must be an integer", field="version", rule="type")


async def update_many(
    scope: RepositoryScope,
    session: AsyncSession,
    filters: Mapping[str, Any],
    values: Mapping[str, Any],
) -> int:
    require_mapping(filters, "filter")
    require_mapping(values, "values")
    if not values:
        raise InvalidInputError("values must not be empty", field="values", rule="not_empty")
    scope.info.check_update(values)
    criteria = [*scope.criteria(), scope.filter(filters)]
    options = scope.options()
    before: dict[Any, dict[str, Any]] = {}
    if scope.info.audited:
        before = await _before(scope.info, session, criteria, options)
        if not before:
            return 0
        # Only the rows that were read and locked: a row inserted since is left alone.
        criteria.append(scope.info.pk.in_(list(before)))
    stmt = sql_update(scope.info.model).where(*criteria).values(_set_values(scope.info, values))
    result = await session.scalars(
        stmt.returning(scope.info.model), execution_options={**options, **_WRITE}
    )
    objs = list(result)
    if scope.info.audited:
        pk = scope.info.pk_name
        await record(
            scope.info,
            session,
            "update",
            [(before.get(getattr(o, pk)), scope.info.attribute_values(o)) for o in objs],
        )
    return len(objs)


async def delete(
    scope: RepositoryScope, session: AsyncSession, id_: object, *, expected_version: int | None
) -> dict[str, Any]:
    """Delete one row; return its values as they were written (for cache invalidation)."""
    if not scope.info.soft_delete:
        return await purge(scope, session, id_, action="delete", expected_version=expected_version)
    _check_expected(scope, expected_version)
    key = scope.coerce_id(id_)
    criteria = [scope.info.pk == key, *scope.criteria(include_deleted=False)]
    if expected_version is not None:
        # In the UPDATE's own WHERE: the check and the delete are one statement.
        criteria.append(scope.info.table.c.version == expected_version)
    values = _set_values(scope.info, {"deleted_at": utc_now(), "deleted_by": context.actor_id()})
    stmt = sql_update(scope.info.model).where(*criteria).values(values).returning(scope.info.model)
    options = {**scope.options(include_deleted=True), **_WRITE}
    obj = (await session.scalars(stmt, execution_options=options)).one_or_none()
    if obj is None:
        raise await _why_missing(scope, session, key, expected_version)
    after = scope.info.attribute_values(obj)
    if scope.info.audited:
        before = {**after, "deleted_at": None, "deleted_by": None}
        await record(scope.info, session, "delete", [(before, after)])
    return after


async def restore(
    scope: RepositoryScope,
    session: AsyncSession,
    id_: object,
    *,
    expected_version: int | None = None,
) -> Any:
    """Undo a soft delete; with ``expected_version``, only while the row is at that version.

    The version is in the UPDATE's WHERE, so the check and the restore are one statement.
    When nothing was restored, the row is read to say why: absent (404), at another
    version (stale), or not deleted at all (returned as it is, if the version matches).
    """
    if not scope.info.soft_delete:
        raise TypeError(f"{scope.info.entity} has no soft delete (add SoftDeleteMixin)")
    _check_expected(scope, expected_version)
    key = scope.coerce_id(id_)
    table = scope.info.table
    criteria = [
        scope.info.pk == key,
        table.c.deleted_at.is_not(None),
        *scope.criteria(include_deleted=True),
    ]
    if expected_version is not None:
        criteria.append(table.c.version == expected_version)
    values = _set_values(scope.info, {"deleted_at": None, "deleted_by": None})
    options = {**scope.options(include_deleted=True), **_WRITE}
    before = await _before(scope.info, session, criteria, options) if scope.info.audited else {}
    stmt = sql_update(scope.info.model).where(*criteria).values(values).returning(scope.info.model)
    obj = (await session.scalars(stmt, execution_options=options)).one_or_none()
    if obj is None:
        return await _not_restored(scope, session, key, expected_version)
    if scope.info.audited:
        await record(
            scope.info, session, "restore", [(before.get(key), scope.info.attribute_values(obj))]
        )
    return obj


async def _not_restored(
    scope: RepositoryScope, session: AsyncSession, key: Any, expected_version: int | None
) -> Any:
    """The live row a restore that changed nothing answers, or why there is none."""
    current = await session.scalar(
        select(scope.info.model).where(scope.info.pk == key, *scope.criteria(include_deleted=True)),
        execution_options=scope.options(include_deleted=True),
    )
    if current is None:
        raise scope.not_found(key)
    if expected_version is not None and current.version != expected_version:
        raise StaleVersionError(
            f"{scope.info.entity} {key} is at version {current.version}, not {expected_version}",
            current_version=int(current.version),
        )
    if current.deleted_at is not None:  # deleted again since the UPDATE looked
        raise scope.not_found(key)
    return current


def _check_expected(scope: RepositoryScope, expected_version: int | None) -> None:
    """``expected_version`` is an integer, on a model that has a version to compare."""
    if expected_version is not None and not scope.info.versioned:
        raise TypeError(f"{scope.info.entity} has no version column (add VersionMixin)")
    _require_version(expected_version)


async def purge(
    scope: RepositoryScope,
    session: AsyncSession,
    id_: object,
    *,
    action: AuditAction = "purge",
    expected_version: int | None = None,
) -> dict[str, Any]:
    key = scope.coerce_id(id_)
    include_deleted = action == "purge"
    criteria = [scope.info.pk == key, *scope.criteria(include_deleted=include_deleted)]
    _check_expected(scope, expected_version)
    if expected_version is not None:
        criteria.append(scope.info.table.c.version == expected_version)
    columns = list(scope.info.columns.values())
    stmt = sql_delete(scope.info.model).where(*criteria).returning(*columns)
    options = {
        **scope.options(include_deleted=include_deleted),
        "synchronize_session": "fetch",
    }
    row = (await session.execute(stmt, execution_options=options)).one_or_none()
    if row is None:
        raise await _why_missing(scope, session, key, expected_version, include_deleted)
    before = dict(zip(scope.info.columns, row, strict=True))
    if scope.info.audited:
        await record(scope.info, session, action, [(before, None)])
    return before
