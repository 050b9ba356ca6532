"""The flight table: the one load in progress per key, and how invalidations overtake it.

A flight whose key (or one of its tags, or a pattern covering it) is invalidated while it
runs still answers the callers already waiting, but it leaves the table at once (later
callers start a fresh load), forgets its stale value and does not store what it read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from corestone.cache._entry import Entry

__all__ = ["Flight", "Flights"]


class Flight:
    """One load of one key: its task, what it may fall back on, whether it may store."""

    __slots__ = (
        "full",
        "invalidated",
        "newer_than",
        "not_before",
        "private",
        "scope",
        "stale",
        "tag_keys",
        "task",
    )

    def __init__(
        self,
        full: str,
        scope: str,
        tag_keys: tuple[str, ...],
        stale: Entry | None,
        newer_than: float,
        *,
        private: bool,
        not_before: float | None,
    ) -> None:
        self.full = full
        self.scope = scope
        self.tag_keys = tag_keys
        self.stale = stale
        self.newer_than = newer_than  # wall clock: an L2 value must be fresher than this
        self.private = private  # not joinable, never stored
        self.not_before = not_before  # the cache clock's reading when the loader's data began
        self.invalidated = False
        self.task: asyncio.Task[Any] | None = None


class Flights:
    """The joinable flights by full key, and every flight task (to cancel them on close)."""

    def __init__(self) -> None:
        self.joinable: dict[str, Flight] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    def finished(self, flight: Flight) -> None:
        if self.joinable.get(flight.full) is flight:
            del self.joinable[flight.full]

    def invalidated_keys(self, fulls: Iterable[str]) -> None:
        joinable = self.joinable
        if not joinable:
            return
        for full in fulls:
            flight = joinable.get(full)
            if flight is not None:
                self._overtaken(flight)

    def invalidated_tags(self, tag_keys: Iterable[str]) -> None:
        if not self.joinable:
            return
        touched = set(tag_keys)
        for flight in list(self.joinable.values()):
            if not touched.isdisjoint(flight.tag_keys):
                self._overtaken(flight)

    def invalidated_matching(self, matches: Callable[[str], bool]) -> None:
        for flight in list(self.joinable.values()):
            if matches(flight.full):
                self._overtaken(flight)

    def invalidated_all(self) -> None:
        for flight in list(self.joinable.values()):
            self._overtaken(flight)

    def _overtaken(self, flight: Flight) -> None:
        flight.invalidated = True
        flight.stale = None
        self.finished(flight)  # later callers start a fresh load

    async def aclose(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self.joinable.clear()
