"""Application services on svcs: registration, a request scope, and test overrides.

corestone does not write a DI container; it wraps svcs's registry and containers with the
two things a service needs from the composition root: a scope per request whose cleanups
run when the request ends, and a way for tests to swap one service for another and get
the original back afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import svcs

__all__ = ["Services"]

T = TypeVar("T")


class Services:
    """The registry of application services and the factory of request scopes."""

    def __init__(self, registry: svcs.Registry | None = None) -> None:
        self.registry = registry if registry is not None else svcs.Registry()

    def register_value(
        self, svc_type: type[T], value: T, *, ping: Callable[..., Any] | None = None
    ) -> None:
        """Serve ``value`` whenever ``svc_type`` is asked for."""
        self.registry.register_value(svc_type, value, ping=ping)

    def register_factory(
        self,
        svc_type: type[T],
        factory: Callable[..., Any],
        *,
        ping: Callable[..., Any] | None = None,
    ) -> None:
        """Build ``svc_type`` once per scope with ``factory``.

        A factory that takes an ``svcs.Container`` argument gets the scope, so it can ask
        for other services; a generator factory's code after ``yield`` runs when the
        scope closes (the request ends).
        """
        self.registry.register_factory(svc_type, factory, ping=ping)

    def scope(self) -> svcs.Container:
        """A new request scope; use it as ``async with services.scope() as scope``."""
        return svcs.Container(self.registry)

    @contextmanager
    def override(self, svc_type: type[T], value: T) -> Iterator[T]:
        """Serve ``value`` for ``svc_type`` inside the block, then restore what was there."""
        previous = _registration(self.registry, svc_type)
        self.registry.register_value(svc_type, value)
        try:
            yield value
        finally:
            _restore(self.registry, svc_type, previous)

    async def aclose(self) -> None:
        """Run the registry's close callbacks."""
        await self.registry.aclose()


def _registration(registry: svcs.Registry, svc_type: type[Any]) -> svcs.RegisteredService | None:
    if svc_type not in registry:
        return None
    return registry.get_registered_service_for(svc_type)


def _restore(
    registry: svcs.Registry, svc_type: type[Any], previous: svcs.RegisteredService | None
) -> None:
    # svcs has no public "unregister"; the mapping entry is all a registration is, so put
    # back exactly the one that was there (registering its factory again would lose
    # options such as ``suppress_context_exit``), or drop the override's.
    if previous is None:
        registry._services.pop(svc_type, None)
    else:
        registry._services[svc_type] = previous
