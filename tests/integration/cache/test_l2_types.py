"""Values through L2 on real Redis come back as the types L1 returns (tuples included)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ._support import fresh_namespace, tiered

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    async with fresh_namespace(redis_url) as name:
        yield name


VALUES: list[Any] = [
    (1, (2, "three")),
    {(1, 2): "tuple key", "plain": [(), (None,)]},
    {"ids": {(1, 2), (3, 4)}},
]


@pytest.mark.parametrize("value", VALUES, ids=["nested-tuple", "tuple-keys", "set-of-tuples"])
async def test_l1_and_l2_return_the_same_types(redis_url: str, namespace: str, value: Any) -> None:
    """A value read from Redis equals, type for type, the one L1 returns."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        await a.set("v", value)
        from_l1 = await a.get("v")
        b.memory.clear()
        from_l2 = await b.get("v")
        assert from_l2 == from_l1 == value
        assert repr(from_l2) == repr(from_l1)
        b.memory.clear()
        many = await b.get_many(["v"])
        assert repr(many["v"]) == repr(value)
