"""The L1 tag index: which keys carry each tag, so a tag invalidation never scans."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

__all__ = ["TagIndex"]


class TagIndex:
    """Tag → set of keys; a tag with no key left is forgotten."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, set[Hashable]] = {}

    def add(self, key: Hashable, tags: Iterable[str]) -> None:
        index = self._keys
        for tag in tags:
            keys = index.get(tag)
            if keys is None:
                index[tag] = {key}
            else:
                keys.add(key)

    def discard(self, key: Hashable, tags: Iterable[str]) -> None:
        index = self._keys
        for tag in tags:
            keys = index.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[tag]

    def keys_of(self, tags: Iterable[str]) -> dict[Hashable, None]:
        """The keys carrying any of ``tags``, once each, in a stable order."""
        found: dict[Hashable, None] = {}
        index = self._keys
        for tag in tags:
            keys = index.get(tag)
            if keys:
                found.update(dict.fromkeys(keys))
        return found

    def clear(self) -> None:
        self._keys.clear()
