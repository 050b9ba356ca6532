"""What fleet peers say to each other: the change message, its schema, and the Redis scripts.

A message is untrusted input: it is validated against :class:`Change` (strict types,
bounded sizes) before anything reads it, and its numbers are clamped to the *local*
configuration before they are applied (:func:`open_for`). Nothing is compared across
machines' clocks: a peer sends how long its breaker stays open (a duration), and the
only timestamps, the ``version`` and ``at_ms`` fields, are read from the Redis server's
clock by :data:`PUBLISH` when the change is stored, so all of them come from one clock.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corestone.resilience.config import BreakerConfig

__all__ = ["MAX_VERSION", "PUBLISH", "TRIAL", "Change", "open_for", "parse", "remote_opens"]

MAX_VERSION = 2**53 - 1
"""The largest version a peer may send (exact in a float, so Lua and JSON agree on it)."""

PUBLISH = """
local known = tonumber(ARGV[2])
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'string' then
  local stored = tonumber(string.match(current, '^{"version":(%d+),'))
  if stored and stored < 9007199254740991 and stored > known then known = stored end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local version = math.max(now, known + 1)
local data = '{"version":' .. string.format('%.0f', version) .. ',"at_ms":'
  .. string.format('%.0f', now) .. ',' .. string.sub(ARGV[1], 2)
redis.call('SET', KEYS[1], data, 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], data)
return version
"""
"""Store and publish one change, stamped with a version from the Redis server's clock.

KEYS[1] the breaker's state key; ARGV: the change as a JSON object without ``version``
and ``at_ms``, the highest version the publisher has seen, the key's TTL (ms), the
channel. The version is above every version stored or seen, so changes are totally
ordered even if the server clock steps back; a malformed stored value is overwritten.
"""

TRIAL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n <= tonumber(ARGV[1]) then return 1 end
return 0
"""
"""One fleet-wide trial permit of an episode: KEYS[1] the counter, ARGV permitted and TTL."""


class Change(BaseModel):
    """A breaker's shared state change, as stored in its key and published on the channel."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    version: int = Field(ge=1, le=MAX_VERSION)
    at_ms: int = Field(ge=0, le=MAX_VERSION)
    origin: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    state: Literal["open", "closed"]
    opens: int = Field(ge=0, le=MAX_VERSION)
    open_for: float = Field(default=0.0, allow_inf_nan=False)


def parse(data: object) -> Change | None:
    """The change in ``data`` (bytes or str from Redis), or None if it is not one."""
    if not isinstance(data, bytes | str):
        return None
    try:
        return Change.model_validate_json(data)
    except ValidationError:
        return None


def remote_opens(change: Change, config: BreakerConfig) -> int:
    """A peer's open count, clamped to where the local backoff stops growing."""
    return min(max(change.opens, 1), config.growing_opens)


def open_for(change: Change, config: BreakerConfig, elapsed: float) -> float:
    """Seconds the local breaker should stay open for a peer's OPEN, ``elapsed`` after it.

    Never more than the local configuration would wait after that many opens in a row,
    whatever the peer says, and 0 when the open is over.
    """
    bound = config.wait_in_open(remote_opens(change, config))
    remaining = change.open_for - max(elapsed, 0.0)
    if not math.isfinite(remaining) or remaining <= 0:
        return 0.0
    return min(remaining, bound)
