"""The W-TinyLFU policy of L1: an LRU window, a segmented main space, a frequency sketch.

New entries enter the window; one that falls out of it enters the main space (probation,
then protected once read again) only if the sketch says it is asked for more often than
the main space's own victim. The rationale is in docs/decisions (the L1 design record).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Final

from corestone.cache._node import GONE, PROBATION, PROTECTED, WINDOW, Node
from corestone.cache._sketch import FrequencySketch

__all__ = ["Segments"]

_WINDOW_FRACTION: Final = 0.01  # share of the entries in the LRU admission window
_PROTECTED_FRACTION: Final = 0.80  # share of the main space that is protected
_HASHDOS_THRESHOLD: Final = 6  # candidates at least this warm get a 1/128 admission lottery


class Segments:
    """Which entry goes when L1 is full; the cache owns the entries, this owns their order."""

    __slots__ = (
        "main_max",
        "probation",
        "protected",
        "protected_max",
        "rng",
        "sketch",
        "window",
        "window_max",
    )

    def __init__(self, max_entries: int) -> None:
        window = max(1, round(max_entries * _WINDOW_FRACTION)) if max_entries else 0
        self.window_max = window
        self.main_max = max_entries - window
        self.protected_max = int(self.main_max * _PROTECTED_FRACTION)
        self.window: OrderedDict[Hashable, Node] = OrderedDict()
        self.probation: OrderedDict[Hashable, Node] = OrderedDict()
        self.protected: OrderedDict[Hashable, Node] = OrderedDict()
        self.sketch = FrequencySketch(max(1, max_entries))
        self.rng = random.Random()  # noqa: S311 - admission lottery, not security

    def replay(self, reads: list[Node]) -> None:
        """Replay buffered reads: sketch increments, LRU reorders, probation -> protected."""
        increment = self.sketch.increment
        window = self.window
        probation = self.probation
        protected = self.protected
        protected_max = self.protected_max
        for node in reads:
            seg = node.seg
            if seg == GONE:
                continue
            increment(node.hash)
            key = node.key
            if seg == PROTECTED:
                protected.move_to_end(key)
            elif seg == WINDOW:
                window.move_to_end(key)
            else:
                del probation[key]
                node.seg = PROTECTED
                protected[key] = node
                if len(protected) > protected_max:
                    demoted_key, demoted = protected.popitem(last=False)
                    demoted.seg = PROBATION
                    probation[demoted_key] = demoted

    def touch(self, node: Node) -> None:
        """A write is an access: the entry moves to its segment's most recent end."""
        if node.seg == WINDOW:
            self.window.move_to_end(node.key)
        elif node.seg == PROTECTED:
            self.protected.move_to_end(node.key)
        else:
            self.probation.move_to_end(node.key)

    def unlink(self, node: Node) -> None:
        seg = node.seg
        if seg == WINDOW:
            del self.window[node.key]
        elif seg == PROBATION:
            del self.probation[node.key]
        else:
            del self.protected[node.key]
        node.seg = GONE

    def clear(self) -> None:
        self.window.clear()
        self.probation.clear()
        self.protected.clear()

    def admit(self, candidate: Node, victim: Node) -> bool:
        """TinyLFU: let ``candidate`` replace ``victim`` only if it is asked for more often.

        Ties go to the incumbent.  A warm candidate that loses still gets a 1/128 chance
        (as in Caffeine): an attacker who floods the sketch so that one victim looks
        artificially hot cannot freeze the main space forever.
        """
        frequency = self.sketch.frequency
        candidate_freq = frequency(candidate.hash)
        victim_freq = frequency(victim.hash)
        if candidate_freq > victim_freq:
            return True
        if candidate_freq < _HASHDOS_THRESHOLD:
            return False
        return self.rng.random() < 1.0 / 128.0

    def main_victim(self) -> Node | None:
        if self.probation:
            return next(iter(self.probation.values()))
        if self.protected:
            return next(iter(self.protected.values()))
        return None

    def overflow(self, remove: Callable[[Node], None]) -> int:
        """Move window overflow into the main space or ``remove`` it; the rejected count."""
        window = self.window
        probation = self.probation
        rejected = 0
        while len(window) > self.window_max:
            candidate = next(iter(window.values()))
            key = candidate.key
            if len(probation) + len(self.protected) < self.main_max:
                del window[key]
                candidate.seg = PROBATION
                probation[key] = candidate
                continue
            victim = self.main_victim()
            if victim is not None and self.admit(candidate, victim):
                remove(victim)
                del window[key]
                candidate.seg = PROBATION
                probation[key] = candidate
            else:
                rejected += 1
                remove(candidate)
        return rejected

    def byte_victim(self) -> tuple[Node | None, bool]:
        """The entry to drop under byte pressure, and whether it is a refused newcomer."""
        main_victim = self.main_victim()
        window_victim = next(iter(self.window.values())) if self.window else None
        if window_victim is None:
            return main_victim, False
        if main_victim is not None and self.admit(window_victim, main_victim):
            return main_victim, False
        return window_victim, True
