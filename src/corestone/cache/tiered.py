"""TieredCache: L1 in the process, L2 in Redis, kept coherent by a backplane.

Reads go L1 → L2 → loader; writes go to both tiers and are announced so every other
instance drops its L1 copy. Redis is optional and allowed to fail: every L2 call is behind
the ``cache`` breaker, its failures are counted, never raised, and invalidations that
could not reach Redis are replayed before L2 is trusted again (see ``_remote``).
The parts live in a :class:`~._core.CacheCore` shared with the loading code (``_loading``)
and the ops helpers; this module is the public API, and every method of it builds its
storage keys from the namespace and the workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from corestone.cache import _build, _ops
from corestone.cache._core import CacheCore
from corestone.cache._loading import Loader, Loading
from corestone.cache._remote import Remote
from corestone.cache.backplane import Backplane, LocalBackplane
from corestone.cache.keys import EVERY_WORKSPACE, KeyBuilder, escape_glob, escape_pattern
from corestone.cache.memory import MemoryCache
from corestone.cache.options import CacheOptions
from corestone.cache.stats import CacheStats
from corestone.clock import Clock, monotonic
from corestone.config import Settings
from corestone.context import workspace_id as current_workspace
from corestone.observability.health import CheckResult
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.registry import BreakerRegistry

if TYPE_CHECKING:
    from corestone.cache.redis import RedisCache

__all__ = ["TieredCache", "Warmer"]

log = get_logger(__name__)

Warmer = Callable[["TieredCache"], Awaitable[object]]


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
        clock: Clock = monotonic,
        wall_clock: Clock = time.time,
        close: Callable[[], Awaitable[None]] | None = None,
        name: str = "cache",
        l2_timeout: float = 0.5,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        """``clock`` measures durations and orders invalidations (monotonic seconds);
        ``wall_clock`` stamps freshness deadlines, which other instances read from L2.
        A test passes one :class:`~corestone.testing.ManualClock` as both."""
        self.name = name
        self.keys = KeyBuilder(namespace)
        self.namespace = namespace
        stats = CacheStats()
        backplane = backplane if backplane is not None else LocalBackplane()
        remote: Remote | None = None
        if store is not None:
            if breaker is None:
                raise ValueError("an L2 store needs the breaker that guards it")
            remote = Remote(
                store,
                backplane,
                breaker,
                stats,
                namespace_glob=escape_glob(f"{self.keys.prefix}:{namespace}:") + "*",
                timeout=l2_timeout,
                observe=observe,
                clock=clock,
                wall_clock=wall_clock,
            )
        self._core = CacheCore(
            name=name,
            keys=self.keys,
            memory=memory if memory is not None else MemoryCache(max_entries=10_000, clock=clock),
            options=options if options is not None else CacheOptions(),
            stats=stats,
            backplane=backplane,
            remote=remote,
            clock=clock,
            wall_clock=wall_clock,
            observe=observe,
        )
        self._close = close
        self._scopes: dict[str, str] = {}
        self._global_scope = self.keys.scope("global")
        self._loading = Loading(self._core)
        self._warmers: list[Warmer] = []
        self._maintenance: asyncio.Task[None] | None = None
        self._started = False

    # The tiers and counters, for tests and operations. L1 and L2 take full storage keys
    # by nature; reading or writing through them bypasses the workspace scoping.

    @property
    def memory(self) -> MemoryCache:
        return self._core.memory

    @property
    def remote(self) -> Remote | None:
        return self._core.remote

    @property
    def stats(self) -> CacheStats:
        return self._core.stats

    @property
    def options(self) -> CacheOptions:
        return self._core.options

    @property
    def backplane(self) -> Backplane:
        return self._core.backplane

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
        memory = memory if memory is not None else MemoryCache(max_entries=10_000)
        if url is None:
            cache = cls(namespace=namespace, memory=memory, options=options, name=name)
        else:
            parts = _build.redis_parts(
                url,
                namespace=namespace,
                protocol=protocol,
                breakers=breakers,
                metrics=metrics,
                name=name,
            )
            cache = cls(
                namespace=namespace,
                memory=memory,
                store=parts.store,
                backplane=parts.backplane,
                breaker=parts.breaker,
                options=options,
                close=parts.close,
                name=name,
                observe=parts.observe,
            )
        if metrics is not None:
            _build.register_metrics(cache._core, metrics)
        return cache

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
        await self._core.backplane.start(self._core.on_message, self._core.on_resync)
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
            self._core.memory.cleanup()

    async def aclose(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        await self._loading.aclose()
        if self._core.remote is not None:
            await self._core.remote.aclose()
        await self._core.backplane.aclose()
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
        core = self._core
        full = KeyBuilder.entry_in(self.scope(workspace), key)
        entry = core.memory.get(full)
        if entry is not None and entry.fresh_until > core.wall_clock():
            core.stats.l1_hits += 1
            return entry.value
        core.stats.l1_misses += 1
        found = await core.read_l2(full)
        if found is None or not found.fresh_until > core.wall_clock():
            return default
        return found.value

    async def get_many(
        self, keys: Iterable[str | bytes], *, workspace: str | int | None = None
    ) -> dict[str | bytes, Any]:
        """The fresh values among ``keys``, L1 first, the rest in one L2 round trip."""
        core = self._core
        scope = self.scope(workspace)
        now = core.wall_clock()
        found: dict[str | bytes, Any] = {}
        missing: list[str | bytes] = []
        fulls: list[str] = []
        memory_get = core.memory.get
        for key in keys:
            full = KeyBuilder.entry_in(scope, key)
            entry = memory_get(full)
            if entry is not None and entry.fresh_until > now:
                found[key] = entry.value
            else:
                missing.append(key)
                fulls.append(full)
        core.stats.l1_hits += len(found)
        core.stats.l1_misses += len(missing)
        if missing:
            await core.read_many(missing, fulls, found)
        return found

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
        The tags' generations are read from Redis before the loader starts; the value is
        stored only if none of its tags was invalidated since, on any instance.
        ``not_before`` (a reading of :meth:`clock`, e.g. when the loader's transaction
        began): the value is returned but not stored if the key or a tag was invalidated
        after that moment, here or (by its generation) on any instance. See docs/cache.md.
        """
        core = self._core
        scope = self.scope(workspace)
        full = KeyBuilder.entry_in(scope, key)
        entry = core.memory.get(full)
        if entry is not None:
            now = core.wall_clock()
            if entry.fresh_until > now:
                core.stats.l1_hits += 1
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
        core.stats.l1_misses += 1
        chosen = self._resolve(options, ttl, overrides)
        tag_keys = self._tag_keys(scope, tags)  # once: a generator can be read only once
        return await self._loading.load(full, scope, loader, tag_keys, chosen, entry, not_before)

    def _resolve(
        self, options: CacheOptions | None, ttl: float | None, overrides: Mapping[str, Any]
    ) -> CacheOptions:
        base = options if options is not None else self._core.options
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
        options = self._resolve(None, ttl, {})
        full = KeyBuilder.entry_in(scope, key)
        await self._core.store(full, value, self._tag_keys(scope, tags), options)

    async def set_many(
        self,
        items: Mapping[str | bytes, Any],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        workspace: str | int | None = None,
    ) -> None:
        """Store several values in one L2 round trip and one backplane message."""
        core = self._core
        scope = self.scope(workspace)
        options = self._resolve(None, ttl, {})
        tag_keys = self._tag_keys(scope, tags)
        fulls = [(KeyBuilder.entry_in(scope, key), value) for key, value in items.items()]
        if not fulls:
            return
        fresh_until = core.fresh_until(options)
        entries = [(full, core.entry(value, fresh_until, options)) for full, value in fulls]
        core.overwritten([full for full, _ in fulls])
        keep = core.keep_for(fresh_until, options)
        core.memory.set_many((full, entry, keep, tag_keys) for full, entry in entries)
        core.stats.sets += len(fulls)
        if core.remote is None:
            return
        store = core.remote.store
        payload = [(full, core.stored(entry, tag_keys)) for full, entry in entries]
        await core.write_l2(
            "set_many",
            lambda: store.set_many(payload, ttl=options.keep_for, tag_keys=tag_keys),
            [full for full, _ in fulls],
        )

    def _tag_keys(self, scope: str, tags: Iterable[str]) -> tuple[str, ...]:
        if isinstance(tags, str):
            raise TypeError("tags must be an iterable of strings, not one string")
        return tuple(KeyBuilder.tag_in(scope, tag) for tag in tags)

    # -- invalidation --------------------------------------------------------------------

    async def delete(self, *keys: str | bytes, workspace: str | int | None = None) -> None:
        """Remove ``keys`` from every tier of every instance."""
        scope = self.scope(workspace)
        fulls = tuple(KeyBuilder.entry_in(scope, key) for key in keys)
        await self._core.invalidate(self._core.message("keys", fulls))

    async def invalidate_tags(
        self, tags: Iterable[str], *, workspace: str | int | None = None
    ) -> None:
        """Remove every entry tagged with any of ``tags`` (in one workspace), everywhere."""
        tag_keys = self._tag_keys(self.scope(workspace), tags)
        await self._core.invalidate(self._core.message("tags", tag_keys))

    async def invalidate_pattern(self, pattern: str, *, workspace: str | int | None = None) -> None:
        """Remove the keys matching ``pattern`` (only ``*`` is a wildcard) in one workspace.

        ``workspace=EVERY_WORKSPACE`` matches in all of them: for jobs that wrote across
        workspaces without knowing which. Only entries are removed, never the tag index
        (tag sets, generations) or locks, so tags keep reaching their entries.
        """
        if workspace == EVERY_WORKSPACE:
            scope = escape_glob(f"{self.keys.prefix}:{self.namespace}:") + "*"
        else:
            scope = escape_glob(self.scope(workspace))
        glob = f"{scope}:{escape_pattern(pattern)}"
        await self._core.invalidate(self._core.message("pattern", (glob,)))

    async def clear(self, *, workspace: str | int | None = None) -> None:
        """Remove every entry of one workspace (default: the context's, else global).

        Entries stored under a digest (long or binary keys) go too. The workspace's tag
        index stays (its sets then name missing entries, which costs memory only until
        their TTL) and so do its locks, so a load in progress stays single.
        """
        scope = escape_glob(self.scope(workspace))
        globs = (f"{scope}:*", f"{scope}#h:*")
        await self._core.invalidate(self._core.message("pattern", globs))

    # -- health and ops ------------------------------------------------------------------

    async def check(self) -> CheckResult:
        """``pass`` with Redis answering (or none configured); ``warn`` when L2 is away."""
        return await _ops.check(self._core)

    def snapshot(self) -> dict[str, Any]:
        """Everything ``/api/ops/cache`` shows about this cache: counters, never keys."""
        return _ops.snapshot(self._core)

    def clock(self) -> float:
        """A reading of the cache's monotonic clock (what ``not_before`` is compared with).

        Ordered against the invalidations this cache has seen even when the clock's
        readings tie: an invalidation before this call is never "after" the reading.
        """
        return self._core.recent.mark()
