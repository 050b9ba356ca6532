"""The application's line that issued a query: the first frame outside the libraries.

SQLAlchemy's asyncio layer runs the sync engine code (where the engine events fire) in a
greenlet of its own, whose frames end at the greenlet's start; the coroutines that
awaited the query (the application's among them) are the suspended frames of its parent
greenlet. The walk goes through the current greenlet's frames, then each parent's.

Only called when something is reported (once per N+1 per unit of work): a walk of a few
dozen frames, never per query.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any, Final

__all__ = ["LIBRARY_PACKAGES", "call_site"]

LIBRARY_PACKAGES: Final = frozenset(
    {
        "corestone",
        "sqlalchemy",
        "asyncio",
        "anyio",
        "starlette",
        "fastapi",
        "contextlib",
        "greenlet",
        "asyncpg",
        "aiosqlite",
        "concurrent",
        "threading",
        "uvicorn",
        "httpx",
        "svcs",
    }
)
"""Top-level modules whose frames are never the call site."""

_MAX_FRAMES: Final = 500


def call_site(skip: frozenset[str] = LIBRARY_PACKAGES) -> str | None:
    """``file:line`` of the innermost frame outside ``skip``, or None if there is none."""
    frame: FrameType | None = sys._getframe(1)
    glet = _current_greenlet()
    for _ in range(_MAX_FRAMES):
        if frame is None:
            if glet is None or glet.parent is None:
                return None
            glet = glet.parent
            frame = glet.gr_frame
            continue
        module = frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.partition(".")[0] not in skip:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _current_greenlet() -> Any:
    try:
        from greenlet import getcurrent  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - SQLAlchemy's asyncio extra brings greenlet
        return None
    return getcurrent()
