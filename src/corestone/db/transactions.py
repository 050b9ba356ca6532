"""Transactions: one unit of work, savepoints for nested blocks, retries, and commit hooks.

``async with db.transaction() as tx`` opens a :class:`Transaction`; inside it, another
``db.transaction()`` is a SAVEPOINT, and an exception in that block rolls back only the
savepoint. ``db.run_in_transaction(fn)`` runs ``fn(tx)`` in a fresh transaction and runs it
again, whole, when the database says the attempt may succeed if repeated: a PostgreSQL
serialization failure or deadlock, a connection lost before commit, SQLite's "database is
locked". It never retries a failed COMMIT whose outcome is unknown.

Hooks registered with :meth:`Transaction.after_commit` / :meth:`~Transaction.after_rollback`
run exactly once, after the final outcome of the outermost transaction, and never for an
attempt that was retried. A rolled-back savepoint drops its commit hooks and keeps its
rollback hooks (its work was undone even if the outer transaction commits).

What happens on a crash: before COMMIT returns nothing is durable and no commit hook has
run; after it returns, the hooks may not run if the process dies at that instant — code
that must not miss them (events, emails) uses an outbox written in the transaction.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncSession

from corestone.errors import CorestoneError
from corestone.observability.logging import get_logger

if TYPE_CHECKING:
    from corestone.db.database import Database

__all__ = [
    "NO_RETRY",
    "CommitFailedError",
    "Hook",
    "IsolationLevel",
    "RetryPolicy",
    "Transaction",
    "current_transaction",
    "transient_cause",
]

log = get_logger(__name__)

IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
Hook = Callable[[], Awaitable[None] | None]
T = TypeVar("T")

_current: ContextVar[Transaction | None] = ContextVar("corestone_transaction", default=None)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How :meth:`Database.run_in_transaction` retries transient failures.

    Waits follow exponential backoff with full jitter: attempt ``n`` sleeps a uniform
    random time in ``[0, min(max_delay, base_delay * 2**n))``. Retrying stops at
    ``max_attempts`` or when the next sleep would pass ``deadline`` seconds since the
    first attempt, and the last error is raised.
    """

    max_attempts: int = 5
    base_delay: float = 0.01
    max_delay: float = 1.0
    deadline: float = 10.0

    def delay(self, attempt: int) -> float:
        """The full-jitter sleep before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(eq=False)
class Transaction:
    """A unit of work: the session, and what to do once its outcome is known."""

    session: AsyncSession
    database: Database
    parent: Transaction | None = None
    _commit_hooks: list[Hook] = field(default_factory=list)
    _rollback_hooks: list[Hook] = field(default_factory=list)
    _undone_hooks: list[Hook] = field(default_factory=list)

    def after_commit(self, hook: Hook) -> None:
        """Run ``hook`` once the outermost transaction has committed (never if it rolls back)."""
        self._commit_hooks.append(hook)

    def after_rollback(self, hook: Hook) -> None:
        """Run ``hook`` once this work has been rolled back for good."""
        self._rollback_hooks.append(hook)

    @property
    def nested(self) -> bool:
        """True inside a savepoint."""
        return self.parent is not None

    def _merge_into_parent(self, committed: bool) -> None:
        assert self.parent is not None
        if committed:
            self.parent._commit_hooks += self._commit_hooks
            self.parent._rollback_hooks += self._rollback_hooks
        else:
            self.parent._undone_hooks += self._rollback_hooks
        self.parent._undone_hooks += self._undone_hooks

    async def _run_hooks(self, committed: bool) -> None:
        hooks = [*(self._commit_hooks if committed else self._rollback_hooks), *self._undone_hooks]
        for hook in hooks:
            try:
                result = hook()
                if result is not None:
                    await result
            except Exception:
                log.exception("transaction hook failed", committed=committed)


BEGAN_AT = "corestone_began_at"


def current_transaction() -> Transaction | None:
    """The transaction open in this context, if any."""
    return _current.get()


@asynccontextmanager
async def open_transaction(
    database: Database,
    *,
    isolation: IsolationLevel | None,
    read_only: bool,
    run_hooks: bool = True,
) -> AsyncIterator[Transaction]:
    """Open a transaction, or a savepoint when one of ``database`` is already open here."""
    parent = _current.get()
    if parent is not None and parent.database is database:
        async with _savepoint(parent) as child:
            yield child
        return
    started = time.perf_counter()
    committed = False
    async with database._session_for(isolation=isolation, read_only=read_only) as session:
        # When its snapshot may have been taken, at the latest: the cache will not store
        # what this transaction reads if it was invalidated after that (db/_cache.py).
        session.info[BEGAN_AT] = time.monotonic()
        tx = Transaction(session, database)
        token = _current.set(tx)
        try:
            try:
                yield tx
            except BaseException:
                await _quiet_rollback(session)
                raise
            try:
                await session.commit()
            except Exception as error:
                await _quiet_rollback(session)
                raise CommitFailedError(error) from error
            committed = True
        finally:
            _current.reset(token)
            target = str(session.info.get("corestone_target", "primary"))
            database._record_outcome(committed, time.perf_counter() - started, read_only, target)
            if run_hooks and not committed:
                await tx._run_hooks(committed=False)
    if run_hooks:
        await tx._run_hooks(committed=True)


@asynccontextmanager
async def _savepoint(parent: Transaction) -> AsyncIterator[Transaction]:
    child = Transaction(parent.session, parent.database, parent=parent)
    token = _current.set(child)
    try:
        # SQLAlchemy's own context manager also rolls back a savepoint that a failed
        # flush already deactivated, which leaves the outer transaction usable.
        async with parent.session.begin_nested():
            yield child
    except BaseException:
        child._merge_into_parent(committed=False)
        raise
    else:
        child._merge_into_parent(committed=True)
    finally:
        _current.reset(token)


async def _quiet_rollback(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception as error:  # noqa: BLE001 - the original error matters more
        log.warning("rollback failed", error=repr(error))


class CommitFailedError(Exception):
    """COMMIT itself failed: the outcome is unknown, so the attempt is never retried."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def run_with_retry(
    database: Database,
    fn: Callable[[Transaction], Awaitable[T]],
    *,
    retry: RetryPolicy,
    isolation: IsolationLevel | None,
    read_only: bool,
) -> T:
    """Run ``fn`` in a transaction, re-running the whole of it on transient failures."""
    if _current.get() is not None:
        raise RuntimeError("run_in_transaction cannot retry inside an open transaction")
    first = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        tx_holder: list[Transaction] = []
        try:
            async with open_transaction(
                database, isolation=isolation, read_only=read_only, run_hooks=False
            ) as tx:
                tx_holder.append(tx)
                result = await fn(tx)
        except CommitFailedError as failed:
            await _finish_rolled_back(tx_holder)
            raise database._translate(failed.cause) from failed.cause
        except Exception as error:
            cause = transient_cause(error)
            delay = retry.delay(attempt)
            elapsed = time.monotonic() - first
            if cause is None or attempt >= retry.max_attempts or elapsed + delay > retry.deadline:
                await _finish_rolled_back(tx_holder)
                if isinstance(error, CorestoneError):
                    raise
                raise database._translate(error) from error
            database._record_retry(cause)
            log.info("retrying transaction", cause=cause, attempt=attempt, delay_s=round(delay, 4))
            await asyncio.sleep(delay)
            continue
        await tx_holder[0]._run_hooks(committed=True)
        return result


async def _finish_rolled_back(holder: list[Transaction]) -> None:
    if holder:
        await holder[0]._run_hooks(committed=False)


_SQLSTATE_CAUSES = {"40001": "serialization", "40P01": "deadlock"}
_LOCKED_MESSAGES = ("database is locked", "database table is locked")


def transient_cause(error: BaseException) -> str | None:
    """Why ``error`` is worth retrying the whole transaction for, or None if it is not.

    Looks through the ``__cause__`` chain, so it works on raw driver errors, SQLAlchemy's
    wrappers and corestone's translated errors alike.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CommitFailedError):
            return None
        if isinstance(current, exc.DBAPIError):
            if current.connection_invalidated:
                return "disconnect"
            code = getattr(current.orig, "sqlstate", None) or getattr(current.orig, "pgcode", None)
            if code in _SQLSTATE_CAUSES:
                return _SQLSTATE_CAUSES[str(code)]
            if isinstance(current, exc.OperationalError) and any(
                m in str(current.orig) for m in _LOCKED_MESSAGES
            ):
                return "locked"
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str) and code in _SQLSTATE_CAUSES:
            return _SQLSTATE_CAUSES[code]
        if type(current).__name__ in ("ConnectionDoesNotExistError", "ConnectionResetError"):
            return "disconnect"
        current = current.__cause__ or current.__context__
    return None
