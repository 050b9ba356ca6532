"""Request-scoped context (correlation id, actor, workspace) carried by contextvars.

Values set here follow the request through ``await`` and ``asyncio`` tasks created while
handling it, so logs, audit rows and outgoing messages can pick them up without every
function passing them along.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = [
    "MAX_CORRELATION_ID_LENGTH",
    "actor_id",
    "bind",
    "bind_to_request",
    "correlation_id",
    "new_correlation_id",
    "request_scope",
    "request_state",
    "sanitize_correlation_id",
    "workspace_id",
]

_correlation_id: ContextVar[str | None] = ContextVar("corestone_correlation_id", default=None)
_actor_id: ContextVar[str | None] = ContextVar("corestone_actor_id", default=None)
_workspace_id: ContextVar[str | None] = ContextVar("corestone_workspace_id", default=None)
_request_state: ContextVar[dict[str, object] | None] = ContextVar(
    "corestone_request_state", default=None
)
# The thread the request scope was opened on: bind_to_request anywhere else (a sync
# dependency's worker thread) would set a copy of the context that is thrown away.
_request_thread: ContextVar[int | None] = ContextVar("corestone_request_thread", default=None)

MAX_CORRELATION_ID_LENGTH = 128
"""The longest correlation id accepted from a request, and stored whole on audit rows."""

# What we accept from an incoming X-Request-ID: printable, short, no separators that
# could split a log line or a header. Anything else is replaced, never echoed.
_SAFE_ID = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_CORRELATION_ID_LENGTH}}}")


def correlation_id() -> str | None:
    """The correlation id of the work in progress, if any."""
    return _correlation_id.get()


def actor_id() -> str | None:
    """Who is acting (a user id), if known."""
    return _actor_id.get()


def workspace_id() -> str | None:
    """The tenant the work belongs to, if any."""
    return _workspace_id.get()


def new_correlation_id() -> str:
    """A fresh, unguessable correlation id."""
    return uuid.uuid4().hex


def sanitize_correlation_id(candidate: str | None) -> str:
    """Return ``candidate`` if it is a safe id, else a fresh one."""
    if candidate is not None and _SAFE_ID.fullmatch(candidate):
        return candidate
    return new_correlation_id()


_UNSET = object()


@contextmanager
def bind(
    *,
    correlation: str | object | None = _UNSET,
    actor: str | int | object | None = _UNSET,
    workspace: str | int | object | None = _UNSET,
) -> Iterator[None]:
    """Set context values for the duration of the block, restoring the old ones after."""
    tokens = []
    if correlation is not _UNSET:
        tokens.append((_correlation_id, _correlation_id.set(_as_str(correlation))))
    if actor is not _UNSET:
        tokens.append((_actor_id, _actor_id.set(_as_str(actor))))
    if workspace is not _UNSET:
        tokens.append((_workspace_id, _workspace_id.set(_as_str(workspace))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _as_str(value: object) -> str | None:
    return None if value is None else str(value)


@contextmanager
def request_scope() -> Iterator[dict[str, object]]:
    """Mark one unit of work (an HTTP request, a job) and give it a private state dict.

    Components keep per-request facts there — e.g. the database remembers that this
    request has written, so its later reads go to the primary. The web middleware opens
    one per request; a worker should open one per job, never one for its whole life.
    The actor and workspace are restored when it ends, so :func:`bind_to_request` can
    set them from anywhere inside it without a block of its own.
    """
    state: dict[str, object] = {}
    state_token = _request_state.set(state)
    thread_token = _request_thread.set(threading.get_ident())
    actor_token = _actor_id.set(_actor_id.get())
    workspace_token = _workspace_id.set(_workspace_id.get())
    try:
        yield state
    finally:
        _workspace_id.reset(workspace_token)
        _actor_id.reset(actor_token)
        _request_thread.reset(thread_token)
        _request_state.reset(state_token)


def bind_to_request(
    *, actor: str | int | object | None = _UNSET, workspace: str | int | object | None = _UNSET
) -> None:
    """Set the actor or workspace for the rest of the unit of work in progress.

    For request dependencies: FastAPI runs a plain ``async def`` dependency in the
    request's own context, so a value set here reaches the endpoint, and the enclosing
    :func:`request_scope` restores the old one when the request ends. A generator
    dependency holding :func:`bind` open would do the same at several times the cost
    per request (docs/performance.md). Outside a request scope it raises, since nothing
    would ever undo it; so it does on another thread than the scope's (a sync
    dependency's), where the value would be lost with the thread's copy of the context.
    """
    if _request_state.get() is None:
        raise RuntimeError("bind_to_request() outside a request_scope(): use bind() instead")
    if _request_thread.get() != threading.get_ident():
        raise RuntimeError(
            "bind_to_request() on another thread than its request_scope() (a sync dependency"
            " runs in a worker thread on a copy of the context, lost when it returns):"
            " make the dependency async def"
        )
    if actor is not _UNSET:
        _actor_id.set(_as_str(actor))
    if workspace is not _UNSET:
        _workspace_id.set(_as_str(workspace))


def request_state() -> dict[str, object] | None:
    """The state of the unit of work in progress, or None outside of one."""
    return _request_state.get()
