"""CacheOptions: how long a value is fresh, how long it may be served stale, how loads behave.

One frozen object holds every per-entry knob so a cache has defaults and each call can
override a few of them (``cache.get_or_load(key, loader, ttl=30)``) without a second way
of saying the same thing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from corestone.errors import InvalidInputError

__all__ = ["CacheOptions"]


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """Per-entry behaviour; every duration is in seconds.

    * ``ttl``: how long a stored value is fresh. ``jitter`` (a fraction) shortens each
      entry's freshness by up to that much at random, so entries stored together do not
      all expire together.
    * ``fail_safe`` / ``max_stale``: when a load fails or times out, a value that expired
      less than ``max_stale`` ago is served instead of the error; entries are kept that
      much longer than ``ttl`` for this. ``fail_safe_throttle``: after serving stale
      because the loader failed, the stale value counts as fresh this long, so a failing
      backend is not hit by every request.
    * ``soft_timeout``: with a stale value at hand, a load slower than this returns the
      stale value at once and finishes in the background. ``hard_timeout``: no caller
      waits longer than this for a load, stale value or not (the load still completes in
      the background and is stored).
    * ``eager_refresh``: a fraction of ``ttl`` (e.g. 0.8); a hit after that point starts
      one background refresh, so hot keys never expire in front of callers.
    * ``distributed_lock``: single-flight across processes (a Redis lock per key, lease
      ``lock_lease``, extended while the loader runs), not only within the process.
    """

    ttl: float = 300.0
    jitter: float = 0.0
    fail_safe: bool = True
    max_stale: float = 3600.0
    fail_safe_throttle: float = 5.0
    soft_timeout: float | None = None
    hard_timeout: float | None = None
    eager_refresh: float | None = None
    distributed_lock: bool = False
    lock_lease: float = 10.0

    def __post_init__(self) -> None:
        _positive("ttl", self.ttl)
        _non_negative("max_stale", self.max_stale)
        _non_negative("fail_safe_throttle", self.fail_safe_throttle)
        _positive("lock_lease", self.lock_lease)
        if not 0.0 <= self.jitter < 1.0:
            raise InvalidInputError("jitter must be in [0, 1)", field="jitter", rule="range")
        for name in ("soft_timeout", "hard_timeout"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        if self.eager_refresh is not None and not 0.0 < self.eager_refresh < 1.0:
            raise InvalidInputError(
                "eager_refresh must be a fraction of ttl in (0, 1)",
                field="eager_refresh",
                rule="range",
            )

    @property
    def keep_for(self) -> float:
        """How long storage keeps an entry: fresh time plus the fail-safe allowance."""
        return self.ttl + (self.max_stale if self.fail_safe else 0.0)

    def with_overrides(self, **changes: Any) -> CacheOptions:
        """These options with every non-None keyword replaced."""
        given = {name: value for name, value in changes.items() if value is not None}
        return dataclasses.replace(self, **given) if given else self


def _positive(name: str, value: object) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive number of seconds", field=name)


def _non_negative(name: str, value: object) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be zero or a positive number of seconds", field=name)
