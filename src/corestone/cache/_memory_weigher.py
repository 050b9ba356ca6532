"""The default byte estimate of an L1 entry: cheap, bounded, and not fooled by a wrapper.

An exact deep size (walking every object a value references) would cost more than the cache
saves on a large value, so the estimate looks at most two levels down and samples at most
``_SAMPLE`` items of a container, extrapolating from them.  Two levels matter because the
tiered cache stores a small slotted ``Entry`` around each value: weighing only the wrapper
would make every entry look 56 bytes big and turn ``max_bytes`` into a no-op.
"""

from __future__ import annotations

from collections.abc import Hashable
from sys import getsizeof
from typing import Any, Final

__all__ = ["NODE_OVERHEAD", "default_weigher"]

#: Bytes of bookkeeping per entry: the node object, its slot in the map, its LRU link.
NODE_OVERHEAD: Final = 240

_SAMPLE: Final = 4  # container items actually measured; the rest are assumed alike
# Sizes of the common scalars without calling ``sys.getsizeof`` (a slow method lookup, about
# 100 ns here): CPython 3.11, 64-bit; ASCII ``str``; ints below 2**30.
_FIXED: Final[dict[type, int]] = {int: 28, float: 24, bool: 28, type(None): 16, complex: 32}
_STR_HEADER: Final = 49
_BYTES_HEADER: Final = 33
_FALLBACK: Final = 256  # bytes assumed for a value that cannot be measured
_SEQUENCES: Final = frozenset({list, tuple, set, frozenset})
_NO_SLOTS: Final[tuple[str, ...]] = ()
_slots_cache: dict[type, tuple[str, ...]] = {}


def _slots_of(cls: type) -> tuple[str, ...]:
    """Every ``__slots__`` name of ``cls`` and its bases (memoised per type)."""
    names = _slots_cache.get(cls)
    if names is None:
        found: list[str] = []
        for klass in cls.__mro__:
            slots = klass.__dict__.get("__slots__", _NO_SLOTS)
            if isinstance(slots, str):
                slots = (slots,)
            found.extend(s for s in slots if s not in ("__dict__", "__weakref__"))
        names = _slots_cache[cls] = tuple(found)
    return names


def estimate(value: Any, depth: int = 2) -> int:
    """Approximate bytes held by ``value``, looking ``depth`` levels into it."""
    cls = type(value)
    if cls is str:
        return _STR_HEADER + len(value)
    if cls is bytes:
        return _BYTES_HEADER + len(value)
    fixed = _FIXED.get(cls)
    if fixed is not None:
        return fixed
    size: int = getsizeof(value)
    if depth <= 0:
        return size
    inner = depth - 1
    if cls is dict:
        count = len(value)
        if count:
            measured = seen = 0
            for item_key, item in value.items():
                measured += estimate(item_key, inner) + estimate(item, inner)
                seen += 1
                if seen == _SAMPLE:
                    break
            size += measured * count // seen
        return size
    if cls in _SEQUENCES:
        count = len(value)
        if count:
            measured = seen = 0
            for item in value:
                measured += estimate(item, inner)
                seen += 1
                if seen == _SAMPLE:
                    break
            size += measured * count // seen
        return size
    slots = _slots_of(cls)
    if slots:
        for name in slots:
            size += estimate(getattr(value, name, None), inner)
    attributes = getattr(value, "__dict__", None)
    if type(attributes) is dict:
        size += estimate(attributes, inner)
    return size


def default_weigher(key: Hashable, value: Any) -> int:
    """``NODE_OVERHEAD`` + the key + an estimate of the value (two levels, sampled).

    Exact for ``str``/``bytes``/numbers; a container counts its own size plus its first few
    items, scaled to its length; a slotted or plain object counts its attributes.  Pass a
    ``weigher`` to ``MemoryCache`` when values are deep structures and the byte bound must be
    tight (e.g. ``len`` of the serialized payload you already have).
    """
    try:
        return NODE_OVERHEAD + estimate(key, 0) + estimate(value)
    except Exception:  # noqa: BLE001 - an exotic __sizeof__/__getattr__ must not break set()
        return NODE_OVERHEAD + _FALLBACK
