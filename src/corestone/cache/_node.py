"""One L1 entry and the segment it lives in, shared by the L1 cache and its timer wheel."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Final

__all__ = ["GONE", "PROBATION", "PROTECTED", "WINDOW", "Node"]

WINDOW: Final = 0
PROBATION: Final = 1
PROTECTED: Final = 2
GONE: Final = -1


class Node:
    """One entry.  Slotted: attribute reads on the hit path are as cheap as list indexing."""

    __slots__ = ("bucket", "expires", "hash", "key", "seg", "tags", "value", "weight")

    def __init__(
        self,
        key: Hashable,
        value: Any,
        expires: float | None,
        weight: int,
        h: int,
        tags: tuple[str, ...],
    ) -> None:
        self.key = key
        self.value = value
        self.expires = expires
        self.weight = weight
        self.hash = h
        self.tags = tags
        self.seg = WINDOW
        self.bucket: int | None = None
