"""``@cached``: memoize an async function in a TieredCache, key and tags from its arguments.

The key is built from the call's arguments by a template (``"user:{user_id}"``) or a
function; tags likewise, and only when a load happens. Everything ``get_or_load`` does
(single flight, fail-safe, locks, eager refresh) applies to decorated functions too.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Final, ParamSpec, TypeVar

from corestone.cache.tiered import TieredCache

__all__ = ["KeySpec", "TagSpec", "cached"]

P = ParamSpec("P")
R = TypeVar("R")

KeySpec = str | Callable[..., str] | None
TagSpec = Iterable[str] | Callable[..., Iterable[str]]

# What ``object.__repr__`` (and functions, coroutines, …) print: a memory address, which
# the next object may reuse once this one is collected. Never part of a default key. The
# name inside may hold ``<locals>`` or ``<lambda>`` (a local class, a lambda).
_ADDRESS: Final = re.compile(r"<[^<>]*(?:<[^<>]*>[^<>]*)* at 0x[0-9a-fA-F]+>")


def cached(
    cache: TieredCache | Callable[[], TieredCache],
    *,
    key: KeySpec = None,
    tags: TagSpec = (),
    ttl: float | None = None,
    workspace: str | int | None = None,
    **options: Any,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Cache the results of an async function.

    ``cache`` may be a function returning the cache (resolved at call time, so a module
    can decorate before the composition root exists). ``key``: a ``str.format`` template
    over the parameters, a function of the same arguments, or ``None`` for
    ``module.qualname``, the values a closure captured (when decorated), and the
    arguments' ``repr``. A default key refuses (``TypeError``) any part whose ``repr`` is
    a memory address (``object.__repr__``): the address is reused after garbage
    collection, so one object's result would be served for another; give such
    functions a ``key=``. ``tags``: templates or a function.
    ``options`` are :class:`~corestone.cache.CacheOptions` fields. The wrapper has
    ``.invalidate(*args, **kwargs)`` to drop one call's entry.
    """

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("@cached decorates async functions")
        make_key = _key_builder(fn, key)
        make_tags = _tags_builder(fn, tags)
        resolve = cache if not isinstance(cache, TieredCache) else None
        fixed = cache if isinstance(cache, TieredCache) else None

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            target = fixed if fixed is not None else resolve()  # type: ignore[misc]
            result: R = await target.get_or_load(
                make_key(args, kwargs),
                lambda: fn(*args, **kwargs),
                ttl=ttl,
                tags=_Lazy(make_tags, args, kwargs),
                workspace=workspace,
                **options,
            )
            return result

        async def invalidate(*args: Any, **kwargs: Any) -> None:
            target = fixed if fixed is not None else resolve()  # type: ignore[misc]
            await target.delete(make_key(args, kwargs), workspace=workspace)

        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        return wrapper

    return decorate


class _Lazy:
    """Tags computed only when iterated, i.e. only when a load stores the value."""

    __slots__ = ("_args", "_kwargs", "_make")

    def __init__(
        self,
        make: Callable[[tuple[Any, ...], dict[str, Any]], Iterable[str]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._make, self._args, self._kwargs = make, args, kwargs

    def __iter__(self) -> Iterator[str]:
        return iter(self._make(self._args, self._kwargs))


def _key_builder(
    fn: Callable[..., Any], spec: KeySpec
) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
    if spec is None:
        return _default_key(fn)
    if isinstance(spec, str):
        return _template(fn, spec)
    function = spec
    return lambda args, kwargs: function(*args, **kwargs)


def _default_key(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
    """``module.qualname:`` + the arguments by parameter, defaults filled in.

    ``f(7)``, ``f(user_id=7)`` and ``f(7, verbose=False)`` are one call, so one key (and
    ``f.invalidate(7)`` drops it). Functions with ``*args``/``**kwargs`` fall back to the
    arguments as given.
    """
    prefix = f"{_identity(fn, set())}:"
    name = f"{fn.__module__}.{fn.__qualname__}"
    if _ADDRESS.search(prefix):
        raise TypeError(
            f"@cached {name}: a value it captured prints as a memory address; "
            "pass key= (a template or a function) to name its entries"
        )
    parameters = inspect.signature(fn).parameters
    kinds = {p.kind for p in parameters.values()}
    if inspect.Parameter.VAR_POSITIONAL in kinds or inspect.Parameter.VAR_KEYWORD in kinds:

        def as_given(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            key = f"{prefix}{args!r}{sorted(kwargs.items())!r}" if kwargs else f"{prefix}{args!r}"
            if " at 0x" in key:  # cheap test inline; the regex only when it may match
                _refuse_address(key, name)
            return key

        return as_given
    names = list(parameters)
    positional = [
        name
        for name, p in parameters.items()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    defaults = {n: p.default for n, p in parameters.items() if p.default is not p.empty}
    if len(positional) == len(names) and not defaults:

        def positional_only(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if not kwargs and len(args) == len(names):
                key = f"{prefix}{args!r}"  # the common call: nothing to normalise
            else:
                values = dict(zip(positional, args, strict=False))
                values.update(kwargs)
                key = f"{prefix}{tuple(values.get(n) for n in names)!r}"
            if " at 0x" in key:
                _refuse_address(key, name)
            return key

        return positional_only

    def normalised(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        values = dict(defaults)
        values.update(zip(positional, args, strict=False))
        values.update(kwargs)
        key = f"{prefix}{tuple(values.get(n) for n in names)!r}"
        if " at 0x" in key:
            _refuse_address(key, name)
        return key

    return normalised


def _refuse_address(key: str, name: str) -> None:
    """Raise if an argument printed as a memory address into ``key``."""
    if _ADDRESS.search(key):
        raise TypeError(
            f"@cached {name}: an argument prints as a memory address (object.__repr__), "
            "which another object reuses after garbage collection; pass key= (a template "
            "or a function) or give the argument's type a __repr__ that identifies it"
        )


def _identity(fn: Any, seen: set[int]) -> str:
    """``module.qualname``, plus what a closure captured: the qualname alone is shared by
    every closure one factory makes (``make(2)`` and ``make(3)``). Captured functions
    (a decorator's wrapped function) count by their own identity, not their address."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    cells = getattr(fn, "__closure__", None)
    if not cells or id(fn) in seen:
        return name
    seen.add(id(fn))
    parts = []
    for var, cell in zip(fn.__code__.co_freevars, cells, strict=True):
        try:
            value = cell.cell_contents
        except ValueError:  # assigned after the decoration: unknown now, so not identity
            value = None
        if isinstance(value, types.FunctionType):
            parts.append(f"{var}={_identity(value, seen)}")
        else:
            parts.append(f"{var}={value!r}")
    return f"{name}[{', '.join(parts)}]"


def _tags_builder(
    fn: Callable[..., Any], spec: TagSpec
) -> Callable[[tuple[Any, ...], dict[str, Any]], Iterable[str]]:
    if callable(spec):
        function = spec
        return lambda args, kwargs: function(*args, **kwargs)
    if isinstance(spec, str):
        raise TypeError("tags must be a list of templates or a function, not one string")
    templates = [_template(fn, item) for item in spec]
    return lambda args, kwargs: [render(args, kwargs) for render in templates]


def _template(
    fn: Callable[..., Any], template: str
) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
    """Format ``template`` with the call's arguments by name, defaults included."""
    parameters = inspect.signature(fn).parameters
    names = [
        name
        for name, p in parameters.items()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    defaults = {
        name: p.default
        for name, p in parameters.items()
        if p.default is not inspect.Parameter.empty
    }

    def render(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        values = dict(defaults)
        values.update(zip(names, args, strict=False))
        values.update(kwargs)
        return template.format_map(values)

    return render
