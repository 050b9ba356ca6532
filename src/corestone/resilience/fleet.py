"""Fleet mode: breakers with the same name share their state changes across processes.

N instances of a service open together when one of them sees a dependency fail,
instead of each paying the failures to learn it, and half-open trials are limited
across the fleet. Design: docs/decisions/0010-breaker-fleet-mode.md; what a peer is
trusted with and how conflicts are ordered: docs/resilience.md, "Fleet mode".

* **Changes, not lookups.** A call never talks to Redis in CLOSED or OPEN state. A
  local transition to OPEN or CLOSED marks the breaker as changed; a background task
  publishes each changed breaker's *current* state (a Lua script stores it in the
  breaker's key for late joiners and publishes it, stamped with a version from the
  Redis server's clock). Every process applies a peer's change only if it is newer than
  everything it has seen or published for that breaker, and never while a local change
  of its own waits to be published (that one will be newer still).
* **Fleet-wide trials.** In HALF_OPEN an async call takes a local permit and then one
  from an atomic Redis counter keyed by the open episode (the OPEN's version).
* **Redis is advice, never a dependency.** When Redis is unreachable, publishing waits
  and retries, the trial gate answers "yes", and every breaker works on its local state.
* **Peers are untrusted input.** Messages and keys are validated against a schema;
  a bad one is dropped and counted (``corestone_breaker_fleet_dropped_messages_total``)
  and never stops the listener or the catch-up. Durations from peers are clamped to the
  local configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from typing import Any, Literal

import orjson

from corestone._extras import requires_extra
from corestone.clock import Clock, monotonic
from corestone.observability.logging import get_logger
from corestone.resilience._fleet_wire import PUBLISH, TRIAL, Change, open_for, parse, remote_opens
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.events import BreakerEvent, State, StateChange
from corestone.resilience.registry import BreakerRegistry

__all__ = ["Fleet"]

log = get_logger(__name__)

_SHARED = (State.OPEN, State.CLOSED)
_CLOSED_TTL_MS = 3_600_000
_OPEN_TTL_MARGIN_MS = 60_000
_Source = Literal["channel", "key"]


class Fleet:
    """Links a :class:`BreakerRegistry` to its peers' through Redis (a runtime component).

    ``await start()`` in the event loop that serves calls; ``await aclose()`` to stop
    (it always closes its Redis client and detaches, and never raises). ``client`` is a
    ``redis.asyncio.Redis`` (one is made from ``url`` if not given, and closed by
    ``aclose``). Dropped messages are counted in the registry's metrics, if it has any.
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
        clock: Clock = monotonic,
    ) -> None:
        if client is None and url is None:
            raise ValueError("Fleet needs a Redis url or client")
        self.registry = registry
        self.prefix = prefix
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.published = 0
        self.applied = 0
        self.dropped = 0
        self.redis_errors = 0
        self.catch_ups = 0
        self._url = url
        self._client = client
        self._own_client = client is None
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._down_until = float("-inf")
        self._seen: dict[str, int] = {}  # highest version seen or published, per breaker
        self._episodes: dict[str, str] = {}  # the trial counter's episode, per breaker
        self._dirty: dict[str, int] = {}  # breakers whose change awaits publishing
        self._marks = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._attached: list[CircuitBreaker] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._attaching_new = False
        self._publish: Any = None
        self._trial: Any = None
        metrics = registry.metrics
        self._dropped_counter = (
            metrics.counter(
                "breaker_fleet_dropped_messages_total",
                "Fleet messages and state keys dropped as malformed.",
                ["source"],
            )
            if metrics is not None
            else None
        )

    @property
    def channel(self) -> str:
        return f"{self.prefix}:changes"

    def key(self, name: str) -> str:
        return f"{self.prefix}:state:{name}"

    async def start(self) -> None:
        """Subscribe to peers, read the current shared states, attach to every breaker."""
        if self._client is None:
            with requires_extra(__name__, "redis"):  # imported here: a breaker needs no Redis
                import redis.asyncio as redis

            self._client = redis.Redis.from_url(
                self._url or "", socket_connect_timeout=0.5, socket_timeout=0.5
            )
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._publish = self._client.register_script(PUBLISH)
        self._trial = self._client.register_script(TRIAL)
        self._spawn(self._publish_forever(), "breaker-fleet-publish")
        self._spawn(self._listen_forever(), "breaker-fleet-listen")
        self.registry.on_create(self._attach)  # the listener catches up on these
        self._attaching_new = True

    async def aclose(self) -> None:
        """Stop publishing and listening; breakers go on with local state. Never raises."""
        self.registry.remove_on_create(self._attach)
        self._attaching_new = False
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        try:
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.warning("breaker fleet: a background task had failed", error=repr(outcome))
        finally:
            for breaker in self._attached:
                breaker.remove_listener(self._on_event)
                if breaker.trial_gate == self._trial_gate:
                    breaker.trial_gate = None
            self._attached = []
            self._loop = None
            if self._own_client and self._client is not None:
                client, self._client = self._client, None
                try:
                    await client.aclose()
                except Exception as error:  # noqa: BLE001 - closing is best effort
                    log.warning("breaker fleet: closing Redis failed", error=repr(error))

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- outgoing ------------------------------------------------------------------------

    def _attach(self, breaker: CircuitBreaker) -> None:
        breaker.add_listener(self._on_event)
        breaker.trial_gate = self._trial_gate
        self._attached.append(breaker)
        if self._attaching_new and threading.get_ident() == self._loop_thread:
            self._spawn(self._load([breaker]), f"breaker-fleet-load-{breaker.name}")

    def _on_event(self, event: BreakerEvent) -> None:
        if not isinstance(event, StateChange) or event.remote or event.after not in _SHARED:
            return
        if event.after is State.OPEN:  # until it is published, this process's own episode
            self._episodes[event.name] = f"{self.origin}:{uuid.uuid4().hex}"
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._mark(event.name)
        else:
            loop.call_soon_threadsafe(self._mark, event.name)

    def _mark(self, name: str) -> None:
        """Note that ``name`` changed; the publisher sends its state as it is then."""
        self._marks += 1
        self._dirty[name] = self._marks
        self._wake.set()

    async def _publish_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                name, mark = next(iter(self._dirty.items()))
                try:
                    await self._send(name)
                except Exception as error:  # noqa: BLE001 - Redis is advice; retry later
                    self._redis_failed(error)
                    await asyncio.sleep(self._retry_seconds)
                    continue  # every unsent change stays marked, this one included
                if self._dirty.get(name) == mark:  # not changed again meanwhile
                    del self._dirty[name]

    async def _send(self, name: str) -> None:
        """Publish the current shared state of ``name`` (nothing if it is not shared now)."""
        breaker = self.registry.get(name)
        machine = breaker.machine
        state = machine.state
        if state not in _SHARED:
            return  # the change is over (an OPEN that already half-opened, a manual state)
        body: dict[str, Any] = {
            "origin": self.origin,
            "name": name,
            "state": state.value,
            "opens": machine.consecutive_opens,
        }
        ttl_ms = _CLOSED_TTL_MS
        if state is State.OPEN:
            remaining = max(machine.open_until - breaker.clock(), 0.0)
            body["open_for"] = remaining
            ttl_ms = int(remaining * 1000) + _OPEN_TTL_MARGIN_MS
        version = int(
            await self._publish(
                keys=[self.key(name)],
                args=[orjson.dumps(body), self._seen.get(name, 0), ttl_ms, self.channel],
            )
        )
        self._seen[name] = max(self._seen.get(name, 0), version)
        if state is State.OPEN and machine.state is State.OPEN:
            self._episodes[name] = str(version)
        self.published += 1

    # -- incoming ------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._catch_up(list(self.registry))
                self.catch_ups += 1
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._receive(message.get("data"), "channel", 0.0)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reconnect after a pause
                self._redis_failed(error)
                await asyncio.sleep(self._retry_seconds)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _load(self, breakers: list[CircuitBreaker]) -> None:
        """Catch up on breakers made after start (Redis trouble: the listener retries)."""
        try:
            await self._catch_up(breakers)
        except Exception as error:  # noqa: BLE001 - the next reconnect catches up again
            self._redis_failed(error)

    async def _catch_up(self, breakers: list[CircuitBreaker]) -> None:
        """Read the stored state of ``breakers`` and the Redis time, in one round trip."""
        if not breakers:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for breaker in breakers:
                pipe.get(self.key(breaker.name))
            pipe.time()
            replies = await pipe.execute(raise_on_error=False)
        now = replies[-1]
        if isinstance(now, BaseException):
            raise now
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        for reply in replies[:-1]:
            if reply is None:
                continue
            change = None if isinstance(reply, BaseException) else parse(reply)
            if change is None:
                self._drop("key", reply)
                continue
            self._consider(change, "key", (now_ms - change.at_ms) / 1000)

    def _receive(self, data: object, source: _Source, elapsed: float) -> None:
        change = parse(data)
        if change is None:
            self._drop(source, data)
        else:
            self._consider(change, source, elapsed)

    def _consider(self, change: Change, source: _Source, elapsed: float) -> None:
        """Apply ``change`` if it is newer than what this process knows; never raises."""
        name = change.name
        try:
            if name not in self.registry or change.version <= self._seen.get(name, 0):
                return
            self._seen[name] = change.version
            if change.origin == self.origin or name in self._dirty:
                return  # our own, or older than our unpublished change
            self._apply(self.registry.get(name), change, elapsed)
        except Exception:  # one bad change never stops the listener
            log.exception("breaker fleet: could not apply a change", breaker=name)
            self._drop(source, None)

    def _apply(self, breaker: CircuitBreaker, change: Change, elapsed: float) -> None:
        machine, now = breaker.machine, breaker.clock()
        local = machine.state
        reason = f"{change.state} by {change.origin}"
        if change.state == State.OPEN.value:
            self._episodes[breaker.name] = str(change.version)
            seconds = open_for(change, breaker.config, elapsed)
            if seconds <= 0 or local not in (State.CLOSED, State.HALF_OPEN):
                return
            opens = remote_opens(change, breaker.config)
            machine.transition(
                State.OPEN, now, reason, open_for=seconds, consecutive_opens=opens, remote=True
            )
            self.applied += 1
        elif local in (State.OPEN, State.HALF_OPEN):
            machine.transition(State.CLOSED, now, reason, remote=True)
            self.applied += 1

    def _drop(self, source: _Source, data: object) -> None:
        self.dropped += 1
        if self._dropped_counter is not None:
            self._dropped_counter.labels(source=source).inc()
        log.warning(
            "breaker fleet: dropped a malformed change", source=source, data=repr(data)[:200]
        )

    # -- fleet-wide half-open permits ----------------------------------------------------

    async def _trial_gate(self, breaker: CircuitBreaker) -> bool:
        """One fleet-wide trial permit; yes whenever Redis cannot say."""
        if self._clock() < self._down_until or self._trial is None:
            return True
        episode = self._episodes.get(breaker.name, self.origin)
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
        now = self._clock()
        if now >= self._down_until:
            log.warning("breaker fleet: Redis unavailable, using local state", error=repr(error))
        self._down_until = now + self._retry_seconds
