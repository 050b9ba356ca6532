"""Repositories and the cache: read-through by id, tag invalidation after commit.

A cached read stores the row's column values (never the ORM object) under
``entity:{table}:{id}`` in the row's workspace scope, tagged ``entity:{table}:{id}`` and
``entity:{table}``, where ``{table}`` is the schema-qualified table name (two models
with one class name never share entries; docs/decisions). A miss is cached too (as
``None``), so hammering an absent id does not hammer the database; creating that id
invalidates its tag like any other write.

The load behind a cached read runs on its own short session from the database (the
primary; one autocommitted statement on PostgreSQL), never on the caller's: callers that
share the load may give up, be cancelled or time out without touching it, and the snapshot
it reads begins after the cache has read the tag generations it will check before storing.
A load never waits for a pooled connection (its callers may hold them all): with none
spare, each caller reads on its own session and nothing is stored.
Rows ``get_many`` loads for its misses come from the caller's transaction and are
returned, not stored: one query cannot prove its snapshot began after every tag's
generation was read.

Every write registers, on its transaction, the tags it touched: ``entity:{table}:{id}``
per row (``entity:{table}`` when a bulk write does not know its ids), ``workspace:{id}``
and ``user:{id}`` for the acting user and for every ``user_columns`` value written. They
are invalidated *after commit* (a rolled-back write, or a rolled-back savepoint,
invalidates nothing), on every instance through the backplane. Rows the ORM flushes in a
transaction where a repository with a cache was made are invalidated the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.pool import QueuePool

from corestone import context
from corestone.cache.keys import EVERY_WORKSPACE, GLOBAL
from corestone.db._driver_errors import raw_connect_error
from corestone.db._read_path import session_options
from corestone.db.models import loaded_instance
from corestone.db.scoping import AllWorkspaces, Workspace
from corestone.errors import UnavailableError

if TYPE_CHECKING:
    from corestone.cache.tiered import TieredCache
    from corestone.db._scope import RepositoryScope
    from corestone.db.transactions import Transaction

__all__ = [
    "LoadSessions",
    "cached_find",
    "cached_get_many",
    "invalidate_after_commit",
    "keeps_snapshot",
    "query_many",
]

LoadSessions = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""A fresh session on the primary, e.g. :meth:`Database.session`."""

_SNAPSHOT_LEVELS: Final = frozenset({"REPEATABLE READ", "SERIALIZABLE"})
_ID_CHUNK: Final = 1000


# -- reads -----------------------------------------------------------------------------


async def cached_find(
    scope: RepositoryScope,
    session: AsyncSession,
    key: Any,
    cache: TieredCache,
    load_sessions: LoadSessions,
    *,
    ttl: float | None,
) -> Any:
    """The row ``key`` through the cache, attached to ``session``; None when absent."""
    workspace = scope.workspace
    assert not isinstance(workspace, AllWorkspaces)  # the repository reads those uncached
    identity = scope.info.identity
    # The read path's options: one autocommitted statement on PostgreSQL (its own
    # snapshot, whatever the caller's level), a deferred BEGIN on SQLite.
    options = session_options(session.bind.dialect.name, isolation=None, read_only=True)

    async def load() -> dict[str, Any] | None:
        # Owned by the shared load, not by any caller: see the module docstring.
        async with load_sessions() as own:
            if not _spare_connection(own):
                raise _NoSpareConnectionError
            try:
                await own.connection(execution_options=options)
            except Exception as error:
                if raw_connect_error(error):  # a 503, as for a transaction's checkout
                    raise UnavailableError("database unreachable", retry_after=1.0) from error
                raise
            return await _load_row(scope, own, key)

    try:
        values = await cache.get_or_load(
            f"entity:{identity}:{key}",
            load,
            ttl=ttl,
            tags=(f"entity:{identity}:{key}", f"entity:{identity}"),
            workspace=_cache_scope(workspace),
        )
    except _NoSpareConnectionError:
        # Its callers (this one too) may hold every pooled connection while they wait:
        # read on the caller's own session instead, and store nothing.
        found = await query_many(scope, session, [key])
        return found[0] if found else None
    if values is None:
        return None
    if isinstance(workspace, int) and values.get("workspace_id") != workspace:
        return None  # belt and braces: the cache scope already keeps workspaces apart
    return await _attach(scope, session, values)


class _NoSpareConnectionError(Exception):
    """The load's pool has no idle connection and may open no more right now."""


def _spare_connection(session: AsyncSession) -> bool:
    """Whether ``session`` can get a pooled connection without waiting for one.

    A load that waited would wait for its own callers' connections when they hold the
    whole pool: every caller stalls until a timeout. Checked just before the checkout,
    with no await in between (a race with another task's checkout is still possible; the
    pool timeout and the cache's ``hard_timeout`` bound that wait).
    """
    pool = session.bind.sync_engine.pool
    if not isinstance(pool, QueuePool):
        return True
    limit = pool._max_overflow  # SQLAlchemy has no public getter for it
    return pool.checkedin() > 0 or limit < 0 or pool.overflow() < limit


async def _load_row(
    scope: RepositoryScope, session: AsyncSession, key: Any
) -> dict[str, Any] | None:
    info = scope.info
    stmt = select(*info.columns.values()).where(info.pk == key, *scope.criteria())
    row = (await session.execute(stmt)).first()
    return None if row is None else dict(zip(info.columns, row, strict=True))


async def cached_get_many(
    scope: RepositoryScope, session: AsyncSession, keys: list[Any], cache: TieredCache
) -> list[Any]:
    """The rows ``keys``: cached ones in one L1/MGET pass, the rest in one query (not stored)."""
    workspace = scope.workspace
    assert not isinstance(workspace, AllWorkspaces)
    identity = scope.info.identity
    cache_keys = {key: f"entity:{identity}:{key}" for key in keys}
    cached = await cache.get_many(cache_keys.values(), workspace=_cache_scope(workspace))
    missing = [key for key in keys if cache_keys[key] not in cached]
    found = await query_many(scope, session, missing) if missing else []
    pk = scope.info.pk_name
    loaded = {getattr(obj, pk): obj for obj in found}
    rows = []
    for key in keys:
        if key in loaded:
            rows.append(loaded[key])
            continue
        values = cached.get(cache_keys[key])
        if values is not None and (
            not isinstance(workspace, int) or values.get("workspace_id") == workspace
        ):
            rows.append(await _attach(scope, session, values))
    return rows


async def query_many(
    scope: RepositoryScope, session: AsyncSession, keys: Sequence[Any]
) -> list[Any]:
    """The rows ``keys`` (coerced, unique) from ``session``, in that order; absent ones skipped."""
    info = scope.info
    options = scope.options()
    found: dict[Any, Any] = {}
    for start in range(0, len(keys), _ID_CHUNK):
        chunk = keys[start : start + _ID_CHUNK]
        stmt = select(info.model).where(info.pk.in_(chunk), *scope.criteria())
        for obj in await session.scalars(stmt, execution_options=options):
            found[getattr(obj, info.pk_name)] = obj
    return [found[k] for k in keys if k in found]


def _cache_scope(workspace: Workspace | None) -> str | int:
    assert not isinstance(workspace, AllWorkspaces)
    return GLOBAL if workspace is None else workspace


async def _attach(scope: RepositoryScope, session: AsyncSession, values: Mapping[str, Any]) -> Any:
    """An instance of the row in ``session``, without a query."""
    model = scope.info.model
    identity = session.identity_map.get(  # already loaded here: keep that one
        session.sync_session.identity_key(model, values[scope.info.pk_name])
    )
    if identity is not None:
        return identity
    # What the ORM does for a loaded row: the values go into the instance's state as
    # loaded (no attribute events, nothing marked changed), then it joins the session as
    # persistent. ``merge(load=False)`` would get there by copying a constructed
    # instance attribute by attribute, at twice the cost of this cached read's rest.
    obj = loaded_instance(model, values)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


def keeps_snapshot(connection: Connection) -> bool:
    """Whether the transaction on ``connection`` reads from one snapshot.

    REPEATABLE READ or SERIALIZABLE: such a transaction must not read through the cache,
    as a cached row may be newer than its snapshot. PostgreSQL only: on SQLite the
    isolation argument is not applied, and reads through the cache behave as at READ
    COMMITTED (docs/repository.md).
    """
    if connection.dialect.name != "postgresql":
        return False
    level = connection.get_execution_options().get("isolation_level")
    if level is None:
        level = connection.default_isolation_level
    return str(level).upper() in _SNAPSHOT_LEVELS


# -- invalidation --------------------------------------------------------------------------


def invalidate_after_commit(
    scope: RepositoryScope,
    tx: Transaction,
    cache: TieredCache,
    *,
    ids: Iterable[Any] = (),
    rows: Iterable[Mapping[str, Any]] = (),
    whole_model: bool = False,
) -> None:
    """Invalidate, once ``tx`` commits, the tags a write touched.

    Also when the commit's outcome is unknown (the connection was lost after COMMIT was
    sent): the write may have landed, and dropping entries is always safe.

    ``ids`` are the rows written (their workspace is the scope's); ``rows`` are written
    rows' values, used for their id, workspace and user columns.
    """
    identity = scope.info.identity
    by_scope: dict[str | int, set[str]] = {}
    default_scope = _tag_scope(scope.workspace, None)
    unknown_workspace = False

    def add(where: str | int | None, tag: str) -> None:
        nonlocal unknown_workspace
        if where is None:
            unknown_workspace = True  # ALL_WORKSPACES without the rows' workspace ids
        else:
            by_scope.setdefault(where, set()).add(tag)

    for id_ in ids:
        add(default_scope, f"entity:{identity}:{id_}")
    pk_name = scope.info.pk_name
    for row in rows:
        where = _tag_scope(scope.workspace, row.get("workspace_id"))
        pk = row.get(pk_name)
        if pk is not None:
            add(where, f"entity:{identity}:{pk}")
        for column in scope.user_columns:
            if row.get(column) is not None:
                add(where, f"user:{row[column]}")
    if whole_model:
        add(default_scope, f"entity:{identity}")
    actor = context.actor_id()
    for where, tags in by_scope.items():
        if isinstance(where, int):
            tags.add(f"workspace:{where}")
        if actor is not None:
            tags.add(f"user:{actor}")
    everywhere = identity if unknown_workspace else None

    async def invalidate() -> None:
        for where, tags in by_scope.items():
            await cache.invalidate_tags(sorted(tags), workspace=where)
        if everywhere is not None:
            # Rows of unknown workspaces: drop the model's cached rows in every workspace.
            await cache.invalidate_pattern(f"entity:{everywhere}:*", workspace=EVERY_WORKSPACE)

    tx.after_commit(invalidate)
    tx.after_unknown(invalidate)


def _tag_scope(workspace: Workspace | None, row_workspace: object) -> str | int | None:
    if isinstance(workspace, int):
        return workspace
    if isinstance(workspace, AllWorkspaces):
        return row_workspace if isinstance(row_workspace, int) else None
    return GLOBAL
