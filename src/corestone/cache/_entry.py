"""What the tiered cache keeps in L1 for one key."""

from __future__ import annotations

from typing import Any

__all__ = ["Entry"]


class Entry:
    """A value and its deadlines (wall-clock seconds, comparable across instances).

    ``fresh_until``: served as a hit until then; after it only by fail-safe, while L1 (or
    L2) still keeps it. ``refresh_at``: a hit after it starts one background refresh.
    """

    __slots__ = ("fresh_until", "refresh_at", "value")

    def __init__(self, value: Any, fresh_until: float, refresh_at: float) -> None:
        self.value = value
        self.fresh_until = fresh_until
        self.refresh_at = refresh_at
