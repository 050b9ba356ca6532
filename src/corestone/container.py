"""Application services on svcs: registration, a request scope, and test overrides.

corestone does not write a DI container; it wraps svcs's registry and containers with the
two things a service needs from the composition root: a scope per request whose cleanups
run when the request ends, and a way for tests to swap one service for another.

Overrides never touch the registry: each scope opened inside ``override()`` gets the fake
through svcs's public ``Container.register_local_value``, so leaving the block restores
everything by construction. Readiness comes from the components the
:class:`~corestone.Infrastructure` manages (``add(component, check=…)``), so services are
registered without svcs's ``ping=``.
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
        self._overrides: list[tuple[type[Any], object]] = []

    def register_value(self, svc_type: type[T], value: T) -> None:
        """Serve ``value`` whenever ``svc_type`` is asked for."""
        self.registry.register_value(svc_type, value)

    def register_factory(self, svc_type: type[T], factory: Callable[..., Any]) -> None:
        """Build ``svc_type`` once per scope with ``factory``.

        A factory that takes an ``svcs.Container`` argument gets the scope, so it can ask
        for other services; a generator factory's code after ``yield`` runs when the
        scope closes (the request ends).
        """
        self.registry.register_factory(svc_type, factory)

    def scope(self) -> svcs.Container:
        """A new request scope; use it as ``async with services.scope() as scope``."""
        container = svcs.Container(self.registry)
        for svc_type, value in self._overrides:  # later (inner) overrides win
            container.register_local_value(svc_type, value)
        return container

    @contextmanager
    def override(self, svc_type: type[T], value: T) -> Iterator[T]:
        """Serve ``value`` for ``svc_type`` in every scope opened inside the block.

        Scopes opened before the block, and every scope after it, are untouched; the
        registration itself is never changed. Not for production wiring: register there.
        """
        entry: tuple[type[Any], object] = (svc_type, value)
        self._overrides.append(entry)
        try:
            yield value
        finally:
            # By identity: the same fake may be pushed twice by nested blocks.
            index = max(i for i, held in enumerate(self._overrides) if held is entry)
            del self._overrides[index]

    async def aclose(self) -> None:
        """Run the registry's close callbacks."""
        await self.registry.aclose()
