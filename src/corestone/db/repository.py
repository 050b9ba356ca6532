"""``Repository[Model]``: reads, writes, pagination, tenancy and audit for one model.

Declare one per model, with the fields callers may filter and sort on::

    class TaskRepository(Repository[Task]):
        model = Task
        filterable = ("status", "assignee_id", "title", "created_at")
        sortable = ("created_at", "updated_at", "title")
        default_sort = "-created_at"

    async with db.transaction() as tx:
        tasks = TaskRepository(tx, signing_key=settings.signing_key)
        task = await tasks.create({"title": "Write docs"})
        page = await tasks.list(filters={"status": {"in": ["open"]}}, limit=50)

What the model's mixins change (:mod:`corestone.db.models`):

- ``TenantMixin``: every read filters by, and every write checks, the workspace in
  :func:`corestone.context.workspace_id` (or the ``workspace=`` given here). With none,
  every method raises :class:`~corestone.errors.WorkspaceRequiredError`; pass
  :data:`~corestone.db.scoping.ALL_WORKSPACES` to opt out on purpose. Another
  workspace's row is indistinguishable from a missing one (``NotFoundError``).
- ``SoftDeleteMixin``: ``delete`` sets ``deleted_at``/``deleted_by``; reads hide deleted
  rows unless the repository was made with ``include_deleted=True``; ``restore`` undoes
  it; ``purge`` deletes for real.
- ``VersionMixin``: every write bumps ``version``; ``expected_version=`` makes
  ``update``/``delete`` raise :class:`~corestone.errors.StaleVersionError` if someone
  else wrote first.
- ``AuditedMixin``: every write adds ``corestone_audit_log`` rows in the same transaction.

The repository also scopes its session (:func:`~corestone.db.scoping.scope_session`),
so relationship loads of the objects it returns are filtered the same way.
Filters and sorting: docs/filters-and-pagination.md; reading through the cache:
docs/repository.md. Writes, bulk writes and cached reads live in ``_writes``, ``_bulk``
and ``_cache``, which take a :class:`~corestone.db._scope.RepositoryScope` (what one call
may see) and the session, never the repository; ``_written`` tells whether a transaction
has written, and which rows its ORM flushes changed.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from corestone.db import _bulk, _cache, _writes, _written
from corestone.db._model_info import ModelInfo, model_info
from corestone.db._scope import RepositoryScope
from corestone.db.filters import parse_sort
from corestone.db.pagination import (
    CursorCodec,
    Direction,
    KeysetPage,
    OffsetPage,
    check_limit,
    keyset_condition,
    order_by,
)
from corestone.db.scoping import (
    AllWorkspaces,
    Workspace,
    resolve_workspace,
    scope_session,
)
from corestone.db.transactions import Transaction
from corestone.errors import InvalidInputError

if TYPE_CHECKING:
    from corestone.cache.tiered import TieredCache

__all__ = ["Repository"]

M = TypeVar("M")

_MAX_PAGE = 1_000_000


class Repository(Generic[M]):
    """Data access for one model inside one transaction. Cheap to make; make one per use.

    Not safe to share between concurrent tasks (neither is the session under it).
    """

    model: type[M]
    filterable: ClassVar[Sequence[str]] = ()
    sortable: ClassVar[Sequence[str]] = ()
    default_sort: ClassVar[str | Sequence[str]] = ()
    upsert_keys: ClassVar[Sequence[str]] = ()
    default_limit: ClassVar[int] = 50
    max_limit: ClassVar[int] = 500
    cache_reads: ClassVar[bool] = False
    """Serve ``get``/``find``/``get_many`` by id through the cache (see :mod:`._cache`)."""
    cache_ttl: ClassVar[float | None] = None
    user_columns: ClassVar[Sequence[str]] = ()
    """Columns holding user ids: writing them invalidates those users' ``user:{id}`` tags."""

    def __init__(
        self,
        tx: Transaction | AsyncSession,
        *,
        signing_key: bytes | str | None = None,
        workspace: int | str | AllWorkspaces | None = None,
        include_deleted: bool = False,
        cache: TieredCache | None = None,
    ) -> None:
        self.session = tx.session if isinstance(tx, Transaction) else tx
        self.transaction = tx if isinstance(tx, Transaction) else None
        # Wired at construction, never later: the cache and the signing key come from the
        # arguments, else from the transaction's database.
        if self.transaction is not None:
            database = self.transaction.database
            cache = database.cache if cache is None else cache
            signing_key = database.signing_key if signing_key is None else signing_key
        elif cache is not None:
            # A bare session's commit is its caller's: there is no after-commit hook to
            # invalidate on, so cached rows would outlive the writes (docs/repository.md).
            raise TypeError(
                f"{type(self).__name__}: a cache needs a Transaction (db.transaction()), "
                "not a bare AsyncSession, to invalidate after commit"
            )
        self.cache = cache
        if cache is not None and self.transaction is not None:
            _written.invalidate_flushed_after_commit(self.transaction, cache)
        self.info: ModelInfo = model_info(self.model)  # type: ignore[arg-type]
        self.include_deleted = include_deleted
        self._workspace = workspace
        self._codec = None if signing_key is None else CursorCodec(_as_bytes(signing_key))
        self._signing_key = signing_key
        self._filter_fields = {name: getattr(self.model, name) for name in self.filterable}
        scope_session(self.session)

    def with_deleted(self) -> Repository[M]:
        """The same repository, also seeing soft-deleted rows."""
        return type(self)(
            self.transaction if self.transaction is not None else self.session,
            signing_key=self._signing_key,
            workspace=self._workspace,
            include_deleted=True,
            cache=self.cache,
        )

    # -- scope ---------------------------------------------------------------------------

    def workspace(self) -> Workspace | None:
        """The workspace this call is scoped to (None for a model without tenants)."""
        return resolve_workspace(self._workspace) if self.info.tenant else None

    def _scope(self) -> RepositoryScope:
        """What a call made now may see: the helpers' one view of this repository."""
        return RepositoryScope(
            self.info,
            self.workspace(),
            self.include_deleted,
            self._filter_fields,
            self.user_columns,
        )

    # -- reads ---------------------------------------------------------------------------

    async def find(self, id_: object) -> M | None:
        """The row with this id, or None if it does not exist or is out of scope."""
        scope = self._scope()
        key = scope.coerce_id(id_)
        if self.cache_reads and self.cache is not None and await self._cacheable(scope):
            assert self.transaction is not None  # a cache needs one (see __init__)
            return await _cache.cached_find(  # type: ignore[no-any-return]
                scope,
                self.session,
                key,
                self.cache,
                self.transaction.database.session,
                ttl=self.cache_ttl,
            )
        return await self._find(scope, key)

    async def _cacheable(self, scope: RepositoryScope) -> bool:
        # Deleted rows and cross-workspace reads go to the database: the cached entry is
        # one workspace's visible row. So does every read of a transaction that has
        # written (it must see its own uncommitted writes) or that keeps a snapshot
        # (REPEATABLE READ, SERIALIZABLE: a cached row may be newer than its snapshot).
        if scope.include_deleted or isinstance(scope.workspace, AllWorkspaces):
            return False
        if not self.session.in_transaction():
            # Nothing begun yet (a lazy session): nothing written, no snapshot kept, and
            # no connection taken just to find that out (a cache hit then costs nothing).
            return True
        # Awaited: inside a savepoint not yet begun, getting the connection sends SAVEPOINT.
        connection = (await self.session.connection()).sync_connection
        assert connection is not None  # an open AsyncConnection always has one
        wrote = _written.wrote(self.session, connection)
        return not wrote and not _cache.keeps_snapshot(connection)

    async def find_uncached(self, id_: object) -> M | None:
        """``find`` straight from the database, whatever ``cache_reads`` says."""
        scope = self._scope()
        return await self._find(scope, scope.coerce_id(id_))

    async def _find(self, scope: RepositoryScope, key: Any) -> M | None:
        obj = await self.session.get(self.model, key, execution_options=scope.options())
        if obj is None or not scope.visible(obj):
            return None
        return obj

    async def get(self, id_: object) -> M:
        """The row with this id; :class:`~corestone.errors.NotFoundError` if there is none."""
        obj = await self.find(id_)
        if obj is None:
            raise self._scope().not_found(id_)
        return obj

    async def get_many(self, ids: Sequence[object]) -> builtins.list[M]:
        """The rows with these ids, in the order given; missing and foreign ids are skipped."""
        scope = self._scope()
        keys = list(dict.fromkeys(scope.coerce_id(i) for i in ids))
        if self.cache_reads and self.cache is not None and await self._cacheable(scope):
            return await _cache.cached_get_many(scope, self.session, keys, self.cache)
        return await _cache.query_many(scope, self.session, keys)

    async def get_many_uncached(self, keys: Sequence[Any]) -> builtins.list[M]:
        """``get_many`` straight from the database (ids already coerced and unique)."""
        return await _cache.query_many(self._scope(), self.session, keys)

    async def count(self, filters: Mapping[str, Any] | None = None) -> int:
        """How many rows in scope match ``filters``."""
        scope = self._scope()
        stmt = select(func.count()).select_from(self.info.table)
        stmt = stmt.where(*scope.criteria(), scope.filter(filters))
        return int(await self.session.scalar(stmt, execution_options=scope.options()) or 0)

    async def exists(self, filters: Mapping[str, Any] | None = None) -> bool:
        """Whether any row in scope matches ``filters``."""
        scope = self._scope()
        stmt = select(literal(1)).select_from(self.info.table)
        stmt = stmt.where(*scope.criteria(), scope.filter(filters)).limit(1)
        found = await self.session.scalar(stmt, execution_options=scope.options())
        return found is not None

    async def list(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        sort: str | Sequence[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> KeysetPage[M]:
        """One keyset page: stable under ties (the id breaks them) and concurrent inserts.

        ``cursor`` is a ``next_cursor``/``prev_cursor`` of an earlier page with the same
        filters and sort; anything else (tampered, another model, sort, filter or
        workspace) is :class:`~corestone.errors.InvalidInputError`.
        """
        if self._codec is None:
            raise RuntimeError(f"{type(self).__name__} needs signing_key= for keyset pages")
        keys = self._sort_keys(sort)
        size = check_limit(limit, default=self.default_limit, maximum=self.max_limit)
        scope = self._scope()
        cursor_scope = self._cursor_scope(keys, filters, scope.workspace)
        stmt = select(self.model).where(*scope.criteria(), scope.filter(filters))
        direction: Direction = "next"
        if cursor is not None:
            values, direction = self._codec.decode(cursor, scope=cursor_scope)
            stmt = stmt.where(keyset_condition(keys, values, direction=direction))
        stmt = stmt.order_by(*order_by(keys, direction=direction)).limit(size + 1)
        rows = list(await self.session.scalars(stmt, execution_options=scope.options()))
        more = len(rows) > size
        rows = rows[:size]
        if direction == "prev":
            rows.reverse()
        has_next = more if direction == "next" else cursor is not None
        has_prev = (cursor is not None) if direction == "next" else more

        def token(obj: Any, towards: Direction) -> str:
            assert self._codec is not None
            values = [getattr(obj, key.name) for key in keys]
            return self._codec.encode(values, scope=cursor_scope, direction=towards)

        return KeysetPage(
            items=rows,
            next_cursor=token(rows[-1], "next") if rows and has_next else None,
            prev_cursor=token(rows[0], "prev") if rows and has_prev else None,
        )

    async def page(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        sort: str | Sequence[str] | None = None,
        page: int = 1,
        page_size: int | None = None,
    ) -> OffsetPage[M]:
        """One offset page and the total (counted with a separate ``count(*)`` query)."""
        if not _is_int(page) or not 1 <= page <= _MAX_PAGE:
            raise InvalidInputError(f"page must be 1..{_MAX_PAGE}", field="page", rule="range")
        size = check_limit(page_size, default=self.default_limit, maximum=self.max_limit)
        keys = self._sort_keys(sort)
        scope = self._scope()
        where = [*scope.criteria(), scope.filter(filters)]
        stmt = (
            select(self.model)
            .where(*where)
            .order_by(*order_by(keys, direction="next"))
            .offset((page - 1) * size)
            .limit(size)
        )
        options = scope.options()
        items = list(await self.session.scalars(stmt, execution_options=options))
        total_stmt = select(func.count()).select_from(self.info.table).where(*where)
        total = int(await self.session.scalar(total_stmt, execution_options=options) or 0)
        return OffsetPage(items=items, total=total, page=page, page_size=size)

    def _sort_keys(self, sort: str | Sequence[str] | None) -> tuple[Any, ...]:
        fields = {name: getattr(self.model, name) for name in self.sortable}
        default = (self.default_sort,) if isinstance(self.default_sort, str) else self.default_sort
        return parse_sort(
            sort, fields, default=tuple(default), tiebreak=getattr(self.model, self.info.pk_name)
        )

    def _cursor_scope(
        self, keys: Sequence[Any], filters: Mapping[str, Any] | None, workspace: object
    ) -> str:
        spec = json.dumps(filters or {}, sort_keys=True, default=str, separators=(",", ":"))
        digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
        order = ",".join(("-" if k.descending else "") + k.name for k in keys)
        return f"{self.info.identity}|{order}|{digest}|{workspace}"

    # -- writes (implemented in _writes / _bulk) -----------------------------------------

    async def create(self, values: Mapping[str, Any]) -> M:
        """Insert one row and return it (server defaults loaded)."""
        scope = self._scope()
        obj = await _writes.create(scope, self.session, values)
        self._touched(scope, rows=[self.info.attribute_values(obj)])
        return obj  # type: ignore[no-any-return]

    async def create_many(self, rows: Sequence[Mapping[str, Any]]) -> builtins.list[Any]:
        """Insert many rows fast; return their ids in input order.

        PostgreSQL: ids reserved from the sequence in one query, rows sent by binary COPY.
        SQLite: batched multi-row INSERT … RETURNING. Load the rows with ``get_many``.
        """
        scope = self._scope()
        ids = await _bulk.create_many(scope, self.session, rows)
        self._touched(scope, ids=ids, rows=rows if self.user_columns else ())
        return ids

    async def update(
        self, id_: object, values: Mapping[str, Any], *, expected_version: int | None = None
    ) -> M:
        """Change some fields of one row and return it; checks ``expected_version`` if given."""
        scope = self._scope()
        obj = await _writes.update(
            scope, self.session, id_, values, expected_version=expected_version
        )
        self._touched(scope, rows=[self.info.attribute_values(obj)])
        return obj  # type: ignore[no-any-return]

    async def update_many(self, filters: Mapping[str, Any], values: Mapping[str, Any]) -> int:
        """Change ``values`` on every row in scope matching ``filters``; return how many."""
        scope = self._scope()
        count = await _writes.update_many(scope, self.session, filters, values)
        if count:
            self._touched(scope, rows=_user_rows(self, values), whole_model=True)
        return count

    async def upsert(self, values: Mapping[str, Any], *, on: Sequence[str] | None = None) -> M:
        """Insert, or update the row with the same ``on`` key (default ``upsert_keys``/id).

        Never takes over a row of another workspace or a soft-deleted one: that conflict
        is :class:`~corestone.errors.ConflictError`.
        """
        scope = self._scope()
        obj = await _bulk.upsert_one(scope, self.session, values, on=on or self.upsert_keys)
        self._touched(scope, rows=[self.info.attribute_values(obj)])
        return obj  # type: ignore[no-any-return]

    async def upsert_many(
        self, rows: Sequence[Mapping[str, Any]], *, on: Sequence[str] | None = None
    ) -> int:
        """Upsert many rows with ON CONFLICT; return how many were inserted or updated."""
        scope = self._scope()
        count = await _bulk.upsert_many(scope, self.session, rows, on=on or self.upsert_keys)
        self._touched(scope, rows=rows, whole_model=True)
        return count

    async def delete(self, id_: object, *, expected_version: int | None = None) -> None:
        """Soft-delete (models with SoftDeleteMixin) or delete one row.

        With ``expected_version``, only a row at that version (checked in the same
        statement): else StaleVersionError with the current version.
        """
        scope = self._scope()
        row = await _writes.delete(scope, self.session, id_, expected_version=expected_version)
        self._touched(scope, rows=[row])

    async def restore(self, id_: object, *, expected_version: int | None = None) -> M:
        """Undo a soft delete and return the row (a row not deleted is returned as is).

        With ``expected_version``, only a row at that version: else StaleVersionError.
        """
        scope = self._scope()
        obj = await _writes.restore(scope, self.session, id_, expected_version=expected_version)
        self._touched(scope, rows=[self.info.attribute_values(obj)])
        return obj  # type: ignore[no-any-return]

    async def purge(self, id_: object) -> None:
        """Delete one row for good, soft-deleted or not."""
        scope = self._scope()
        row = await _writes.purge(scope, self.session, id_)
        self._touched(scope, rows=[row])

    def _touched(
        self,
        scope: RepositoryScope,
        *,
        ids: Iterable[Any] = (),
        rows: Iterable[Mapping[str, Any]] = (),
        whole_model: bool = False,
    ) -> None:
        _written.mark_written(self.session)
        if self.cache is not None and self.transaction is not None:
            _cache.invalidate_after_commit(
                scope, self.transaction, self.cache, ids=ids, rows=rows, whole_model=whole_model
            )


def _user_rows(repo: Repository[Any], values: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    users = {c: values[c] for c in repo.user_columns if c in values}
    return [users] if users else []


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key
