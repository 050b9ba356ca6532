"""The one way the integration tests run an app's lifespan in process.

asgi_lifespan gives startup and shutdown 5 s each. taskboard stops a dozen components
(consumers, relay, live streams, email sender, cache, database), each bounded by the
runtime's own timeout; on a machine busy with the rest of the suite that took longer than
5 s once, and the test failed in teardown with a bare ``TimeoutError`` that named nothing.
The allowance here is above the runtime's default stop timeout (30 s), so a component that
really hangs is reported by the runtime, by name, before this gives up.
"""

from __future__ import annotations

from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp

__all__ = ["lifespan_of"]

_ALLOWANCE_SECONDS = 60.0


def lifespan_of(app: ASGIApp) -> LifespanManager:
    """``app`` started and stopped by its lifespan, with room for a busy machine."""
    return LifespanManager(
        app, startup_timeout=_ALLOWANCE_SECONDS, shutdown_timeout=_ALLOWANCE_SECONDS
    )
