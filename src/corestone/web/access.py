"""Cached principal and tenancy lookups: who is calling, and are they in this workspace.

Every authenticated request asks two questions before it does its work: whose bearer
token is this (token digest → principal) and does that principal belong to the workspace
in the path (workspace and principal → membership). Asked of the database, they cost a
transaction each; :class:`AccessCache` answers them from the tiered cache, so a request
whose data is cached too makes no database round trip at all. The service brings its own
loaders; corestone brings the keys, the tags, the invalidation and the rules below.

- **Keys and tags.** A principal is cached under ``principal:{digest}`` (global scope),
  tagged ``token:{digest[:16]}`` and ``user:{id}``; a membership under ``member:{id}``
  in its workspace's scope, tagged ``membership:{workspace}:{id}``. A loader adds tags of
  its own (the rows it read: ``entity:users:{id}``, ``entity:memberships:{id}``), so
  repository writes to those rows invalidate the lookups with no extra code.
- **Invalidation.** :func:`forget_access_after_commit` drops tokens, users, memberships
  or whole workspaces once a transaction commits (also when its outcome is unknown), on
  every instance through the backplane. :func:`forget_access` does it at once.
- **No negative caching.** Only what a loader found is stored. An unknown token or a
  non-member costs one query every time and leaves nothing behind, so a flood of random
  tokens cannot fill L1 or Redis (docs/decisions). A removed member is therefore never
  answered from a cached "yes".
- **Races.** A found value is stored only if none of its tags was invalidated after its
  load began, on any instance (``get_or_load(not_before=…)``): a revocation committed
  while the load ran is never undone by it.
- **Own sessions.** Loads run on a short session of their own on the primary, on the
  read path (one autocommitted statement on PostgreSQL; SQLite's deferred BEGIN), not on
  a caller's transaction, so a lookup made inside a write transaction neither nests in
  it nor queues behind its lock. One
  exception: when the pool has no idle connection and the caller holds one in an open
  transaction on the primary, the load reads on that transaction and nothing is stored.
  Waiting for a second connection there would wait on the callers themselves: with every
  pooled connection held by such transactions, all of them would stall to the pool
  timeout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Header
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import QueuePool

from corestone.cache.keys import GLOBAL
from corestone.cache.tiered import TieredCache
from corestone.db._driver_errors import raw_connect_error
from corestone.db._read_path import session_options
from corestone.db.transactions import Transaction, TransactionBackend, current_transaction
from corestone.errors import AuthenticationError, NotFoundError, UnavailableError

__all__ = [
    "AccessCache",
    "BearerToken",
    "Grant",
    "MembershipLoader",
    "PrincipalLoader",
    "bearer_token",
    "forget_access",
    "forget_access_after_commit",
    "token_digest",
]

_TOKEN_TAG_LENGTH: Final = 16  # 64 bits of the digest: a collision only costs a reload


@dataclass(frozen=True, slots=True)
class Grant:
    """What a loader found: the value to cache, whose it is, and tags of the loader's own.

    ``value`` must survive the cache's serializer (plain data: dicts, strings, numbers,
    datetimes) and is never None (a loader that finds nothing returns None instead of a
    Grant). ``subject`` is the principal's id (it names the ``user:{id}`` tag).
    """

    value: Any
    subject: int | str
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.value is None:
            raise TypeError("a Grant's value cannot be None (None is what a miss reads as)")


PrincipalLoader = Callable[[AsyncSession, str], Awaitable[Grant | None]]
"""``load(session, digest)``: the principal whose token has this SHA-256 hex digest."""

MembershipLoader = Callable[[AsyncSession, int, int | str], Awaitable[Grant | None]]
"""``load(session, workspace_id, principal_id)``: the membership (e.g. the role), if any."""


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a bearer token is stored and cached."""
    return hashlib.sha256(token.encode()).hexdigest()


async def bearer_token(
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """A FastAPI dependency: the token of an ``Authorization: Bearer …`` header, or 401."""
    if authorization is None:
        raise AuthenticationError("missing Authorization header; send 'Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("Authorization header must be 'Bearer <token>'")
    return token


BearerToken = Annotated[str, Depends(bearer_token)]
"""The request's bearer token (401 problem when the header is missing or malformed)."""


class AccessCache:
    """Cached authentication and membership lookups, on a service's own loaders.

    Make one per process (it is cheap and holds no state of its own) from the database
    the loaders read (its ``cache`` is the one used; with none, every lookup loads).
    ``token_prefix`` and ``max_token_length`` refuse malformed tokens before any lookup.
    ``ttl`` bounds how long a change made behind the cache's back (raw SQL, a process
    that died before announcing) can be served.
    """

    def __init__(
        self,
        database: TransactionBackend,
        *,
        load_principal: PrincipalLoader,
        load_membership: MembershipLoader,
        ttl: float = 60.0,
        token_prefix: str = "",
        max_token_length: int = 512,
    ) -> None:
        self._database = database
        self._load_principal = load_principal
        self._load_membership = load_membership
        self._ttl = ttl
        self._prefix = token_prefix
        self._max_length = max_token_length

    async def authenticate(self, token: str) -> Any:
        """The value the principal loader gave for ``token``, or AuthenticationError."""
        if not token.startswith(self._prefix) or len(token) > self._max_length:
            raise AuthenticationError("invalid bearer token")
        digest = token_digest(token)

        async def load(session: AsyncSession) -> Grant | None:
            return await self._load_principal(session, digest)

        found = await self._lookup(
            f"principal:{digest}",
            GLOBAL,
            load,
            lambda grant: (f"token:{digest[:_TOKEN_TAG_LENGTH]}", f"user:{grant.subject}"),
        )
        if found is None:
            raise AuthenticationError("invalid bearer token")
        return found

    async def membership(self, workspace_id: int, principal_id: int | str) -> Any:
        """The membership loader's value for the pair, or NotFoundError("workspace not found").

        The error is the one a missing workspace gets: a non-member learns nothing.
        """

        async def load(session: AsyncSession) -> Grant | None:
            return await self._load_membership(session, workspace_id, principal_id)

        found = await self._lookup(
            f"member:{principal_id}",
            workspace_id,
            load,
            lambda _grant: (f"membership:{workspace_id}:{principal_id}",),
        )
        if found is None:
            raise NotFoundError("workspace not found")
        return found

    async def _lookup(
        self,
        key: str,
        workspace: int | str,
        load: Callable[[AsyncSession], Awaitable[Grant | None]],
        standard_tags: Callable[[Grant], tuple[str, ...]],
    ) -> Any:
        cache = self._database.cache
        if cache is None:
            grant, _ = await self._load(load)
            return None if grant is None else grant.value
        hit = await cache.get(key, workspace=workspace)
        if hit is not None:
            return hit
        began = cache.clock()  # before the load's snapshot begins: see not_before below
        grant, storable = await self._load(load)
        if grant is None or not storable:
            return None if grant is None else grant.value
        value = grant.value

        async def loaded() -> Any:
            return value

        # Stored only if no tag moved since `began`, here or on any instance; either way
        # the caller gets what was just read.
        return await cache.get_or_load(
            key,
            loaded,
            ttl=self._ttl,
            tags=(*standard_tags(grant), *grant.tags),
            workspace=workspace,
            not_before=began,
            fail_safe=False,  # never kept past its ttl: nothing to serve stale
        )

    async def _load(
        self, load: Callable[[AsyncSession], Awaitable[Grant | None]]
    ) -> tuple[Grant | None, bool]:
        """What ``load`` found, and whether it may be stored (see "Own sessions")."""
        async with self._database.session() as session:
            caller = current_transaction()
            if (
                caller is not None
                and caller.database is self._database
                and caller.session.info.get("corestone_target", "primary") == "primary"
                and not _spare_connection(session)
            ):
                # The caller's snapshot may hold its uncommitted writes: answer, keep nothing.
                return await load(caller.session), False
            # The read path, as the repository's cached loads: one autocommitted statement
            # on PostgreSQL (no BEGIN or COMMIT round trip), a deferred BEGIN on SQLite.
            options = session_options(session.bind.dialect.name, isolation=None, read_only=True)
            try:
                await session.connection(execution_options=options)
            except Exception as error:
                # The driver's connect raises raw: a socket error, or the server's refusal
                # ("too many connections", "starting up"). A 503, as for a transaction.
                if raw_connect_error(error):
                    raise UnavailableError("database unreachable", retry_after=1.0) from error
                raise
            return await load(session), True


def _spare_connection(session: AsyncSession) -> bool:
    """Whether ``session`` can get a pooled connection without waiting for one.

    Checked just before the checkout, with no await in between (the repository cache's
    loads make the same check).
    """
    pool = session.bind.sync_engine.pool
    if not isinstance(pool, QueuePool):
        return True
    limit = pool._max_overflow  # SQLAlchemy has no public getter for it
    return pool.checkedin() > 0 or limit < 0 or pool.overflow() < limit


def _messages(
    *,
    tokens: Iterable[str],
    users: Iterable[int | str],
    memberships: Iterable[tuple[int, int | str]],
) -> dict[int | str, list[str]]:
    by_scope: dict[int | str, list[str]] = {}
    global_tags = [f"token:{digest[:_TOKEN_TAG_LENGTH]}" for digest in tokens]
    global_tags += [f"user:{user}" for user in users]
    if global_tags:
        by_scope[GLOBAL] = global_tags
    for workspace, principal in memberships:
        by_scope.setdefault(workspace, []).append(f"membership:{workspace}:{principal}")
    return by_scope


async def forget_access(
    cache: TieredCache | None,
    *,
    tokens: Iterable[str] = (),
    users: Iterable[int | str] = (),
    memberships: Iterable[tuple[int, int | str]] = (),
    workspaces: Iterable[int] = (),
) -> None:
    """Drop cached lookups now, on every instance.

    ``tokens`` are digests (:func:`token_digest`); ``users`` drops every token of those
    principals; ``memberships`` are ``(workspace_id, principal_id)`` pairs;
    ``workspaces`` clears everything cached in those workspaces (for a deleted one).
    """
    if cache is None:
        return
    tags = _messages(tokens=tokens, users=users, memberships=memberships)
    for workspace, scoped in tags.items():
        await cache.invalidate_tags(sorted(set(scoped)), workspace=workspace)
    for workspace in sorted(set(workspaces)):
        await cache.clear(workspace=workspace)


def forget_access_after_commit(
    tx: Transaction,
    *,
    tokens: Iterable[str] = (),
    users: Iterable[int | str] = (),
    memberships: Iterable[tuple[int, int | str]] = (),
    workspaces: Iterable[int] = (),
) -> None:
    """:func:`forget_access` once ``tx`` commits or its outcome is unknown; not on rollback.

    The cache is the transaction's database's. Register it in the transaction that makes
    the change (revokes the token, deletes the user, removes the member).
    """
    cache = tx.database.cache
    if cache is None:
        return
    tokens, users, memberships = list(tokens), list(users), list(memberships)
    workspaces = list(workspaces)

    async def drop() -> None:
        await forget_access(
            cache, tokens=tokens, users=users, memberships=memberships, workspaces=workspaces
        )

    tx.after_commit(drop)
    tx.after_unknown(drop)
