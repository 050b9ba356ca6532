"""L1 entries stored in the map whose policy work waits: Caffeine's write buffer.

A batch fill (``MemoryCache.add_many``) makes its entries readable at once and leaves
their admission, weighing, tag index and expiry bookkeeping here. The buffer asks the
running event loop to drain it on its next turn, so the reader that filled it is not the
one who waits; without a loop, or past ``bound`` waiting entries, it drains at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from corestone.cache._node import Node

__all__ = ["WriteBuffer"]


class WriteBuffer:
    """The nodes waiting for the policy, and when to hand them over (``drain``)."""

    __slots__ = ("_bound", "_drain", "_scheduled", "nodes")

    def __init__(self, drain: Callable[[], None], bound: int) -> None:
        self.nodes: list[Node] = []
        self._drain = drain
        self._bound = bound
        self._scheduled = False

    def take(self) -> list[Node]:
        """The waiting nodes, oldest first; the buffer is empty afterwards."""
        nodes = self.nodes
        self.nodes = []
        return nodes

    def added(self) -> None:
        """Nodes were appended: drain now past the bound or without a loop, else soon."""
        if len(self.nodes) > self._bound:
            self._drain()
            return
        if self._scheduled or not self.nodes:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to defer to
            self._drain()
            return
        self._scheduled = True
        loop.call_soon(self._drain_soon)

    def _drain_soon(self) -> None:
        self._scheduled = False
        self._drain()
