"""``@cached`` default keys refuse every repr holding a memory address, local names included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from corestone.cache import TieredCache, cached


@pytest.fixture
async def cache() -> AsyncIterator[TieredCache]:
    async with TieredCache(namespace="deco") as built:
        yield built


def _locals() -> list[Any]:
    class Local:
        pass

    def helper() -> None:
        pass

    return [Local(), helper, lambda: None, Local().__init__]


@pytest.mark.parametrize(
    "argument", _locals(), ids=["local-instance", "local-function", "lambda", "bound"]
)
async def test_an_argument_of_a_local_type_printed_as_an_address_is_refused(
    cache: TieredCache, argument: Any
) -> None:
    """An address in a repr whose name holds ``<locals>`` or ``<lambda>`` is still an
    address the next object may reuse: never part of a default key."""

    @cached(cache, ttl=60)
    async def load(x: Any) -> int:
        return id(x)

    with pytest.raises(TypeError, match="memory address"):
        await load(argument)


def test_a_captured_local_object_printed_as_an_address_is_refused_at_decoration(
    cache: TieredCache,
) -> None:
    """A closure capturing an instance of a local class cannot be told apart by its repr."""

    def make(captured: Any) -> Callable[[int], Awaitable[int]]:
        async def load(x: int) -> int:
            return x + id(captured)

        return load

    with pytest.raises(TypeError, match="memory address"):
        cached(cache, ttl=60)(make(_locals()[0]))
