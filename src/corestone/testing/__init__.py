"""Test support for services built on corestone (also used by corestone's own tests).

The pytest plugin (loaded automatically through the ``pytest11`` entry point) provides:

- ``postgres_url``: a fresh, empty PostgreSQL database per test, dropped afterwards;
- ``database_url``: the same test run once on SQLite (a temporary file) and once on
  PostgreSQL;
- ``redis_url``: a reachable Redis, for tests that need one;
- ``redis_server``: a redis-server of the test's own on a spare port, to kill and freeze.

And the fakes a service's own tests need: :class:`ManualClock` (the ``clock=`` of every
time-based component), :class:`QueryCounter` (what a piece of code sends to the
database, checkouts included; with ``at_most=K`` it fails a block that sends more
queries), :class:`RedisServer` and :class:`MemoryProvider` (an email provider that keeps
what it is sent, and fails when told to).

A missing server skips those tests on a developer machine and fails them under
``CI=true``, so CI can never go green by skipping. Point the plugin at other servers with
``CORESTONE_TEST_POSTGRES_URL`` and ``CORESTONE_TEST_REDIS_URL``.
"""

from typing import TYPE_CHECKING

from corestone import _lazy
from corestone.testing.clock import ManualClock
from corestone.testing.redis_server import RedisServer
from corestone.testing.services import (
    postgres_admin_url,
    redis_test_url,
    require_service,
    services_required,
)

if TYPE_CHECKING:
    from corestone.email.providers.memory import MemoryProvider
    from corestone.testing.queries import QueryCounter


# QueryCounter needs SQLAlchemy (the 'postgres' or 'sqlite' extra), MemoryProvider the
# 'email' extra; the rest needs neither.
__getattr__, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "MemoryProvider": "corestone.email.providers.memory",
        "QueryCounter": "corestone.testing.queries",
    },
)


__all__ = [
    "ManualClock",
    "MemoryProvider",
    "QueryCounter",
    "RedisServer",
    "postgres_admin_url",
    "redis_test_url",
    "require_service",
    "services_required",
]
