"""Fleet mode: breakers with the same name share their state changes across processes.

N instances of a service open together when one of them sees a dependency fail,
instead of each paying the failures to learn it, and half-open trials are limited
across the fleet. Design (docs/decisions/0009-breaker-fleet-mode.md):

* **Changes, not lookups.** A call never talks to Redis in CLOSED or OPEN state: a
  local transition to OPEN or CLOSED is queued and published in the background
  (``PUBLISH`` on one channel plus a ``SET`` of the breaker's key for late joiners);
  every process applies what its peers publish to its local state machine.
* **Fleet-wide trials.** In HALF_OPEN an async call takes a local permit and then one
  from an atomic Redis counter (a Lua ``INCR`` + ``PEXPIRE`` keyed by the open episode),
  so ``permitted_calls_in_half_open`` holds for the fleet, not per process.
* **Redis is advice, never a dependency.** When Redis is unreachable, publishing fails
  quietly (logged, retried with backoff), the trial counter answers "yes", and every
  breaker keeps working on its local state; no call fails because Redis is down.

Wall-clock times travel in messages (an open breaker's end), so hosts need NTP-level
clock agreement; a skew of a second moves when peers probe, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from typing import Any

import orjson

from corestone.observability.logging import get_logger
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.events import BreakerEvent, State, StateChange
from corestone.resilience.registry import BreakerRegistry

__all__ = ["Fleet"]

log = get_logger(__name__)

_TRIAL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n <= tonumber(ARGV[1]) then return 1 end
return 0
"""
_SHARED = (State.OPEN, State.CLOSED)


class Fleet:
    """Links a :class:`BreakerRegistry` to its peers' through Redis (a runtime component).

    ``await start()`` in the event loop that serves calls; ``await aclose()`` to stop.
    ``client`` is a ``redis.asyncio.Redis`` (one is made from ``url`` if not given).
    """

    name = "breaker_fleet"

    def __init__(
        self,
        registry: BreakerRegistry,
        *,
        url: str | None = None,
        client: Any = None,
        prefix: str = "corestone:breakers",
        retry_seconds: float = 1.0,
    ) -> None:
        if client is None and url is None:
            raise ValueError("Fleet needs a Redis url or client")
        self.registry = registry
        self.prefix = prefix
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.published = 0
        self.applied = 0
        self.redis_errors = 0
        self._url = url
        self._client = client
        self._own_client = client is None
        self._retry_seconds = retry_seconds
        self._down_until = 0.0
        self._episodes: dict[str, str] = {}
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._trial: Any = None

    @property
    def channel(self) -> str:
        return f"{self.prefix}:changes"

    def key(self, name: str) -> str:
        return f"{self.prefix}:state:{name}"

    async def start(self) -> None:
        """Subscribe to peers, read the current shared states, attach to every breaker."""
        if self._client is None:
            import redis.asyncio as redis

            self._client = redis.Redis.from_url(
                self._url or "", socket_connect_timeout=0.5, socket_timeout=0.5
            )
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._trial = self._client.register_script(_TRIAL)
        self._tasks = [
            asyncio.create_task(self._publish_forever(), name="breaker-fleet-publish"),
            asyncio.create_task(self._listen_forever(), name="breaker-fleet-listen"),
        ]
        self.registry.on_create(self._attach)

    async def aclose(self) -> None:
        """Stop publishing and listening; breakers go on with local state."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for breaker in self.registry:
            breaker.remove_listener(self._on_event)
            breaker.trial_gate = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- outgoing ------------------------------------------------------------------------

    def _attach(self, breaker: CircuitBreaker) -> None:
        breaker.add_listener(self._on_event)
        breaker.trial_gate = self._trial_gate
        loop = self._loop
        if loop is not None and threading.get_ident() == self._loop_thread:
            self._tasks.append(loop.create_task(self._load(breaker)))

    def _on_event(self, event: BreakerEvent) -> None:
        if not isinstance(event, StateChange) or event.remote or event.after not in _SHARED:
            return
        breaker = self.registry.get(event.name)
        machine = breaker.machine
        message: dict[str, Any] = {
            "origin": self.origin,
            "name": event.name,
            "state": event.after.value,
            "opens": machine.consecutive_opens,
        }
        if event.after is State.OPEN:
            episode = uuid.uuid4().hex
            self._episodes[event.name] = episode
            message["episode"] = episode
            message["until"] = time.time() + max(machine.open_until - breaker.clock(), 0.0)
        self._enqueue(message)

    def _enqueue(self, message: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._put(message)
        else:
            loop.call_soon_threadsafe(self._put, message)

    def _put(self, message: dict[str, Any]) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # the oldest change is the least useful one
        self._queue.put_nowait(message)

    async def _publish_forever(self) -> None:
        while True:
            message = await self._queue.get()
            data = orjson.dumps(message)
            ttl_ms = 3_600_000
            if "until" in message:
                ttl_ms = int(max(message["until"] - time.time(), 0) * 1000) + 60_000
            while True:
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        pipe.set(self.key(message["name"]), data, px=ttl_ms)
                        pipe.publish(self.channel, data)
                        await pipe.execute()
                    self.published += 1
                    break
                except Exception as error:  # noqa: BLE001 - Redis is advice; retry later
                    self._redis_failed(error)
                    if not self._queue.empty():
                        break  # a newer change supersedes this one
                    await asyncio.sleep(self._retry_seconds)

    # -- incoming ------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                for breaker in self.registry:  # catch up on what was missed while away
                    await self._load(breaker)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._apply(orjson.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reconnect after a pause
                self._redis_failed(error)
                await asyncio.sleep(self._retry_seconds)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _load(self, breaker: CircuitBreaker) -> None:
        try:
            data = await self._client.get(self.key(breaker.name))
        except Exception as error:  # noqa: BLE001 - the listener retries the catch-up
            self._redis_failed(error)
            return
        if data:
            self._apply(orjson.loads(data))

    def _apply(self, message: dict[str, Any]) -> None:
        name = message.get("name")
        if message.get("origin") == self.origin or not isinstance(name, str):
            return
        if name not in self.registry:
            return
        breaker = self.registry.get(name)
        machine, now = breaker.machine, breaker.clock()
        local = machine.state
        if message.get("state") == State.OPEN.value:
            remaining = float(message.get("until", 0)) - time.time()
            if remaining <= 0 or local not in (State.CLOSED, State.HALF_OPEN):
                return
            self._episodes[name] = str(message.get("episode", ""))
            machine.transition(
                State.OPEN,
                now,
                f"opened by {message.get('origin')}",
                open_for=remaining,
                consecutive_opens=int(message.get("opens", 1)),
                remote=True,
            )
            self.applied += 1
        elif message.get("state") == State.CLOSED.value and local in (State.OPEN, State.HALF_OPEN):
            machine.transition(State.CLOSED, now, f"closed by {message.get('origin')}", remote=True)
            self.applied += 1

    # -- fleet-wide half-open permits ----------------------------------------------------

    async def _trial_gate(self, breaker: CircuitBreaker) -> bool:
        """One fleet-wide trial permit; yes whenever Redis cannot say."""
        if time.monotonic() < self._down_until:
            return True
        episode = self._episodes.get(breaker.name, "local")
        key = f"{self.prefix}:trials:{breaker.name}:{episode}"
        config = breaker.config
        ttl_ms = int(1000 * (config.max_wait_in_half_open_seconds or config.wait_in_open_seconds))
        try:
            granted = await self._trial(
                keys=[key], args=[config.permitted_calls_in_half_open, max(ttl_ms, 1000)]
            )
        except Exception as error:  # noqa: BLE001 - fall back to the local permits
            self._redis_failed(error)
            return True
        return bool(granted)

    def _redis_failed(self, error: BaseException) -> None:
        self.redis_errors += 1
        now = time.monotonic()
        if now >= self._down_until:
            log.warning("breaker fleet: Redis unavailable, using local state", error=repr(error))
        self._down_until = now + self._retry_seconds
