"""A coherent two-level cache: L1 in the process, L2 in Redis, a backplane between instances.

See docs/cache.md. The names here are the public API; submodules hold the parts.
"""

from corestone.cache.backplane import Backplane, Invalidation, LocalBackplane, RedisBackplane
from corestone.cache.decorators import cached
from corestone.cache.keys import EVERY_WORKSPACE, GLOBAL, KeyBuilder
from corestone.cache.lock import RedisLock
from corestone.cache.memory import MemoryCache, MemoryStats
from corestone.cache.options import CacheOptions
from corestone.cache.redis import RedisCache, Stored
from corestone.cache.serialization import (
    MsgpackSerializer,
    OrjsonSerializer,
    PickleSerializer,
    Serializer,
)
from corestone.cache.stats import CacheStats
from corestone.cache.tiered import TieredCache, Warmer

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
