"""Repositories and the cache: read-through by id, tag invalidation after commit.

A cached read stores the row's column values (never the ORM object) under
``entity:{Model}:{id}`` in the row's workspace scope, tagged ``entity:{Model}:{id}`` and
``entity:{Model}``. A miss is cached too (as ``None``), so hammering an absent id does not
hammer the database; creating that id invalidates its tag like any other write.

Every write registers, on its transaction, the tags it touched: ``entity:{Model}:{id}``
per row (``entity:{Model}`` when a bulk write does not know its ids), ``workspace:{id}``
and ``user:{id}`` for the acting user and for every ``user_columns`` value written. They
are invalidated *after commit* (a rolled-back write, or a rolled-back savepoint,
invalidates nothing), on every instance through the backplane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from corestone import context
from corestone.cache.keys import EVERY_WORKSPACE, GLOBAL
from corestone.db.scoping import AllWorkspaces
from corestone.db.transactions import BEGAN_AT, Transaction

if TYPE_CHECKING:
    from corestone.cache.tiered import TieredCache
    from corestone.db.repository import Repository

__all__ = ["cached_find", "cached_get_many", "touched", "wrote"]

_WROTE = "corestone_wrote"


async def cached_find(repo: Repository[Any], key: Any, cache: TieredCache) -> Any:
    """``repo.find(key)`` through the cache; None when absent or out of scope."""
    workspace = repo.workspace()
    entity = repo.info.entity
    assert not isinstance(workspace, AllWorkspaces)  # the repository reads those uncached
    scope = GLOBAL if workspace is None else workspace

    async def load() -> dict[str, Any] | None:
        obj = await repo.find_uncached(key)
        return None if obj is None else repo.info.attribute_values(obj)

    values = await cache.get_or_load(
        f"entity:{entity}:{key}",
        load,
        ttl=repo.cache_ttl,
        tags=(f"entity:{entity}:{key}", f"entity:{entity}"),
        workspace=scope,
        # The row comes from this transaction's snapshot, which may predate a commit
        # whose invalidation already passed: then it is returned but not cached.
        not_before=repo.session.info.get(BEGAN_AT),
    )
    if values is None:
        return None
    if isinstance(workspace, int) and values.get("workspace_id") != workspace:
        return None  # belt and braces: the scope already keeps workspaces apart
    return await _attach(repo, values)


async def cached_get_many(repo: Repository[Any], keys: list[Any], cache: TieredCache) -> list[Any]:
    """``repo.get_many(keys)``: cached rows in one L1/MGET pass, the rest in one query.

    Rows the query finds are then cached concurrently through ``get_or_load`` (so the
    snapshot and tag-generation checks apply); ids it does not find are simply absent.
    """
    workspace = repo.workspace()
    assert not isinstance(workspace, AllWorkspaces)
    scope = GLOBAL if workspace is None else workspace
    entity = repo.info.entity
    cache_keys = {key: f"entity:{entity}:{key}" for key in keys}
    cached = await cache.get_many(cache_keys.values(), workspace=scope)
    missing = [key for key in keys if cache_keys[key] not in cached]
    pk = repo.info.pk_name
    found = await repo.get_many_uncached(missing) if missing else []
    loaded = {getattr(obj, pk): repo.info.attribute_values(obj) for obj in found}
    began = repo.session.info.get(BEGAN_AT)

    async def keep(key: Any, values: dict[str, Any]) -> None:
        async def known() -> dict[str, Any]:
            return values

        await cache.get_or_load(
            cache_keys[key],
            known,
            ttl=repo.cache_ttl,
            tags=(f"entity:{entity}:{key}", f"entity:{entity}"),
            workspace=scope,
            not_before=began,
        )

    await asyncio.gather(*(keep(key, values) for key, values in loaded.items()))
    rows = []
    for key in keys:
        values = cached.get(cache_keys[key]) if key not in loaded else loaded[key]
        if values is not None and (
            not isinstance(workspace, int) or values.get("workspace_id") == workspace
        ):
            rows.append(await _attach(repo, values))
    return rows


async def _attach(repo: Repository[Any], values: Mapping[str, Any]) -> Any:
    """An instance of the row in the repository's session, without a query."""
    identity = repo.session.identity_map.get(  # already loaded here: keep that one
        repo.session.sync_session.identity_key(repo.model, values[repo.info.pk_name])
    )
    if identity is not None:
        return identity
    obj = repo.model(**values)
    make_transient_to_detached(obj)
    return await repo.session.merge(obj, load=False)


def touched(
    repo: Repository[Any],
    *,
    ids: Iterable[Any] = (),
    rows: Iterable[Mapping[str, Any]] = (),
    whole_model: bool = False,
) -> None:
    """Invalidate, once the transaction commits, the tags a write touched.

    ``ids`` are the rows written (their workspace is the repository's); ``rows`` are
    written rows' values, used for their id, workspace and user columns.
    """
    repo.session.info[_WROTE] = True
    cache = repo.cache
    tx = repo.transaction
    if cache is None or tx is None:
        return
    entity = repo.info.entity
    by_scope: dict[str | int, set[str]] = {}
    default_scope = _scope(repo.workspace(), None)
    unknown_workspace = False

    def add(scope: str | int | None, tag: str) -> None:
        nonlocal unknown_workspace
        if scope is None:
            unknown_workspace = True  # ALL_WORKSPACES without the rows' workspace ids
        else:
            by_scope.setdefault(scope, set()).add(tag)

    for id_ in ids:
        add(default_scope, f"entity:{entity}:{id_}")
    for row in rows:
        scope = _scope(repo.workspace(), row.get("workspace_id"))
        pk = row.get(repo.info.pk_name)
        if pk is not None:
            add(scope, f"entity:{entity}:{pk}")
        for column in repo.user_columns:
            if row.get(column) is not None:
                add(scope, f"user:{row[column]}")
    if whole_model:
        add(default_scope, f"entity:{entity}")
    actor = context.actor_id()
    for scope, tags in by_scope.items():
        if isinstance(scope, int):
            tags.add(f"workspace:{scope}")
        if actor is not None:
            tags.add(f"user:{actor}")
    _after_commit(tx, cache, by_scope, entity if unknown_workspace else None)


def wrote(session: AsyncSession) -> bool:
    """Whether this session's transaction has written (through a repository or the ORM)."""
    return bool(session.info.get(_WROTE)) or bool(session.new or session.dirty or session.deleted)


def _scope(workspace: int | AllWorkspaces | None, row_workspace: object) -> str | int | None:
    if isinstance(workspace, int):
        return workspace
    if isinstance(workspace, AllWorkspaces):
        return row_workspace if isinstance(row_workspace, int) else None
    return GLOBAL


def _after_commit(
    tx: Transaction,
    cache: TieredCache,
    by_scope: dict[str | int, set[str]],
    everywhere: str | None,
) -> None:
    async def invalidate() -> None:
        for scope, tags in by_scope.items():
            await cache.invalidate_tags(sorted(tags), workspace=scope)
        if everywhere is not None:
            # Rows of unknown workspaces: drop the model's cached rows in every workspace.
            await cache.invalidate_pattern(f"entity:{everywhere}:*", workspace=EVERY_WORKSPACE)

    tx.after_commit(invalidate)
