"""``@cached`` default keys: one key per distinct call, never a key shared by chance."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from corestone.cache import TieredCache, cached


@pytest.fixture
async def cache() -> AsyncIterator[TieredCache]:
    async with TieredCache(namespace="deco") as built:
        yield built


def _scaler(cache: TieredCache, factor: int) -> Callable[[int], Awaitable[int]]:
    @cached(cache, ttl=60)
    async def scaled(x: int) -> int:
        return x * factor

    return scaled


async def test_closures_from_one_factory_do_not_share_a_key(cache: TieredCache) -> None:
    """Two closures of one factory share a qualname; each must still get its own results."""
    double, triple = _scaler(cache, 2), _scaler(cache, 3)
    assert await double(5) == 10
    assert await triple(5) == 15
    assert await double(5) == 10


async def test_closures_capturing_the_same_values_share_their_entries(cache: TieredCache) -> None:
    """Identity is what a closure captured: equal captures compute equal results."""
    calls = 0

    def make() -> Callable[[int], Awaitable[int]]:
        @cached(cache, ttl=60)
        async def load(x: int) -> int:
            nonlocal calls
            calls += 1
            return x

        return load

    first, second = make(), make()
    assert await first(1) == await second(1) == 1
    assert calls == 1


class _Opaque:
    """No __repr__ of its own: object.__repr__ prints a memory address."""


async def test_an_argument_printed_as_a_memory_address_is_refused(cache: TieredCache) -> None:
    """A default repr is an address the next object may reuse: never a default key part."""

    @cached(cache, ttl=60)
    async def describe(item: object) -> str:
        return "described"

    with pytest.raises(TypeError, match="key="):
        await describe(_Opaque())
    with pytest.raises(TypeError, match="key="):
        await describe([1, _Opaque()])  # nested too


async def test_a_key_function_makes_such_arguments_cacheable(cache: TieredCache) -> None:
    """With ``key=`` the caller names the entry, so any argument is fine."""
    calls = 0

    @cached(cache, ttl=60, key=lambda item: "the-one")
    async def describe(item: object) -> str:
        nonlocal calls
        calls += 1
        return "described"

    assert await describe(_Opaque()) == await describe(_Opaque()) == "described"
    assert calls == 1


async def test_a_captured_object_printed_as_an_address_is_refused_at_decoration(
    cache: TieredCache,
) -> None:
    """A closure over an object with a default repr has no stable identity: ask for key=."""
    captured = _Opaque()

    with pytest.raises(TypeError, match="key="):

        @cached(cache, ttl=60)
        async def load(x: int) -> object:
            return captured


async def test_a_function_wrapped_by_another_decorator_keeps_a_default_key(
    cache: TieredCache,
) -> None:
    """A decorator's wrapper captures the wrapped function: counted by name, not address."""

    def logged(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any) -> Any:
            return await fn(*args)

        return wrapper

    @cached(cache, ttl=60)
    @logged
    async def load(x: int) -> int:
        return x + 1

    assert await load(1) == 2
