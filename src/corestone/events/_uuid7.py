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

__all__ = ["uuid7", "uuid7_time_ms"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7; ``now_ms`` (Unix milliseconds) overrides the clock, for tests."""
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2)) & 0x7FF  # room to count up before 0xFFF
        else:
            _counter += 1
            if _counter > 0xFFF:  # 4,096 ids in one millisecond: move to the next one
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8)) & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def uuid7_time_ms(value: uuid.UUID) -> int:
    """The Unix milliseconds a UUIDv7 carries."""
    return value.int >> 80
