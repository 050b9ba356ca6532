"""Tenant scoping and soft-delete hiding, enforced by the session rather than by callers.

A repository filters its own statements by the workspace in context. That alone does not
cover what the ORM loads on its own — joined and selectin eager loads, lazy loads,
many-to-many collections, ``has()``/``any()`` criteria written by hand — so
:func:`scope_session` also installs a ``do_orm_execute`` listener on the session that adds
``with_loader_criteria`` for :class:`~corestone.db.models.TenantMixin` (``workspace_id ==``
the scope) and :class:`~corestone.db.models.SoftDeleteMixin` (``deleted_at IS NULL``) to
every ORM SELECT, UPDATE and DELETE. The integration tests run the shapes where that
recipe is known to leak (SQLAlchemy issues #7862, #10245, #13070) on both databases.

Where the workspace comes from, in order: an explicit ``corestone_workspace`` execution
option (what repositories pass), else :func:`corestone.context.workspace_id`. With
neither, a statement that touches a tenant model raises
:class:`~corestone.errors.WorkspaceRequiredError` instead of reading every tenant — unless
the caller opted out on purpose with :data:`ALL_WORKSPACES`.

Not covered: ``text()`` SQL and Core statements on bare ``Table`` objects are not ORM
statements; scope those by hand.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Final, final

from sqlalchemy import ColumnElement, Select, Table, TableClause, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, registry, with_loader_criteria
from sqlalchemy.sql import visitors
from sqlalchemy.sql.selectable import Alias, FromClause, Join

from corestone import context
from corestone.db.models import SoftDeleteMixin, TenantMixin
from corestone.errors import WorkspaceRequiredError

__all__ = [
    "ALL_WORKSPACES",
    "INCLUDE_DELETED_OPTION",
    "WORKSPACE_OPTION",
    "AllWorkspaces",
    "ScopableSession",
    "Workspace",
    "resolve_workspace",
    "scope_session",
]


@final
class AllWorkspaces:
    """The type of :data:`ALL_WORKSPACES`; compare with ``is``."""

    _instance: AllWorkspaces | None = None

    def __new__(cls) -> AllWorkspaces:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL_WORKSPACES"


ALL_WORKSPACES: Final = AllWorkspaces()
"""An explicit opt-out of tenant scoping: reads see every workspace (admin jobs, migrations)."""

Workspace = int | AllWorkspaces
"""A resolved scope: one workspace id, or every workspace on purpose."""

WORKSPACE_OPTION: Final = "corestone_workspace"
INCLUDE_DELETED_OPTION: Final = "corestone_include_deleted"
_INSTALLED: Final = "corestone_scoped"


def resolve_workspace(explicit: int | str | AllWorkspaces | None = None) -> Workspace:
    """The workspace to scope by: ``explicit`` if given, else the one in context.

    Raises :class:`~corestone.errors.WorkspaceRequiredError` when there is none, or when
    it is not an integer id (a bug upstream: ids are validated where they enter).
    """
    candidate: object = explicit if explicit is not None else context.workspace_id()
    if candidate is None:
        raise WorkspaceRequiredError(
            "no workspace in context: bind one (corestone.context.bind(workspace=...)) "
            "or pass ALL_WORKSPACES on purpose"
        )
    if isinstance(candidate, AllWorkspaces):
        return candidate
    if isinstance(candidate, bool):
        raise WorkspaceRequiredError("the workspace must be an integer id, not a bool")
    try:
        return int(str(candidate))
    except ValueError:
        raise WorkspaceRequiredError(
            f"the workspace in context is not an integer id: {candidate!r}"
        ) from None


def scope_session(session: AsyncSession | Session) -> None:
    """Make every ORM statement on ``session`` tenant-scoped and blind to soft-deleted rows.

    Idempotent. Repositories call it on the session they are given; call it yourself on a
    session you query directly if it may touch tenant models.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if sync.info.get(_INSTALLED):
        return
    sync.info[_INSTALLED] = True
    if not isinstance(sync, ScopableSession):
        event.listen(sync, "do_orm_execute", _add_criteria)


class ScopableSession(Session):
    """The session class of a :class:`~corestone.db.Database`: scoping costs a flag.

    Its listener is registered once, on the class, and scopes only the sessions that
    :func:`scope_session` switched on. A listener per session, as any other session
    gets, costs SQLAlchemy's event registry more per request than a cached read.
    """


def _add_criteria_if_scoped(state: ORMExecuteState) -> None:
    if state.session.info.get(_INSTALLED):
        _add_criteria(state)


# Loader options are immutable: build each once (per workspace) instead of per statement,
# which is most of this listener's cost on a hot ``get``.
@functools.lru_cache(maxsize=4096)
def _tenant_criteria(workspace: int) -> Any:
    return with_loader_criteria(
        TenantMixin, lambda cls: cls.workspace_id == workspace, include_aliases=True
    )


_LIVE_ONLY: Final = with_loader_criteria(
    SoftDeleteMixin, lambda cls: cls.deleted_at.is_(None), include_aliases=True
)


def _touches_tenant_model(state: ORMExecuteState) -> bool:
    return any(issubclass(mapper.class_, TenantMixin) for mapper in state.all_mappers)


def _add_criteria(state: ORMExecuteState) -> None:
    # Core statements on bare tables carry no entities to scope (see the module docs).
    if not state.is_orm_statement or not (state.is_select or state.is_update or state.is_delete):
        return
    options = state.execution_options
    scope: Any = options.get(WORKSPACE_OPTION)
    if scope is None:
        scope = context.workspace_id()
        if scope is None:
            if _touches_tenant_model(state):
                raise WorkspaceRequiredError(
                    "an ORM statement touches a tenant model with no workspace in context"
                )
        else:
            scope = resolve_workspace(scope)
    criteria = []
    if scope is not None and not isinstance(scope, AllWorkspaces):
        criteria.append(_tenant_criteria(int(scope)))
    # A column load refreshes an object already loaded (and vetted); hiding it now that
    # it is soft-deleted would turn a refresh into ObjectDeletedError.
    if not options.get(INCLUDE_DELETED_OPTION) and not state.is_column_load:
        criteria.append(_LIVE_ONLY)
    include_deleted = bool(options.get(INCLUDE_DELETED_OPTION)) or state.is_column_load
    statement = state.statement
    # A relationship load is built by the ORM from a statement this listener already saw
    # (subqueryload embeds it whole); its loader criteria propagate on their own.
    if (scope is not None or not include_deleted) and not state.is_relationship_load:
        statement = _scope_nested_selects(state, statement, scope, include_deleted)
    if criteria:
        statement = statement.options(*criteria)
    state.statement = statement


# with_loader_criteria reaches the entities the ORM compiles, but not the SELECTs that
# relationship comparators build (``Folder.notes.any(...)``, ``Note.folder.has(...)``:
# SQLAlchemy #13070): those are plain Core subqueries on the mapped tables. This pass adds
# the same criteria to every nested SELECT, for each tenant or soft-delete table it reads.

_TableFlags = dict[Table, tuple[type[Any], bool, bool]]
_registry_tables: weakref.WeakKeyDictionary[registry, tuple[int, _TableFlags]] = (
    weakref.WeakKeyDictionary()
)


def _flags_for(state: ORMExecuteState) -> _TableFlags:
    flags: _TableFlags = {}
    for registry_ in {mapper.registry for mapper in state.all_mappers}:
        mappers = registry_.mappers
        cached = _registry_tables.get(registry_)
        if cached is None or cached[0] != len(mappers):
            table_flags: _TableFlags = {}
            for mapper in mappers:
                tenant = issubclass(mapper.class_, TenantMixin)
                soft = issubclass(mapper.class_, SoftDeleteMixin)
                if (tenant or soft) and isinstance(mapper.local_table, Table):
                    table_flags[mapper.local_table] = (mapper.class_, tenant, soft)
            cached = (len(mappers), table_flags)
            _registry_tables[registry_] = cached
        flags.update(cached[1])
    return flags


def _table_sources(source: FromClause) -> list[FromClause]:
    """The tables (or table aliases) a FROM element reads directly, not via a subquery."""
    if isinstance(source, Join):
        return [*_table_sources(source.left), *_table_sources(source.right)]
    if isinstance(source, Table):
        return [source]
    if isinstance(source, Alias) and isinstance(source.element, Table):
        return [source]
    return []


def _has_nested_select(root: Any) -> bool:
    """Whether any SELECT sits below ``root``; never descends into tables (the hot path)."""
    stack = list(root.get_children())
    while stack:
        element = stack.pop()
        if isinstance(element, Select):
            return True
        if not isinstance(element, TableClause):
            stack.extend(element.get_children())
    return False


def _scope_nested_selects(
    state: ORMExecuteState, statement: Any, scope: Any, include_deleted: bool
) -> Any:
    if not _has_nested_select(statement):
        return statement
    flags = _flags_for(state)
    if not flags:
        return statement
    workspace = None if scope is None or isinstance(scope, AllWorkspaces) else int(scope)

    visited: list[Select[Any]] = []

    def visit_select(select: Select[Any]) -> None:
        visited.append(select)

    # Loader options are not clause elements and some cannot be cloned: leave them be.
    stop_on = set(getattr(statement, "_with_options", ()))
    scoped = visitors.cloned_traverse(statement, {"stop_on": stop_on}, {"select": visit_select})
    # Children are visited before their parent, so a root SELECT comes last; it is left to
    # with_loader_criteria (criteria on it would confuse the ORM's eager-load adaptation).
    if visited and visited[-1] is scoped:
        visited.pop()
    for select in visited:
        added: list[ColumnElement[bool]] = []
        for source in select.get_final_froms():
            for table in _table_sources(source):
                base = table.element if isinstance(table, Alias) else table
                entry = flags.get(base)  # type: ignore[call-overload]
                if entry is None:
                    continue
                _model, tenant, soft = entry
                if tenant and workspace is not None:
                    added.append(table.c.workspace_id == workspace)
                if soft and not include_deleted:
                    added.append(table.c.deleted_at.is_(None))
        if added:
            # These are cloned_traverse's private copies: extending their WHERE is safe.
            select._where_criteria += tuple(added)
    return scoped


event.listen(ScopableSession, "do_orm_execute", _add_criteria_if_scoped)
