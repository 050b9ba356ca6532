"""TieredCache: L1 in the process, L2 in Redis, kept coherent by a backplane.

Reads go L1 → L2 → loader; writes go to both tiers and are announced so every other
instance drops its L1 copy. Redis is optional and allowed to fail: every L2 call is behind
the ``cache`` breaker, its failures are counted, never raised, and invalidations that
could not reach Redis are replayed before L2 is trusted again (see ``_remote``).
Loading (single flight, locks, fail-safe, timeouts, eager refresh) lives in ``_loading``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from corestone.cache._entry import Entry
from corestone.cache._loading import Loader, Loading
from corestone.cache._recent import RecentInvalidations
from corestone.cache._remote import UNAVAILABLE, Remote
from corestone.cache.backplane import Backplane, Invalidation, LocalBackplane
from corestone.cache.keys import (
    EVERY_WORKSPACE,
    KeyBuilder,
    escape_glob,
    escape_pattern,
    glob_regex,
)
from corestone.cache.memory import MemoryCache
from corestone.cache.options import CacheOptions
from corestone.cache.redis import RedisCache, Stored
from corestone.cache.stats import CacheStats
from corestone.config import Settings
from corestone.context import workspace_id as current_workspace
from corestone.observability.health import CheckResult
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.registry import BreakerRegistry

__all__ = ["TieredCache", "Warmer"]

log = get_logger(__name__)

Warmer = Callable[["TieredCache"], Awaitable[object]]

_FINITE_MIN = float("-inf")
_FINITE_MAX = float("inf")


class TieredCache:
    """A two-level cache; build it with :meth:`from_url` or :meth:`from_settings`.

    Without Redis (``remote=None``) it is an L1 cache with the same API and guarantees
    inside one process. Every key is scoped to a workspace (the context's unless
    ``workspace=`` says otherwise; ``GLOBAL`` for shared data), see :mod:`.keys`.
    """

    def __init__(
        self,
        *,
        namespace: str = "default",
        memory: MemoryCache | None = None,
        store: RedisCache | None = None,
        backplane: Backplane | None = None,
        breaker: CircuitBreaker | None = None,
        options: CacheOptions | None = None,
        clock: Callable[[], float] = time.time,
        close: Callable[[], Awaitable[None]] | None = None,
        name: str = "cache",
        l2_timeout: float = 0.5,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.name = name
        self.keys = KeyBuilder(namespace)
        self.namespace = namespace
        self.memory = memory if memory is not None else MemoryCache(max_entries=10_000)
        self.options = options if options is not None else CacheOptions()
        self.stats = CacheStats()
        self.backplane: Backplane = backplane if backplane is not None else LocalBackplane()
        self._clock = clock
        self._close = close
        self.observe_load = observe
        self._scopes: dict[str, str] = {}
        self._global_scope = self.keys.scope("global")
        self.remote: Remote | None = None
        if store is not None:
            if breaker is None:
                raise ValueError("an L2 store needs the breaker that guards it")
            self.remote = Remote(
                store,
                self.backplane,
                breaker,
                self.stats,
                namespace_glob=escape_glob(f"{self.keys.prefix}:{namespace}:") + "*",
                timeout=l2_timeout,
                observe=observe,
            )
        self._loading = Loading(self)
        self.recent = RecentInvalidations()  # what was invalidated when, for reads in flight
        self._warmers: list[Warmer] = []
        self._maintenance: asyncio.Task[None] | None = None
        self._started = False

    @classmethod
    def from_url(
        cls,
        url: str | None,
        *,
        namespace: str = "default",
        protocol: int | None = None,
        options: CacheOptions | None = None,
        memory: MemoryCache | None = None,
        breakers: BreakerRegistry | None = None,
        metrics: Metrics | None = None,
        name: str = "cache",
    ) -> TieredCache:
        """A cache on Redis at ``url`` (``None``: L1 only), not started yet.

        The L2 breaker is ``breakers.get(name)``; unless settings configure that name, it
        opens after 5 of 20 calls fail and tries again after 0.5 s, so the cache is back
        on L2 within a second of Redis returning.
        """
        from corestone.cache._build import build

        return build(
            cls,
            url,
            namespace=namespace,
            protocol=protocol,
            options=options,
            memory=memory,
            breakers=breakers,
            metrics=metrics,
            name=name,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        breakers: BreakerRegistry | None = None,
        metrics: Metrics | None = None,
    ) -> TieredCache:
        """The cache the settings describe (``CORESTONE_REDIS_URL`` unset: L1 only)."""
        return cls.from_url(
            settings.redis_url,
            namespace=settings.cache_namespace,
            protocol=settings.redis_protocol,
            options=CacheOptions(
                ttl=settings.cache_ttl_seconds, max_stale=settings.cache_max_stale_seconds
            ),
            memory=MemoryCache(
                max_entries=settings.cache_l1_max_entries,
                max_bytes=settings.cache_l1_max_bytes,
            ),
            breakers=breakers,
            metrics=metrics,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def add_warmer(self, warmer: Warmer) -> None:
        """Run ``warmer(cache)`` at start; a failing warmer is logged, never fatal."""
        self._warmers.append(warmer)

    async def start(self) -> None:
        if self._started:
            return
        await self.backplane.start(self._on_message, self._on_resync)
        self._maintenance = asyncio.get_running_loop().create_task(
            self._maintain(), name=f"cache-maintenance:{self.name}"
        )
        self._started = True
        for warmer in self._warmers:
            try:
                await warmer(self)
            except Exception as error:  # noqa: BLE001 - a cold cache still works
                log.warning("cache warmer failed", warmer=repr(warmer), error=repr(error))

    async def _maintain(self, interval: float = 1.0) -> None:
        """Expire L1 entries and replay buffered reads even when nothing is written."""
        while True:
            await asyncio.sleep(interval)
            self.memory.cleanup()

    async def aclose(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        await self._loading.aclose()
        if self.remote is not None:
            await self.remote.aclose()
        await self.backplane.aclose()
        if self._close is not None:
            await self._close()
        self._started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- keys ----------------------------------------------------------------------------

    def scope(self, workspace: str | int | None = None) -> str:
        """The key prefix of ``workspace`` (default: the context's), validated once."""
        if workspace is None:
            workspace = current_workspace()
            if workspace is None:
                return self._global_scope
        name = workspace if type(workspace) is str else str(workspace)
        scope = self._scopes.get(name)
        if scope is None:
            scope = self.keys.scope(name)
            if len(self._scopes) >= 10_000:
                self._scopes.clear()
            self._scopes[name] = scope
        return scope

    def key(self, key: str | bytes, workspace: str | int | None = None) -> str:
        """The full storage key of ``key`` (what L1 and Redis use)."""
        return KeyBuilder.entry_in(self.scope(workspace), key)

    # -- reads ---------------------------------------------------------------------------

    async def get(
        self, key: str | bytes, default: Any = None, *, workspace: str | int | None = None
    ) -> Any:
        """The fresh value of ``key`` from L1 or L2, else ``default`` (never a stale one)."""
        full = KeyBuilder.entry_in(self.scope(workspace), key)
        entry = self.memory.get(full)
        if entry is not None and entry.fresh_until > self._clock():
            self.stats.l1_hits += 1
            return entry.value
        self.stats.l1_misses += 1
        found = await self.read_l2(full)
        if found is None or not found.fresh_until > self._clock():
            return default
        return found.value

    async def get_many(
        self, keys: Iterable[str | bytes], *, workspace: str | int | None = None
    ) -> dict[str | bytes, Any]:
        """The fresh values among ``keys``, L1 first, the rest in one L2 round trip."""
        scope = self.scope(workspace)
        now = self._clock()
        found: dict[str | bytes, Any] = {}
        missing: list[tuple[str | bytes, str]] = []
        memory_get = self.memory.get
        for key in keys:
            full = KeyBuilder.entry_in(scope, key)
            entry = memory_get(full)
            if entry is not None and entry.fresh_until > now:
                found[key] = entry.value
            else:
                missing.append((key, full))
        self.stats.l1_hits += len(found)
        self.stats.l1_misses += len(missing)
        if not missing or self.remote is None:
            return found
        store = self.remote.store
        fulls = [full for _, full in missing]
        started = time.monotonic()
        stored = await self.remote.call("get_many", lambda: store.get_many(fulls))
        if stored is UNAVAILABLE:
            return found
        now = self._clock()
        keep: list[tuple[str, Entry, float, tuple[str, ...]]] = []
        max_stale = self.options.max_stale
        since = self.recent.since
        overtaken = self.recent.latest > started  # was anything invalidated meanwhile?
        decode = self._decode
        for (key, full), item in zip(missing, stored, strict=True):
            decoded = decode(item)
            if decoded is not None and decoded[0].fresh_until > now:
                entry, tag_keys = decoded
                found[key] = entry.value
                if not overtaken or not since((full, *tag_keys), started):
                    keep.append((full, entry, entry.fresh_until - now + max_stale, tag_keys))
        self.memory.set_many(keep)  # one L1 bookkeeping pass for the whole batch
        return found

    async def read_l2_for_load(
        self, full: str, tag_keys: tuple[str, ...]
    ) -> tuple[Entry | None, list[int] | None]:
        """``read_l2`` plus the generations of the tags, for a load to store against."""
        if self.remote is None or not tag_keys:
            return await self.read_l2(full), None
        store = self.remote.store
        started = time.monotonic()
        reply = await self.remote.call("get", lambda: store.get_with_generations(full, tag_keys))
        if reply is UNAVAILABLE:
            return None, None
        stored, generations = reply
        decoded = self._decode(stored)
        if decoded is None:
            return None, generations
        entry, stored_tags = decoded
        now = self._clock()
        if entry.fresh_until > now and not self.recent.since((full, *stored_tags), started):
            keep = entry.fresh_until - now + self.options.max_stale
            self.memory.set(full, entry, ttl=keep, tags=stored_tags)
        return entry, generations

    async def read_l2(self, full: str) -> Entry | None:
        """Read one full key from L2 (fresh or stale) and keep it in L1; None if absent.

        The value is kept in L1 only if neither the key nor one of its tags was written or
        invalidated while the read was in flight: the reply may predate that.
        """
        if self.remote is None:
            return None
        store = self.remote.store
        started = time.monotonic()
        stored = await self.remote.call("get", lambda: store.get(full))
        if stored is UNAVAILABLE:
            return None
        decoded = self._decode(stored)
        if decoded is None:
            return None
        entry, tag_keys = decoded
        now = self._clock()
        if entry.fresh_until > now and not self.recent.since((full, *tag_keys), started):
            keep = entry.fresh_until - now + self.options.max_stale
            self.memory.set(full, entry, ttl=keep, tags=tag_keys)
        return entry

    def _decode(self, stored: Stored | None) -> tuple[Entry, tuple[str, ...]] | None:
        """The L1 entry and tag keys of an L2 value, counted; None if absent or foreign.

        A TieredCache writes ``[tag_keys, value, refresh_at]``; anything else under a key
        (another client's value, a corrupt one) is a miss, never an exception.
        """
        if stored is None:
            self.stats.l2_misses += 1
            return None
        payload = stored.value
        fresh_until = stored.fresh_until
        if type(payload) is list and len(payload) == 3:
            tag_keys, value, refresh_at = payload
            if (
                type(tag_keys) is list
                and (not tag_keys or all(type(tag) is str for tag in tag_keys))
                and type(refresh_at) is float
                and _FINITE_MIN < refresh_at < _FINITE_MAX  # also false for NaN
                and _FINITE_MIN < fresh_until < _FINITE_MAX
            ):
                self.stats.l2_hits += 1
                refresh_at = min(refresh_at, fresh_until)
                return Entry(value, fresh_until, refresh_at), tuple(tag_keys)
        self.stats.l2_misses += 1
        return None

    # -- loading -------------------------------------------------------------------------

    async def get_or_load(
        self,
        key: str | bytes,
        loader: Loader,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        workspace: str | int | None = None,
        options: CacheOptions | None = None,
        not_before: float | None = None,
        **overrides: Any,
    ) -> Any:
        """The value of ``key``, calling ``await loader()`` at most once at a time to load it.

        Callers of the same missing key share one load (and with ``distributed_lock``,
        one across every process). Keyword overrides are :class:`CacheOptions` fields.
        ``not_before`` (``time.monotonic()``): when the data the loader reads was current,
        e.g. the start of a transaction; if the key or a tag was invalidated since, the
        value is returned but not stored (it may predate that invalidation).
        """
        scope = self.scope(workspace)
        full = KeyBuilder.entry_in(scope, key)
        entry = self.memory.get(full)
        if entry is not None:
            now = self._clock()
            if entry.fresh_until > now:
                self.stats.l1_hits += 1
                if entry.refresh_at <= now:
                    self._loading.refresh(
                        full,
                        scope,
                        loader,
                        self._tag_keys(scope, tags),
                        self._resolve(options, ttl, overrides),
                        entry,
                    )
                return entry.value
        self.stats.l1_misses += 1
        chosen = self._resolve(options, ttl, overrides)
        tag_keys = self._tag_keys(scope, tags)  # once: a generator can be read only once
        return await self._loading.load(full, scope, loader, tag_keys, chosen, entry, not_before)

    def _resolve(
        self, options: CacheOptions | None, ttl: float | None, overrides: Mapping[str, Any]
    ) -> CacheOptions:
        base = options if options is not None else self.options
        if ttl is None and not overrides:
            return base
        return base.with_overrides(ttl=ttl, **overrides)

    async def warm(
        self,
        keys: Iterable[str | bytes],
        loader: Callable[[str | bytes], Awaitable[Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        workspace: str | int | None = None,
        concurrency: int = 16,
    ) -> int:
        """Load every key not cached yet (``loader(key)``), ``concurrency`` at a time."""
        gate = asyncio.Semaphore(concurrency)
        loaded = 0

        async def one(key: str | bytes) -> None:
            nonlocal loaded
            async with gate:
                await self.get_or_load(
                    key, lambda: loader(key), ttl=ttl, tags=tags, workspace=workspace
                )
                loaded += 1

        await asyncio.gather(*(one(key) for key in keys))
        return loaded

    # -- writes --------------------------------------------------------------------------

    async def set(
        self,
        key: str | bytes,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        workspace: str | int | None = None,
    ) -> None:
        """Store ``value`` in both tiers and tell the other instances to drop their copy."""
        scope = self.scope(workspace)
        options = self.options if ttl is None else self.options.with_overrides(ttl=ttl)
        full = KeyBuilder.entry_in(scope, key)
        await self.store(full, value, self._tag_keys(scope, tags), options)

    async def set_many(
        self,
        items: Mapping[str | bytes, Any],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        workspace: str | int | None = None,
    ) -> None:
        """Store several values in one L2 round trip and one backplane message."""
        scope = self.scope(workspace)
        options = self.options if ttl is None else self.options.with_overrides(ttl=ttl)
        tag_keys = self._tag_keys(scope, tags)
        fulls = [(KeyBuilder.entry_in(scope, key), value) for key, value in items.items()]
        if not fulls:
            return
        fresh_until = self._fresh_until(options)
        entries = [(full, self._entry(value, fresh_until, options)) for full, value in fulls]
        self._overwritten([full for full, _ in fulls])
        keep = self._keep_for(fresh_until, options)
        self.memory.set_many((full, entry, keep, tag_keys) for full, entry in entries)
        self.stats.sets += len(fulls)
        if self.remote is None:
            return
        store = self.remote.store
        payload = [(full, self._stored(entry, tag_keys)) for full, entry in entries]
        await self._write_l2(
            "set_many",
            lambda: store.set_many(payload, ttl=options.keep_for, tag_keys=tag_keys),
            [full for full, _ in fulls],
        )

    async def store(
        self,
        full: str,
        value: Any,
        tag_keys: tuple[str, ...],
        options: CacheOptions,
        *,
        generations: list[int] | None = None,
    ) -> bool:
        """Write one full key to both tiers (used by set and by loads); False if refused.

        A load passes the ``generations`` of its tags read before it ran: then Redis is
        written first and refuses if a tag was invalidated meanwhile (on any instance),
        and only an accepted value enters L1.
        """
        fresh_until = self._fresh_until(options)
        entry = self._entry(value, fresh_until, options)
        keep = self._keep_for(fresh_until, options)
        self.stats.sets += 1
        if generations is None or self.remote is None or not tag_keys:
            self._overwritten([full])
            self.memory.set(full, entry, ttl=keep, tags=tag_keys)
            if self.remote is not None:
                store = self.remote.store
                stored = self._stored(entry, tag_keys)
                await self._write_l2(
                    "set",
                    lambda: store.set(full, stored, ttl=options.keep_for, tag_keys=tag_keys),
                    [full],
                )
            return True
        store = self.remote.store
        stored = self._stored(entry, tag_keys)
        started = time.monotonic()
        accepted = await self.remote.call(
            "set",
            lambda: store.set(
                full, stored, ttl=options.keep_for, tag_keys=tag_keys, generations=generations
            ),
        )
        if accepted is False:
            self.stats.stores_refused += 1
            return False
        if self.recent.since((full, *tag_keys), started):
            return False  # invalidated here while Redis was being written
        self._overwritten([full])
        self.memory.set(full, entry, ttl=keep, tags=tag_keys)
        message = Invalidation("keys", (full,), self.backplane.instance_id, time.time())
        if accepted is UNAVAILABLE:
            await self.remote.invalidate(message)  # L2 may hold an older value: replay
        else:
            await self.remote.announce(message)
        return True

    def _overwritten(self, fulls: list[str]) -> None:
        """A write replaces these keys: reads and loads in flight must not keep older data."""
        self.recent.note(fulls)
        self._loading.invalidated_keys(fulls)

    async def _write_l2(
        self, op: str, write: Callable[[], Awaitable[object]], fulls: list[str]
    ) -> None:
        assert self.remote is not None
        message = Invalidation("keys", tuple(fulls), self.backplane.instance_id, time.time())
        if await self.remote.call(op, write) is UNAVAILABLE:
            # L2 may still hold an older value under these keys: delete it when it returns.
            await self.remote.invalidate(message)
        else:
            await self.remote.announce(message)

    def _entry(self, value: Any, fresh_until: float, options: CacheOptions) -> Entry:
        refresh_at = fresh_until
        if options.eager_refresh is not None:
            now = self._clock()
            refresh_at = now + (fresh_until - now) * options.eager_refresh
        return Entry(value, fresh_until, refresh_at)

    def _keep_for(self, fresh_until: float, options: CacheOptions) -> float:
        """How long L1 keeps an entry: until it is no longer fresh, plus the stale allowance."""
        return fresh_until - self._clock() + (options.max_stale if options.fail_safe else 0.0)

    @staticmethod
    def _stored(entry: Entry, tag_keys: tuple[str, ...]) -> Stored:
        # L2 keeps the tags (so an instance reading the value indexes them in its L1) and
        # the refresh point (so eager refresh works on every instance, not just the writer).
        return Stored([list(tag_keys), entry.value, entry.refresh_at], entry.fresh_until)

    def _fresh_until(self, options: CacheOptions) -> float:
        ttl = options.ttl
        if options.jitter:
            ttl *= 1.0 - options.jitter * random.random()  # noqa: S311 - spread, not secrets
        return self._clock() + ttl

    def _tag_keys(self, scope: str, tags: Iterable[str]) -> tuple[str, ...]:
        if isinstance(tags, str):
            raise TypeError("tags must be an iterable of strings, not one string")
        return tuple(KeyBuilder.tag_in(scope, tag) for tag in tags)

    # -- invalidation --------------------------------------------------------------------

    async def delete(self, *keys: str | bytes, workspace: str | int | None = None) -> None:
        """Remove ``keys`` from every tier of every instance."""
        scope = self.scope(workspace)
        fulls = tuple(KeyBuilder.entry_in(scope, key) for key in keys)
        await self._invalidate(Invalidation("keys", fulls, self.backplane.instance_id, 0.0))

    async def invalidate_tags(
        self, tags: Iterable[str], *, workspace: str | int | None = None
    ) -> None:
        """Remove every entry tagged with any of ``tags`` (in one workspace), everywhere."""
        tag_keys = tuple(self._tag_keys(self.scope(workspace), tags))
        await self._invalidate(Invalidation("tags", tag_keys, self.backplane.instance_id, 0.0))

    async def invalidate_pattern(self, pattern: str, *, workspace: str | int | None = None) -> None:
        """Remove the keys matching ``pattern`` (only ``*`` is a wildcard) in one workspace.

        ``workspace=EVERY_WORKSPACE`` matches in all of them: for jobs that wrote across
        workspaces without knowing which.
        """
        if workspace == EVERY_WORKSPACE:
            scope = escape_glob(f"{self.keys.prefix}:{self.namespace}:") + "*"
        else:
            scope = escape_glob(self.scope(workspace))
        glob = f"{scope}:{escape_pattern(pattern)}"
        await self._invalidate(Invalidation("pattern", (glob,), self.backplane.instance_id, 0.0))

    async def clear(self, *, workspace: str | int | None = None) -> None:
        """Remove every entry of one workspace (default: the context's, else global).

        Entries stored under a digest (long or binary keys) and the workspace's tag sets
        go too; its locks are left to their leases, so a load in progress stays single.
        """
        scope = escape_glob(self.scope(workspace))
        globs = (f"{scope}:*", f"{scope}#h:*", f"{scope}#tag*")
        await self._invalidate(Invalidation("pattern", globs, self.backplane.instance_id, 0.0))

    async def _invalidate(self, message: Invalidation) -> None:
        if not message.items:
            return
        self._apply_locally(message)
        if self.remote is not None:
            stamped = Invalidation(message.kind, message.items, message.origin, time.time())
            await self.remote.invalidate(stamped)

    def _apply_locally(self, message: Invalidation) -> None:
        memory = self.memory
        if message.kind in ("keys", "tags"):
            self.recent.note(message.items)
        else:
            self.recent.note_everything()
        if message.kind == "keys":
            memory.delete_many(message.items)
            self._loading.invalidated_keys(message.items)
        elif message.kind == "tags":
            memory.invalidate_tags(message.items)
            self._loading.invalidated_tags(message.items)
        elif message.kind == "pattern":
            regexes = [glob_regex(glob) for glob in message.items]

            def matches(key: Hashable) -> bool:
                return isinstance(key, str) and any(_full(r, key) for r in regexes)

            memory.invalidate_matching(matches)
            self._loading.invalidated_matching(matches)
        else:
            memory.clear()
            self._loading.invalidated_all()

    def _on_message(self, message: Invalidation) -> None:
        self.stats.invalidations_received += 1
        self._apply_locally(message)

    def _on_resync(self) -> None:
        # We were deaf: anything in L1 may have been invalidated meanwhile.
        self.stats.resyncs += 1
        self.recent.note_everything()
        self.memory.clear()
        self._loading.invalidated_all()

    # -- health and ops ------------------------------------------------------------------

    async def check(self) -> CheckResult:
        """``pass`` with Redis answering (or none configured); ``warn`` when L2 is away."""
        from corestone.cache._ops import check

        return await check(self)

    def snapshot(self) -> dict[str, Any]:
        """Everything ``/api/ops/cache`` shows about this cache: counters, never keys."""
        from corestone.cache._ops import snapshot

        return snapshot(self)

    def clock(self) -> float:
        return self._clock()


def _full(regex: re.Pattern[str], key: str) -> bool:
    return regex.fullmatch(key) is not None
