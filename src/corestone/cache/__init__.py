"""A coherent two-level cache: L1 in the process, L2 in Redis, a backplane between instances.

See docs/cache.md. The names here are the public API; submodules hold the parts.
:class:`RedisCache` needs the ``redis`` extra and is imported on first use, so the
in-process cache works with corestone's core alone.
"""

from typing import TYPE_CHECKING, Any

from corestone.cache.backplane import Backplane, Invalidation, LocalBackplane, RedisBackplane
from corestone.cache.decorators import cached
from corestone.cache.keys import EVERY_WORKSPACE, GLOBAL, KeyBuilder
from corestone.cache.lock import RedisLock
from corestone.cache.memory import MemoryCache, MemoryStats
from corestone.cache.options import CacheOptions
from corestone.cache.serialization import (
    MsgpackSerializer,
    OrjsonSerializer,
    PickleSerializer,
    Serializer,
    Stored,
)
from corestone.cache.stats import CacheStats
from corestone.cache.tiered import TieredCache, Warmer

if TYPE_CHECKING:
    from corestone.cache.redis import RedisCache


def __getattr__(name: str) -> Any:
    if name != "RedisCache":
        raise AttributeError(f"module 'corestone.cache' has no attribute {name!r}")
    from corestone.cache.redis import RedisCache  # raises MissingExtraError without 'redis'

    globals()[name] = RedisCache
    return RedisCache


__all__ = [
    "EVERY_WORKSPACE",
    "GLOBAL",
    "Backplane",
    "CacheOptions",
    "CacheStats",
    "Invalidation",
    "KeyBuilder",
    "LocalBackplane",
    "MemoryCache",
    "MemoryStats",
    "MsgpackSerializer",
    "OrjsonSerializer",
    "PickleSerializer",
    "RedisBackplane",
    "RedisCache",
    "RedisLock",
    "Serializer",
    "Stored",
    "TieredCache",
    "Warmer",
    "cached",
]
