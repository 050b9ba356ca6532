"""Redis Streams behind the broker port (the ``redis`` extra).

A topic is a stream (``{key_prefix}{topic}``), a group a Redis consumer group created at
the stream's beginning (``XGROUP CREATE … 0 MKSTREAM``). What each call does:

- ``publish``: one Lua script per batch, so the batch is one round trip and in order.
  Each message is ``XADD``-ed with ``MAXLEN ~ max_len`` (the stream stays bounded; a
  group further behind than that loses what was trimmed, so size it above the worst
  backlog) unless its id was published within ``dedupe_window_seconds`` (a ``SET NX``
  marker per topic and id), which makes a relay's republish after a crash a no-op, as
  JetStream's ``Nats-Msg-Id`` does.
- ``fetch``: first a Lua script runs ``XAUTOCLAIM`` for entries idle longer than
  ``ack_wait_seconds`` (their consumer died, or their nak delay ran out), then
  ``XREADGROUP >`` for new ones, blocking in slices of at most ``_BLOCK_SLICE`` so a
  claimable entry is not left waiting behind a long block. ``Delivery.attempt`` is the
  entry's delivery counter from ``XPENDING``.
- ``nak`` (Redis Streams has none): the entry stays pending, its due time goes into a
  sorted set ``…:delayed:{group}`` and its idle time is set (``XCLAIM … IDLE``) so that
  ``XAUTOCLAIM`` finds it when the delay ends; an entry claimed before its due time (a
  delay longer than the ack wait) is handed back with its counter restored.
- After ``max_deliver`` deliveries without an ack, the claim script moves the entry to
  the group's dead-letter stream ``…:dead:{group}`` (bounded too) and acks it.
  :meth:`RedisStreamsBroker.replay_dead_letters` appends them to the topic again:
  every group sees them once more, and the others' inboxes drop them as duplicates.

Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` (or
``everysec``, losing up to a second on a crash of the host) a restart keeps the
streams and groups; without persistence a restart loses what was not yet consumed
(the outbox has already marked it sent). docs/events.md says which to choose.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from corestone._extras import requires_extra
from corestone.errors import UnavailableError
from corestone.events.brokers.base import Delivery, OutgoingMessage
from corestone.observability.health import CheckResult, HealthStatus

with requires_extra(__name__, "redis"):
    import redis.asyncio as redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RedisStreamsBroker"]

_BLOCK_SLICE = 0.5
"""Longest single ``XREADGROUP`` block (seconds): claimable entries are looked at between."""

_PUBLISH = """
local maxlen, window = ARGV[1], ARGV[2]
local a, added = 3, 0
for i = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a + 3])
  local fields = {'id', ARGV[a], 'key', ARGV[a + 1], 'body', ARGV[a + 2]}
  for j = 1, n do
    fields[#fields + 1] = 'h:' .. ARGV[a + 2 + 2 * j]
    fields[#fields + 1] = ARGV[a + 3 + 2 * j]
  end
  a = a + 4 + 2 * n
  if window == '0' or redis.call('SET', KEYS[i + 1], '1', 'NX', 'PX', window) then
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*', unpack(fields))
    added = added + 1
  end
end
return added
"""

_CLAIM = """
local group, consumer, min_idle = ARGV[1], ARGV[2], tonumber(ARGV[3])
local max_deliver, dead_maxlen = tonumber(ARGV[6]), ARGV[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local res = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, min_idle, ARGV[4],
                       'COUNT', ARGV[5])
local out = {}
for _, entry in ipairs(res[2]) do
  local id, fields = entry[1], entry[2]
  if not fields then
    redis.call('XACK', KEYS[1], group, id)
    redis.call('ZREM', KEYS[2], id)
  else
    local count = tonumber(redis.call('XPENDING', KEYS[1], group, id, id, 1)[1][4])
    local due = redis.call('ZSCORE', KEYS[2], id)
    if due and tonumber(due) > now then
      local idle = math.max(0, min_idle - (tonumber(due) - now))
      redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'IDLE', idle,
                 'RETRYCOUNT', count - 1, 'JUSTID')
    elseif count > max_deliver then
      fields[#fields + 1] = 'x-dead-group'
      fields[#fields + 1] = group
      fields[#fields + 1] = 'x-dead-attempts'
      fields[#fields + 1] = tostring(count - 1)
      fields[#fields + 1] = 'x-dead-reason'
      fields[#fields + 1] = 'delivered ' .. (count - 1) .. ' times without an ack'
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', dead_maxlen, '*', unpack(fields))
      redis.call('XACK', KEYS[1], group, id)
      redis.call('ZREM', KEYS[2], id)
    else
      redis.call('ZREM', KEYS[2], id)
      out[#out + 1] = {id, fields, count}
    end
  end
end
return {res[1], out}
"""

_NAK = """
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
if #p == 0 or p[1][2] ~= consumer or tonumber(p[1][4]) ~= tonumber(ARGV[4]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delay, ack_wait = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZADD', KEYS[2], now + delay, id)
redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'IDLE', math.max(0, ack_wait - delay),
           'JUSTID')
return 1
"""

_REPLAY = """
local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', ARGV[1])
for _, entry in ipairs(entries) do
  local fields, kept = entry[2], {}
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 7) ~= 'x-dead-' then
      kept[#kept + 1] = fields[i]
      kept[#kept + 1] = fields[i + 1]
    end
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(kept))
  redis.call('XDEL', KEYS[2], entry[1])
end
return #entries
"""


class RedisStreamsBroker:
    """A :class:`~corestone.events.brokers.Broker` on Redis Streams (see the module doc)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "corestone:events:",
        max_len: int = 1_000_000,
        ack_wait_seconds: float = 30.0,
        max_deliver: int = 20,
        dedupe_window_seconds: float = 120.0,
        dead_max_len: int = 100_000,
        socket_timeout_seconds: float = 10.0,
    ) -> None:
        if max_len < 1 or dead_max_len < 1 or ack_wait_seconds <= 0 or max_deliver < 1:
            raise ValueError("max_len, dead_max_len, max_deliver >= 1 and ack_wait_seconds > 0")
        if dedupe_window_seconds < 0 or socket_timeout_seconds <= _BLOCK_SLICE:
            raise ValueError(f"dedupe_window_seconds >= 0, socket_timeout > {_BLOCK_SLICE}")
        self.url = url
        self.prefix = key_prefix
        self.max_len, self.dead_max_len = max_len, dead_max_len
        self.ack_wait_ms = int(ack_wait_seconds * 1000)
        self.max_deliver = max_deliver
        self.dedupe_window_ms = int(dedupe_window_seconds * 1000)
        self.socket_timeout = socket_timeout_seconds
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._cursors: dict[tuple[str, str], str] = {}

    # -- keys ------------------------------------------------------------------------------

    def stream_key(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    def _delayed_key(self, topic: str, group: str) -> str:
        return f"{self.prefix}{topic}:delayed:{group}"

    def dead_key(self, topic: str, group: str) -> str:
        return f"{self.prefix}{topic}:dead:{group}"

    # -- the component ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is not None:
            return
        client = redis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.socket_timeout,
            socket_timeout=self.socket_timeout,
            health_check_interval=30,
        )
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("publish", _PUBLISH),
                ("claim", _CLAIM),
                ("nak", _NAK),
                ("replay", _REPLAY),
            )
        }
        self._client = client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _redis(self) -> redis.Redis:
        if self._client is None:
            raise UnavailableError("the Redis broker is not started")
        return self._client

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self._redis()
        try:
            return await self._scripts[name](keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise UnavailableError(f"Redis broker: {error}") from error

    # -- the port --------------------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        keys: list[str] = []
        args: list[Any] = [self.max_len, self.dedupe_window_ms]
        for message in messages:
            stream = self.stream_key(message.topic)
            keys += [stream, f"{stream}:dedupe:{message.id}"]
            args += [message.id, message.key, message.body, len(message.headers)]
            for name, value in message.headers.items():
                args += [name, value]
        await self._run("publish", keys, args)

    async def ensure_group(self, topic: str, group: str) -> None:
        try:
            await self._redis().xgroup_create(self.stream_key(topic), group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise UnavailableError(f"Redis broker: {error}") from error

    async def fetch(
        self, topic: str, group: str, *, consumer: str, limit: int, wait_seconds: float
    ) -> Sequence[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_seconds, 0.0)
        while True:
            found = await self._claim(topic, group, consumer, limit)
            if len(found) < limit:
                remaining = deadline - loop.time()
                block = None if found or remaining <= 0 else min(remaining, _BLOCK_SLICE)
                found += await self._read_new(topic, group, consumer, limit - len(found), block)
            if found or loop.time() >= deadline:
                return found

    async def _claim(self, topic: str, group: str, consumer: str, limit: int) -> list[Delivery]:
        stream = self.stream_key(topic)
        cursor = self._cursors.get((stream, group), "0-0")
        keys = [stream, self._delayed_key(topic, group), self.dead_key(topic, group)]
        args = [group, consumer, self.ack_wait_ms, cursor, limit, self.max_deliver]
        next_cursor, entries = await self._run("claim", keys, [*args, self.dead_max_len])
        self._cursors[(stream, group)] = _text(next_cursor)
        return [
            self._delivery(topic, group, consumer, _text(entry_id), fields, int(count))
            for entry_id, fields, count in entries
        ]

    async def _read_new(
        self, topic: str, group: str, consumer: str, limit: int, block: float | None
    ) -> list[Delivery]:
        stream = self.stream_key(topic)
        try:
            reply: Any = await self._redis().xreadgroup(
                group,
                consumer,
                {stream: ">"},
                count=limit,
                block=None if block is None else max(1, math.ceil(block * 1000)),
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise UnavailableError(f"Redis broker: {error}") from error
        found = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                flat = [item for pair in fields.items() for item in pair]
                found.append(self._delivery(topic, group, consumer, _text(entry_id), flat, 1))
        return found

    def _delivery(
        self, topic: str, group: str, consumer: str, entry_id: str, flat: Any, count: int
    ) -> Delivery:
        fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        headers = {
            name.removeprefix("h:") if name.startswith("h:") else name: _text(value)
            for name, value in fields.items()
            if name.startswith(("h:", "x-dead-"))
        }
        body = fields.get("body", b"")
        return Delivery(
            id=_text(fields.get("id", b"")),
            topic=topic,
            body=body if isinstance(body, bytes) else str(body).encode(),
            group=group,
            attempt=count,
            headers=headers,
            handle=(self.stream_key(topic), entry_id, consumer),
        )

    async def ack(self, delivery: Delivery) -> None:
        stream, entry_id, _consumer = delivery.handle
        try:
            async with self._redis().pipeline(transaction=True) as pipe:
                pipe.xack(stream, delivery.group, entry_id)
                pipe.zrem(self._delayed_key(delivery.topic, delivery.group), entry_id)
                await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise UnavailableError(f"Redis broker: {error}") from error

    async def nak(self, delivery: Delivery, *, delay_seconds: float) -> None:
        """Come back after ``delay_seconds``; ignored if it was delivered to another since."""
        stream, entry_id, consumer = delivery.handle
        keys = [stream, self._delayed_key(delivery.topic, delivery.group)]
        delay_ms = max(0, int(delay_seconds * 1000))
        args = [delivery.group, consumer, entry_id, delivery.attempt, delay_ms, self.ack_wait_ms]
        await self._run("nak", keys, args)

    async def ping(self) -> CheckResult:
        try:
            await self._redis().ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise UnavailableError(f"Redis broker: {error}") from error
        return CheckResult(HealthStatus.PASS, output="redis streams")

    # -- dead letters ----------------------------------------------------------------------

    async def dead_letters(self, topic: str, group: str, *, limit: int = 100) -> list[Delivery]:
        """What ``group`` gave up on after ``max_deliver`` deliveries, oldest first.

        Each has the headers ``x-dead-reason`` and ``x-dead-attempts``.
        """
        try:
            entries: Any = await self._redis().xrange(self.dead_key(topic, group), count=limit)
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise UnavailableError(f"Redis broker: {error}") from error
        return [
            self._delivery(
                topic, group, "", _text(entry_id), [x for p in fields.items() for x in p], 0
            )
            for entry_id, fields in entries
        ]

    async def replay_dead_letters(self, topic: str, group: str, *, limit: int = 100) -> int:
        """Append up to ``limit`` dead letters to the topic again; return how many."""
        keys = [self.stream_key(topic), self.dead_key(topic, group)]
        return int(await self._run("replay", keys, [limit, self.max_len]))

    async def lag(self, topic: str, group: str) -> int | None:
        """Entries of the stream ``group`` has not read yet (``XINFO GROUPS`` lag)."""
        try:
            groups = await self._redis().xinfo_groups(self.stream_key(topic))
        except ResponseError:
            return None
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise UnavailableError(f"Redis broker: {error}") from error
        for info in groups:
            if _text(info.get("name", b"")) == group:
                lag = info.get("lag")
                return None if lag is None else int(lag)
        return None

    async def delete_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        """Drop the stream and its groups' delayed and dead-letter keys (tests, teardown)."""
        keys = [self.stream_key(topic)]
        for group in groups:
            keys += [self._delayed_key(topic, group), self.dead_key(topic, group)]
        await self._redis().delete(*keys)


def _text(value: Any) -> str:
    """``value`` as text; bytes that are not UTF-8 become U+FFFD.

    Strict decoding let one entry written to the stream by anyone else (an ``id`` or a
    field name that is not UTF-8) fail the whole fetch, again at every redelivery, with
    the entries fetched beside it held in the group's pending list: a stalled group.
    Replaced, the entry reaches the consumer, which dead-letters it (its id is no
    event's) and goes on.
    """
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
