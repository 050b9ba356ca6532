"""Which optional dependencies each capability needs, and the error when one is missing.

corestone installs a small core; each capability's dependencies come with an extra named
for it (``pip install 'corestone[redis]'``). A module that needs an extra imports its
third-party dependencies inside :func:`requires_extra`, so a missing one surfaces as a
:class:`~corestone.errors.MissingExtraError` naming the extra and the install command,
not as a ``ModuleNotFoundError`` from deep inside. The table below is checked against
pyproject.toml by a test, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

from corestone.errors import MissingExtraError

__all__ = ["EXTRA_MODULES", "requires_extra"]

EXTRA_MODULES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "alerts": frozenset({"httpx"}),
        "cli": frozenset({"typer"}),
        "email": frozenset({"aiolimiter", "cryptography", "email_validator", "httpx", "jinja2"}),
        "nats": frozenset({"nats"}),
        "postgres": frozenset({"alembic", "asyncpg", "sqlalchemy"}),
        "push": frozenset({"cryptography", "http_ece", "httpx", "py_vapid"}),
        "queries": frozenset({"sqlglot"}),
        "rabbitmq": frozenset({"aio_pika"}),
        "redis": frozenset({"msgpack", "redis"}),
        "ses": frozenset({"botocore"}),
        "smtp": frozenset({"aiosmtplib", "dkim"}),
        "sqlite": frozenset({"aiosqlite", "alembic", "sqlalchemy"}),
        "web": frozenset({"fastapi", "httptools", "starlette", "uvicorn", "uvloop"}),
    }
)
"""The top-level modules each extra brings (import names, not distribution names)."""


@contextmanager
def requires_extra(module: str, *extras: str) -> Iterator[None]:
    """Turn a missing dependency of ``extras`` into a :class:`MissingExtraError`.

    ``module`` is the corestone module doing the import (``__name__``); ``extras`` lists
    the extras any of which provides what it needs (``"postgres", "sqlite"`` for the
    SQLAlchemy layer). A missing module that belongs to none of them is a real bug, not
    a missing extra, and propagates unchanged.
    """
    unknown = [extra for extra in extras if extra not in EXTRA_MODULES]
    if unknown or not extras:
        raise ValueError(f"unknown extras {unknown or extras!r}")
    try:
        yield
    except ModuleNotFoundError as exc:
        if isinstance(exc, MissingExtraError):
            raise
        missing = (exc.name or "").partition(".")[0]
        if not any(missing in EXTRA_MODULES[extra] for extra in extras):
            raise
        raise MissingExtraError(module, extras, missing) from exc
