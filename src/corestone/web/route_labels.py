"""The route label of a request: its template (``/ws/{ws}/tasks/{id}``), never its raw path.

Raw paths as metric labels let any client create series at will. The template comes
from the route that handled the request (FastAPI puts it in ``scope["route"]``) or, when
no route ran (a body refused before the app, a plain Starlette route), from matching the
app's routes again. Behind a :class:`~starlette.routing.Mount` Starlette grows
``root_path`` by the *matched* prefix (``/ws/42``), so the mounts' own templates are
found by walking the route tree from the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Scope

__all__ = ["UNMATCHED", "route_template", "routes_of"]

UNMATCHED = "unmatched"
_MOUNT = "/{mount}"  # a mount whose template could not be found: still one label
_MAX_WRAPPERS = 16


def routes_of(app: ASGIApp) -> Sequence[BaseRoute] | None:
    """The routes of the Starlette/FastAPI app inside ``app``'s middleware, if any."""
    current: Any = app
    for _ in range(_MAX_WRAPPERS):
        routes = getattr(current, "routes", None)
        if isinstance(routes, Sequence):
            return routes
        current = getattr(current, "app", None)
        if current is None:
            return None
    return None


def route_template(scope: Scope, routes: Sequence[BaseRoute] | None = None) -> str:
    """The template of the route that handled ``scope``, mounts included, or ``unmatched``.

    ``routes`` are the top-level routes of the app (see :func:`routes_of`); without them
    a mount's template cannot be found and shows as ``/{mount}``. Never raises: a path
    that makes route matching itself fail (Starlette's ``int`` convertor on 5,000
    digits) is ``unmatched``, so its 500 is still counted.
    """
    try:
        return _route_template(scope, routes)
    except Exception:  # noqa: BLE001 - a label must never cost the request its metrics
        return UNMATCHED


def _route_template(scope: Scope, routes: Sequence[BaseRoute] | None) -> str:
    root = str(scope.get("root_path", ""))
    base = str(scope.get("app_root_path", root))  # the root_path before any mount
    inner = _template_of(scope.get("route"))
    if inner is not None and root == base:
        return base + inner  # the common case: no mount, the route is known
    prefix, opaque = "", False
    if routes is not None:
        prefix, found, opaque = _walk(routes, _probe(scope, base))
        inner = found or inner
    if inner is None and opaque:
        return base + prefix  # a mount of an app without routes: its template is the label
    if inner is None:
        inner = _match_in(getattr(scope.get("app"), "routes", ()), scope)
    if inner is None:
        return UNMATCHED
    if not prefix and root != base:
        prefix = _MOUNT
    return base + prefix + inner


def _template_of(route: object) -> str | None:
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _probe(scope: Scope, root_path: str) -> dict[str, Any]:
    return {
        "type": scope.get("type", "http"),
        "path": scope.get("path", ""),
        "root_path": root_path,
        "method": scope.get("method", "GET"),
    }


def _match_in(routes: Any, scope: Scope) -> str | None:
    """The template of the route Starlette would pick: the first full match, else partial."""
    partial: str | None = None
    for candidate in routes if isinstance(routes, Sequence) else ():
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return _template_of(candidate) or UNMATCHED
        if match is Match.PARTIAL and partial is None:
            partial = _template_of(candidate)
    return partial


def _walk(routes: Sequence[BaseRoute], probe: dict[str, Any]) -> tuple[str, str | None, bool]:
    """Route the probe through the mounts as Starlette would: their templates, and the leaf's.

    The flag says the last mount holds an app with no routes to walk (a plain ASGI app,
    static files, or an app inside middleware).
    """
    prefix = ""
    for _ in range(_MAX_WRAPPERS):
        mount = _matching_mount(routes, probe)
        if mount is None:
            return prefix, _match_in(routes, probe), bool(prefix) and not routes
        route, child = mount
        prefix += route.path
        probe = {**probe, **child}
        routes = route.routes
    return prefix, None, False


def _matching_mount(
    routes: Sequence[BaseRoute], probe: dict[str, Any]
) -> tuple[Mount, Scope] | None:
    # Starlette takes the first full match in order; a plain route first means no mount.
    for candidate in routes:
        match, child = candidate.matches(probe)
        if match is Match.FULL:
            return (candidate, child) if isinstance(candidate, Mount) else None
    return None
