"""UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then randomness, time-ordered.

Python gains ``uuid.uuid7`` only in 3.14. Ids made in one process are strictly
increasing (RFC 9562 §6.2, method 1: a 12-bit counter in ``rand_a``, seeded at random
each new millisecond, that borrows the next millisecond if it runs out), so events
recorded in order by one writer sort in that order even within one millisecond.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["Uuid7Generator", "uuid7", "uuid7_time_ms"]


class Uuid7Generator:
    """Strictly increasing UUIDv7s; one per process (:data:`uuid7`), or one per test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self, now_ms: int | None = None) -> uuid.UUID:
        """A new UUIDv7; ``now_ms`` (Unix milliseconds) overrides the clock, for tests."""
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._lock:
            if ms > self._last_ms:
                self._last_ms = ms
                # Seeded at random, with room to count up before 0xFFF.
                self._counter = int.from_bytes(os.urandom(2)) & 0x7FF
            else:
                self._counter += 1
                if self._counter > 0xFFF:  # 4,096 ids in one millisecond: borrow the next
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        rand_b = int.from_bytes(os.urandom(8)) & 0x3FFF_FFFF_FFFF_FFFF
        value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
        return uuid.UUID(int=value)


uuid7 = Uuid7Generator()
"""The process's generator: ``uuid7()`` is a new id."""


def uuid7_time_ms(value: uuid.UUID) -> int:
    """The Unix milliseconds a UUIDv7 carries."""
    return value.int >> 80
