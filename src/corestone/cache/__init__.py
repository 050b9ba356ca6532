"""A coherent two-level cache: L1 in the process, L2 in Redis, a backplane between instances.

See docs/cache.md. The names here are the public API; submodules hold the parts. Each is
imported on first use: the in-process cache costs only itself, and :class:`RedisCache`
(which needs the ``redis`` extra) raises a MissingExtraError naming it when first read.
"""

from typing import TYPE_CHECKING

from corestone import _lazy

if TYPE_CHECKING:
    from corestone.cache.backplane import Backplane, Invalidation, LocalBackplane, RedisBackplane
    from corestone.cache.decorators import cached
    from corestone.cache.keys import EVERY_WORKSPACE, GLOBAL, KeyBuilder
    from corestone.cache.lock import RedisLock
    from corestone.cache.memory import MemoryCache, MemoryStats
    from corestone.cache.options import CacheOptions
    from corestone.cache.redis import RedisCache
    from corestone.cache.serialization import (
        MsgpackSerializer,
        OrjsonSerializer,
        PickleSerializer,
        Serializer,
        Stored,
    )
    from corestone.cache.stats import CacheStats
    from corestone.cache.tiered import TieredCache, Warmer

__getattr__, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "Backplane": "corestone.cache.backplane",
        "CacheOptions": "corestone.cache.options",
        "CacheStats": "corestone.cache.stats",
        "EVERY_WORKSPACE": "corestone.cache.keys",
        "GLOBAL": "corestone.cache.keys",
        "Invalidation": "corestone.cache.backplane",
        "KeyBuilder": "corestone.cache.keys",
        "LocalBackplane": "corestone.cache.backplane",
        "MemoryCache": "corestone.cache.memory",
        "MemoryStats": "corestone.cache.memory",
        "MsgpackSerializer": "corestone.cache.serialization",
        "OrjsonSerializer": "corestone.cache.serialization",
        "PickleSerializer": "corestone.cache.serialization",
        "RedisBackplane": "corestone.cache.backplane",
        "RedisCache": "corestone.cache.redis",
        "RedisLock": "corestone.cache.lock",
        "Serializer": "corestone.cache.serialization",
        "Stored": "corestone.cache.serialization",
        "TieredCache": "corestone.cache.tiered",
        "Warmer": "corestone.cache.tiered",
        "cached": "corestone.cache.decorators",
    },
)

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
