"""Transactions: one unit of work, savepoints for nested blocks, retries, and outcome hooks.

``async with db.transaction() as tx`` opens a :class:`Transaction`; inside it, another
``db.transaction()`` of the same database is a SAVEPOINT, and an exception in that block
rolls back only the savepoint. A task created inside the block that opens a transaction
after the block ended gets one of its own.

``db.run_in_transaction(fn)`` runs ``fn(tx)`` in a fresh transaction and runs it again,
whole, under a :class:`~corestone.resilience.Retry` policy when the database says the
attempt may succeed if repeated: a PostgreSQL serialization failure or deadlock (also
when the server refuses the COMMIT for it), a connection lost before COMMIT was sent,
SQLite's "database is locked".

A COMMIT whose answer never arrived (the connection dropped after it was sent) has an
unknown outcome: it raises :class:`~corestone.errors.CommitUnknownError`, is never
retried, and runs only the :meth:`Transaction.after_unknown` hooks.

Hooks registered with :meth:`Transaction.after_commit` / :meth:`~Transaction.after_rollback`
/ :meth:`~Transaction.after_unknown` run exactly once, after the final outcome of the
outermost transaction, and never for an attempt that was retried; a caller cancelled
while they run does not cut them short. A rolled-back savepoint
drops its commit and unknown hooks and keeps its rollback hooks (its work was undone
whatever the outer transaction's outcome).

What happens on a crash: before COMMIT returns nothing is durable and no commit hook has
run; after it returns, the hooks may not run if the process dies at that instant: code
that must not miss them (events, emails) uses an outbox written in the transaction.

Transactions depend on :class:`TransactionBackend`, a small protocol that
:class:`~corestone.db.Database` implements; this module never imports the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from corestone.db._aborted import refuse_aborted
from corestone.db._driver_errors import commit_outcome_unknown, transient_cause, translate_error
from corestone.db._read_path import is_read_only
from corestone.errors import CommitUnknownError
from corestone.observability.logging import get_logger
from corestone.resilience.retry import Retry

if TYPE_CHECKING:
    from corestone.cache.tiered import TieredCache
    from corestone.db._query_scope import QueryScope

__all__ = [
    "TRANSACTION_RETRY",
    "Hook",
    "IsolationLevel",
    "Outcome",
    "Transaction",
    "TransactionBackend",
    "current_transaction",
    "open_transaction",
    "run_with_retry",
    "transient_cause",
]

log = get_logger(__name__)

IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
Outcome = Literal["commit", "rollback", "unknown"]
Hook = Callable[[], Awaitable[None] | None]
T = TypeVar("T")

_current: ContextVar[Transaction | None] = ContextVar("corestone_transaction", default=None)

TRANSACTION_RETRY = Retry(
    attempts=5, initial_wait_seconds=0.01, max_wait_seconds=1.0, deadline_seconds=10.0
)
"""``run_in_transaction``'s default: 5 attempts, full-jitter waits from 10 ms to 1 s, 10 s
in all counting the first attempt. Only transient database failures are retried."""


class TransactionBackend(Protocol):
    """What a transaction needs from its database; :class:`~corestone.db.Database` is one.

    ``cache`` and ``signing_key`` are handed on to the repositories built on the
    transaction (read-through and invalidation, cursor signing).
    """

    @property
    def cache(self) -> TieredCache | None: ...

    @property
    def signing_key(self) -> bytes | None: ...

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A bare session on the primary, for work that owns its transaction.

        Repositories run a cached load shared by several callers on one of these, never
        on a caller's session, so cancelling that caller cannot break the load.
        """
        ...

    def session_for(
        self, *, isolation: IsolationLevel | None, read_only: bool
    ) -> AbstractAsyncContextManager[AsyncSession]:
        """A session whose transaction has begun, on a replica when ``read_only`` allows."""
        ...

    def record_outcome(
        self, outcome: Outcome, seconds: float, *, read_only: bool, target: str
    ) -> None:
        """Count a finished transaction (``target`` is the session's engine label)."""
        ...

    def record_retry(self, cause: str) -> None:
        """Count an attempt retried for ``cause`` (see :func:`transient_cause`)."""
        ...


@dataclass(eq=False)
class Transaction:
    """A unit of work: the session, and what to do once its outcome is known."""

    session: AsyncSession
    database: TransactionBackend
    parent: Transaction | None = None
    outcome: Outcome | None = None
    _commit_hooks: list[Hook] = field(default_factory=list)
    _rollback_hooks: list[Hook] = field(default_factory=list)
    _unknown_hooks: list[Hook] = field(default_factory=list)
    _undone_hooks: list[Hook] = field(default_factory=list)
    # What was open in this context before (of any database), and whether this is still
    # open: a task that inherits the context (created inside the block) and runs after
    # the block ended must not reuse this session, and another database's transaction
    # opened in between must not hide it (see _open_here).
    _enclosing: Transaction | None = field(default=None, repr=False)
    _open: bool = field(default=True, repr=False)
    # The query monitor's count of this unit of work's statements (N+1 detection), made
    # on the outermost transaction when it runs outside a request scope.
    query_scope: QueryScope | None = field(default=None, repr=False)

    def after_commit(self, hook: Hook) -> None:
        """Run ``hook`` once the outermost transaction has committed (never if it rolls back)."""
        self._commit_hooks.append(hook)

    def after_rollback(self, hook: Hook) -> None:
        """Run ``hook`` once this work has been rolled back for good."""
        self._rollback_hooks.append(hook)

    def after_unknown(self, hook: Hook) -> None:
        """Run ``hook`` if the connection is lost after COMMIT was sent.

        The work may or may not have committed: this is for what is right either way,
        such as dropping cache entries the work may have changed.
        """
        self._unknown_hooks.append(hook)

    @property
    def nested(self) -> bool:
        """True inside a savepoint."""
        return self.parent is not None

    def _merge_into_parent(self, committed: bool) -> None:
        assert self.parent is not None
        if committed:
            self.parent._commit_hooks += self._commit_hooks
            self.parent._rollback_hooks += self._rollback_hooks
            self.parent._unknown_hooks += self._unknown_hooks
        else:
            self.parent._undone_hooks += self._rollback_hooks
        self.parent._undone_hooks += self._undone_hooks

    async def _run_hooks(self) -> None:
        """Run the hooks of :attr:`outcome` (and of rolled-back savepoints), each once."""
        by_outcome = {
            "commit": self._commit_hooks,
            "rollback": self._rollback_hooks,
            "unknown": self._unknown_hooks,
        }
        hooks = [*by_outcome.get(self.outcome or "rollback", []), *self._undone_hooks]
        self._commit_hooks, self._rollback_hooks, self._unknown_hooks = [], [], []
        self._undone_hooks = []
        for index, hook in enumerate(hooks):
            try:
                result = hook()
            except Exception:
                log.exception("transaction hook failed", outcome=self.outcome)
                continue
            if result is not None:
                await _finish_hooks(result, hooks[index + 1 :], self.outcome)
                return


_UNFINISHED: set[asyncio.Future[None]] = set()
"""Hook runs whose caller was cancelled, kept referenced until they end."""


async def _finish_hooks(first: Awaitable[None], rest: list[Hook], outcome: Outcome | None) -> None:
    """Await ``first``, then run ``rest``, in a task of their own that outlives a cancelled caller.

    The outcome is final: a caller that gives up (a timeout, a client gone) must not cut an
    invalidation short or drop the hooks after it. The caller's cancellation still
    propagates at once; the hooks finish in the background.
    """

    async def run() -> None:
        for hook in [lambda: first, *rest]:
            try:
                result = hook()
                if result is not None:
                    await result
            except Exception:
                log.exception("transaction hook failed", outcome=outcome)

    runner = asyncio.ensure_future(run())
    try:
        await asyncio.shield(runner)
    except asyncio.CancelledError:
        if not runner.done():
            _UNFINISHED.add(runner)
            runner.add_done_callback(_UNFINISHED.discard)
        raise


def current_transaction() -> Transaction | None:
    """The innermost transaction open in this context, if any."""
    return _open_here(None)


def _open_here(backend: TransactionBackend | None) -> Transaction | None:
    """The innermost transaction (of ``backend``, if given) open in this context.

    A task created inside a transaction inherits the context variable; once the block
    has ended, that transaction and its session are gone, and are skipped here.
    """
    tx = _current.get()
    while tx is not None:
        if tx._open and (backend is None or tx.database is backend):
            return tx
        tx = tx._enclosing
    return None


@asynccontextmanager
async def open_transaction(
    backend: TransactionBackend,
    *,
    isolation: IsolationLevel | None,
    read_only: bool,
    run_hooks: bool = True,
) -> AsyncIterator[Transaction]:
    """Open a transaction, or a savepoint when one of ``backend`` is already open here.

    Errors come out as raised (the caller translates them), except a COMMIT whose answer
    was lost, which becomes :class:`CommitUnknownError`. With ``run_hooks=False`` the
    caller runs the hooks (:func:`run_with_retry`, once it knows the final attempt).
    """
    parent = _open_here(backend)
    if parent is not None:
        async with _savepoint(parent) as child:
            yield child
        return
    started = time.perf_counter()
    outcome: Outcome = "rollback"
    committed: Transaction | None = None
    try:
        async with backend.session_for(isolation=isolation, read_only=read_only) as session:
            tx = Transaction(session, backend, _enclosing=_current.get())
            token = _current.set(tx)
            try:
                try:
                    yield tx
                    if session.new or session.dirty or session.deleted:
                        await session.flush()  # a failure here is before COMMIT: a rollback
                    if not read_only:  # nothing of a read-only one to lose
                        await refuse_aborted(session)  # PostgreSQL would answer ROLLBACK
                except BaseException:
                    await _quiet_rollback(session)
                    raise
                outcome = "unknown"  # from the moment COMMIT may have been sent (or cancelled)
                try:
                    await session.commit()
                except Exception as error:
                    if commit_outcome_unknown(error):
                        await _quiet_rollback(session)
                        raise CommitUnknownError(
                            "the connection was lost during COMMIT: "
                            "the transaction may have committed"
                        ) from error
                    outcome = "rollback"  # the server answered: it refused the commit
                    await _quiet_rollback(session)
                    raise
                outcome = "commit"
            finally:
                _current.reset(token)
                tx._open = False
                tx.outcome = outcome
                committed = tx if outcome == "commit" else None
                target = str(session.info.get("corestone_target", "primary"))
                seconds = time.perf_counter() - started
                backend.record_outcome(outcome, seconds, read_only=read_only, target=target)
                if run_hooks and outcome != "commit":
                    await tx._run_hooks()
    finally:
        # After a COMMIT, its hooks run even if giving the session back to the pool
        # fails or is cancelled: the work is durable whatever happens to the caller.
        if run_hooks and committed is not None:
            await committed._run_hooks()


@asynccontextmanager
async def _savepoint(parent: Transaction) -> AsyncIterator[Transaction]:
    child = Transaction(parent.session, parent.database, parent=parent, _enclosing=_current.get())
    token = _current.set(child)
    # SQLAlchemy's own context manager also rolls back a savepoint that a failed flush
    # already deactivated, which leaves the outer transaction usable. A read-only
    # transaction has nothing to undo (and autocommit has no SAVEPOINT): no savepoint.
    read_only = is_read_only(parent.session)
    savepoint: AbstractAsyncContextManager[object] = (
        nullcontext() if read_only else parent.session.begin_nested()
    )
    name: str | None = None
    finished = False
    try:
        try:
            async with savepoint:
                if not read_only:
                    name = await _savepoint_name(parent.session)
                yield child
                finished = True
        except BaseException:
            if finished and name is not None:
                await _undo_unreleased(parent.session, name)
            raise
    except BaseException:
        child._merge_into_parent(committed=False)
        raise
    else:
        child._merge_into_parent(committed=True)
    finally:
        child._open = False
        _current.reset(token)


async def _savepoint_name(session: AsyncSession) -> str | None:
    """The name of the savepoint just opened on ``session``'s connection."""
    sync = (await session.connection()).sync_connection
    nested = None if sync is None else sync.get_nested_transaction()
    return None if nested is None else str(getattr(nested, "_savepoint", "")) or None


async def _undo_unreleased(session: AsyncSession, name: str) -> None:
    """Roll back a savepoint whose RELEASE failed, so the outer transaction stays usable.

    A block that catches a statement's error and returns normally leaves a PostgreSQL
    transaction aborted: RELEASE fails, SQLAlchemy deactivates the savepoint without
    rolling it back, every later statement fails, and the outer COMMIT is answered with a
    silent ROLLBACK, undoing the work of every other savepoint (a consumer's batch acked
    events whose effects were gone). ROLLBACK TO SAVEPOINT works in an aborted
    transaction and undoes only this block.
    """
    try:
        connection = await session.connection()
        await connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
        await connection.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
    except Exception as error:  # noqa: BLE001 - the RELEASE's own error matters more
        log.warning("rollback to savepoint failed", error=repr(error))


async def _quiet_rollback(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception as error:  # noqa: BLE001 - the original error matters more
        log.warning("rollback failed", error=repr(error))


def _is_transient(error: BaseException) -> bool:
    return transient_cause(error) is not None


async def run_with_retry(
    backend: TransactionBackend,
    fn: Callable[[Transaction], Awaitable[T]],
    *,
    retry: Retry,
    isolation: IsolationLevel | None,
    read_only: bool,
) -> T:
    """Run ``fn`` in a transaction, re-running the whole of it on transient failures.

    ``retry`` decides how often and how long; only errors :func:`transient_cause` names
    are retried (and, of those, what ``retry.retry_on`` accepts). The hooks of the last
    attempt run once its outcome is final; a retried attempt's hooks are dropped. The
    last error is raised, translated to a corestone error when it is a driver error.
    """
    if _open_here(backend) is not None:
        raise RuntimeError("run_in_transaction cannot retry inside an open transaction")
    last: list[Transaction] = []

    async def attempt(number: int) -> T:
        last.clear()
        async with open_transaction(
            backend, isolation=isolation, read_only=read_only, run_hooks=False
        ) as tx:
            last.append(tx)
            return await fn(tx)

    def on_retry(error: BaseException, number: int, wait: float) -> None:
        cause = transient_cause(error) or "unknown"
        backend.record_retry(cause)
        log.info("retrying transaction", cause=cause, attempt=number, delay_s=round(wait, 4))

    try:
        result = await retry.run(attempt, retry_if=_is_transient, on_retry=on_retry)
    except BaseException as error:
        if last:
            await last[0]._run_hooks()
        translated = translate_error(error)
        if translated is error:
            raise
        raise translated from error
    await last[0]._run_hooks()
    return result
