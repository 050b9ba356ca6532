"""MemoryCache (L1): behaviour, bounds, TTL, tags, callbacks, and a stateful model check."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from corestone.cache import memory as memory_module
from corestone.cache.memory import EVICTION_REASONS, MemoryCache, MemoryStats, default_weigher
from corestone.testing import ManualClock

Evicted = list[tuple[Hashable, Any, str]]


def recorder() -> tuple[Evicted, Any]:
    seen: Evicted = []

    def on_evict(key: Hashable, value: Any, reason: str) -> None:
        seen.append((key, value, reason))

    return seen, on_evict


def check_invariants(cache: MemoryCache) -> None:
    """Every internal structure agrees with every other one (white-box, on purpose)."""
    data = cache._data
    segments = cache._segments
    window, probation, protected = segments.window, segments.probation, segments.protected
    assert len(window) + len(probation) + len(protected) == len(data)
    for segment, seg in ((window, 0), (probation, 1), (protected, 2)):
        for key, node in segment.items():
            assert data[key] is node
            assert node.seg == seg
            assert node.key == key
    assert cache._weight == sum(node.weight for node in data.values())
    assert len(data) <= cache.max_entries
    if cache.max_bytes is not None:
        assert cache._weight <= cache.max_bytes
    assert len(protected) <= segments.protected_max
    expected_tags: dict[str, set[Hashable]] = {}
    for key, node in data.items():
        for tag in node.tags:
            expected_tags.setdefault(tag, set()).add(key)
    assert cache._tags._keys == expected_tags
    buckets = cache._wheel._buckets
    scheduled = {id(n) for bucket in buckets.values() for n in bucket}
    for node in data.values():
        if node.expires is None:
            assert node.bucket is None
        else:
            assert node.bucket is not None
            assert node in buckets[node.bucket]
    assert len(scheduled) == sum(1 for n in data.values() if n.expires is not None)
    assert sorted(cache._wheel.heap) == sorted(buckets)


# ---------------------------------------------------------------------- basics


def test_a_set_value_is_seen_by_get_in_len_and_getitem() -> None:
    """A set value is seen by get, [], in and len; a miss gives the default or a KeyError."""
    cache = MemoryCache(max_entries=10)
    assert cache.get("a") is None
    assert cache.get("a", "dflt") == "dflt"
    assert cache.set("a", 1) is True
    assert cache.get("a") == 1
    assert cache["a"] == 1
    assert "a" in cache
    assert "b" not in cache
    assert len(cache) == 1
    with pytest.raises(KeyError):
        cache["b"]
    check_invariants(cache)


def test_none_is_a_value_not_a_miss() -> None:
    """A stored None is returned as None, not as the default a miss returns."""
    cache = MemoryCache()
    cache.set("k", None)
    missing = object()
    assert cache.get("k", missing) is None
    assert cache.get("other", missing) is missing


def test_overwrite_replaces_value_and_reports_replaced() -> None:
    """Setting a key again keeps one entry, the new value, and reports the old one as replaced."""
    seen, on_evict = recorder()
    cache = MemoryCache(on_evict=on_evict)
    cache.set("k", 1)
    cache.set("k", 2)
    assert cache.get("k") == 2
    assert len(cache) == 1
    assert seen == [("k", 1, "replaced")]
    check_invariants(cache)


def test_stats_count_hits_misses_sets() -> None:
    """Stats count hits, misses, sets and entries exactly; bytes are weighed under a byte bound."""
    cache = MemoryCache()
    cache.set("a", 1)
    cache.set("b", 2)
    for _ in range(3):
        cache.get("a")
    cache.get("nope")
    stats = cache.stats
    assert isinstance(stats, MemoryStats)
    assert (stats.hits, stats.misses, stats.sets, stats.entries) == (3, 1, 2, 2)
    assert stats.hit_ratio == pytest.approx(0.75)
    assert stats.weight_bytes == 0  # no byte bound: nothing is weighed
    weighed = MemoryCache(max_bytes=10_000)
    weighed.set("a", 1)
    weighed.set("b", 2)
    assert weighed.stats.weight_bytes == default_weigher("a", 1) + default_weigher("b", 2)


def test_reads_are_buffered_not_applied_and_hits_stay_exact_when_buffer_overflows() -> None:
    """Reads wait in a bounded buffer the next write replays; every hit is counted past it."""
    cache = MemoryCache(max_entries=100)
    cache.set("k", 1)
    node = cache._data["k"]
    reads = 3 * memory_module._READ_BUFFER
    for _ in range(reads):
        assert cache.get("k") == 1
    # nothing replayed yet: still in the window where the write put it, buffer bounded
    assert node.seg == 0
    assert len(cache._reads) == memory_module._READ_BUFFER
    assert cache.stats.hits == reads
    cache.set("other", 2)  # a write replays the buffer
    assert cache._reads == []
    assert cache.stats.hits == reads
    assert cache._sketch.frequency(node.hash) >= 10


def test_get_does_no_policy_work_inline() -> None:
    """get never touches the frequency sketch, even when 500 reads overflow the read buffer."""

    class Tripwire:
        def increment(self, h: int) -> None:
            raise AssertionError("policy work on the read path")

        frequency = increment

    cache = MemoryCache(max_entries=10, default_ttl=60)
    for i in range(10):
        cache.set(i, i)
    real = cache._sketch
    cache._sketch = Tripwire()  # type: ignore[assignment]
    for _ in range(50):
        for i in range(10):  # 500 hits: more than the read buffer holds
            assert cache.get(i) == i
    cache._sketch = real
    cache.set("w", 0)
    assert cache.stats.hits == 500


def test_negative_bounds_bad_jitter_and_zero_default_ttl_are_refused() -> None:
    """Negative bounds, ttl_jitter above 1 and default_ttl 0 raise, naming the argument."""
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(max_entries=-1)
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryCache(max_bytes=-1)
    with pytest.raises(ValueError, match="ttl_jitter"):
        MemoryCache(ttl_jitter=1.5)
    with pytest.raises(ValueError, match="default_ttl"):
        MemoryCache(default_ttl=0)


def test_zero_capacity_stores_nothing() -> None:
    """With max_entries=0 set returns False, nothing is read back, and the rejection is counted."""
    cache = MemoryCache(max_entries=0)
    assert cache.set("k", 1) is False
    assert cache.get("k") is None
    assert cache.stats.rejections == 1


# ---------------------------------------------------------------------- TTL


def test_ttl_expires_exactly_at_deadline_and_counts_a_miss() -> None:
    """An entry lives until its deadline, not a moment past; the expired read is a miss."""
    clock = ManualClock()
    seen, on_evict = recorder()
    cache = MemoryCache(clock=clock, on_evict=on_evict)
    cache.set("k", "v", ttl=10)
    clock.advance(9.999)
    assert cache.get("k") == "v"
    assert "k" in cache
    clock.advance(0.001)
    assert "k" not in cache
    assert cache.get("k") is None
    assert len(cache) == 0  # the expired read removed it
    assert seen == [("k", "v", "expired")]
    assert cache.stats.expirations == 1
    assert cache.stats.misses == 1
    check_invariants(cache)


def test_default_ttl_applies_and_explicit_ttl_wins() -> None:
    """default_ttl applies to a set without ttl, and an explicit ttl overrides it."""
    clock = ManualClock()
    cache = MemoryCache(clock=clock, default_ttl=5)
    cache.set("short", 1)
    cache.set("long", 2, ttl=50)
    clock.advance(6)
    assert cache.get("short") is None
    assert cache.get("long") == 2


def test_no_ttl_never_expires() -> None:
    """Without any ttl an entry outlives a billion seconds and cleanup removes nothing."""
    clock = ManualClock()
    cache = MemoryCache(clock=clock)
    cache.set("k", 1)
    clock.advance(10**9)
    assert cache.get("k") == 1
    assert cache.cleanup() == 0


def test_nonpositive_ttl_stores_nothing_and_drops_old_value() -> None:
    """set with ttl=0 returns False and drops the value it would have replaced."""
    seen, on_evict = recorder()
    cache = MemoryCache(on_evict=on_evict)
    cache.set("k", 1)
    assert cache.set("k", 2, ttl=0) is False
    assert cache.get("k") is None
    assert seen == [("k", 1, "replaced")]
    check_invariants(cache)


def test_infinite_ttl_never_expires_and_nan_is_refused() -> None:
    """ttl=inf never expires, ttl=-inf stores nothing, and ttl=NaN raises."""
    clock = ManualClock()
    cache = MemoryCache(clock=clock, default_ttl=5)
    cache.set("k", 1, ttl=float("inf"))
    assert cache.set("gone", 1, ttl=float("-inf")) is False
    with pytest.raises(ValueError, match="NaN"):
        cache.set("k", 2, ttl=float("nan"))
    clock.advance(10**6)
    assert cache.get("k") == 1
    check_invariants(cache)


def test_a_single_string_is_one_tag() -> None:
    """tags="user:1" is the one tag user:1, not the tags u, s, e and r."""
    cache = MemoryCache()
    cache.set("k", 1, tags="user:1")
    assert cache.invalidate_tags(["u"]) == 0
    assert cache.invalidate_tags(["user:1"]) == 1


def test_jitter_spreads_deadlines_within_bounds() -> None:
    """With 10% jitter every entry expires between 90% and 110% of its ttl, not all at once."""
    clock = ManualClock()
    cache = MemoryCache(clock=clock, ttl_jitter=0.1, max_entries=1000)
    keys = range(300)
    for key in keys:
        cache.set(key, key, ttl=100)
    clock.advance(89.99)
    assert all(key in cache for key in keys)  # nobody below -10 %
    clock.advance(10.01)  # exactly the nominal ttl: about half are gone
    alive = sum(key in cache for key in keys)
    assert 0 < alive < 300
    clock.advance(10.01)
    assert not any(key in cache for key in keys)  # nobody beyond +10 %


def test_ttl_update_moves_the_deadline() -> None:
    """Overwriting with a longer ttl, then with none, moves the deadline later, then removes it."""
    clock = ManualClock()
    cache = MemoryCache(clock=clock)
    cache.set("k", 1, ttl=5)
    cache.set("k", 2, ttl=100)
    clock.advance(50)
    assert cache.cleanup() == 0
    assert cache.get("k") == 2
    cache.set("k", 3)  # no ttl any more
    clock.advance(1000)
    assert cache.get("k") == 3
    check_invariants(cache)


def test_cleanup_removes_all_expired_and_only_them() -> None:
    """cleanup removes every expired entry, reported as expired, and no entry still alive."""
    clock = ManualClock()
    seen, on_evict = recorder()
    cache = MemoryCache(clock=clock, on_evict=on_evict, max_entries=1000)
    for i in range(100):
        cache.set(("short", i), i, ttl=5 + i / 100)
        cache.set(("long", i), i, ttl=500)
        cache.set(("forever", i), i)
    clock.advance(6.5)
    assert cache.cleanup() == 100
    assert len(cache) == 200
    assert cache.stats.expirations == 100
    assert {key[0] for key, _, reason in seen if reason == "expired"} == {"short"}
    check_invariants(cache)


def test_cleanup_takes_the_partly_due_bucket_too() -> None:
    """cleanup removes an expired entry whose one-second bucket also holds an entry not yet due."""
    clock = ManualClock(1000.0)
    cache = MemoryCache(clock=clock)
    cache.set("a", 1, ttl=0.2)  # deadline 1000.2
    cache.set("b", 1, ttl=0.9)  # deadline 1000.9, same one-second bucket
    clock.advance(0.5)
    assert cache.cleanup() == 1
    assert list(cache.keys()) == ["b"]
    check_invariants(cache)


def test_writes_expire_a_bounded_number_of_entries() -> None:
    """Each write expires at most _EXPIRE_PER_WRITE entries, and later writes remove the rest."""
    clock = ManualClock()
    cache = MemoryCache(clock=clock, max_entries=1000)
    for i in range(100):
        cache.set(i, i, ttl=1)
    clock.advance(5)
    cache.set("fresh", 0)
    budget = memory_module._EXPIRE_PER_WRITE
    assert len(cache) == 100 - budget + 1  # some, not all: no full sweep inside a write
    for i in range(100):
        cache.set(("more", i), i)
    assert sum(1 for i in range(100) if i in cache._data) == 0  # later writes finished it
    check_invariants(cache)


def test_keys_lists_only_live_entries() -> None:
    """keys() leaves out an entry that has expired but not been cleaned up."""
    clock = ManualClock()
    cache = MemoryCache(clock=clock)
    cache.set("a", 1, ttl=1)
    cache.set("b", 2)
    clock.advance(2)
    assert cache.keys() == ["b"]


# ---------------------------------------------------------------------- bounds


def test_entry_bound_holds_after_every_set() -> None:
    """After each of 1,000 sets at most 100 entries remain; each eviction is reported as size."""
    seen, on_evict = recorder()
    cache = MemoryCache(max_entries=100, on_evict=on_evict)
    for i in range(1000):
        cache.set(i, i)
        assert len(cache) <= 100
    assert len(cache) == 100
    assert cache.stats.evictions == 900
    assert len(seen) == 900
    assert {reason for _, _, reason in seen} == {"size"}
    check_invariants(cache)


def test_byte_bound_holds_after_every_set_with_a_custom_weigher() -> None:
    """With a custom weigher the total weight stays within max_bytes after every set."""
    cache = MemoryCache(max_entries=1000, max_bytes=1000, weigher=lambda k, v: len(v))
    for i in range(20):
        cache.set(i, "x" * 300)
        assert cache.stats.weight_bytes <= 1000
        check_invariants(cache)
    assert 1 <= len(cache) <= 3


def test_value_heavier_than_the_bound_is_refused_and_old_value_dropped() -> None:
    """A value heavier than max_bytes is refused and counted, and the key's old value dropped."""
    cache = MemoryCache(max_bytes=100, weigher=lambda k, v: len(v))
    assert cache.set("k", "small") is True
    assert cache.set("k", "y" * 101) is False
    assert cache.get("k") is None
    assert cache.stats.rejections == 1
    check_invariants(cache)


def test_default_weigher_grows_with_the_value() -> None:
    """The default weigher charges at least a value's bytes, so a byte bound limits big values."""
    small = default_weigher("k", b"x")
    large = default_weigher("k", b"x" * 10_000)
    assert large - small >= 9_999
    assert default_weigher("k", list(range(100))) > default_weigher("k", [])
    cache = MemoryCache(max_bytes=50_000)
    for i in range(20):
        cache.set(i, b"x" * 10_000)
    assert len(cache) <= 4
    assert cache.stats.weight_bytes <= 50_000


class Wrapper:
    """Like the tiered cache's Entry: a small slotted object around the real payload."""

    __slots__ = ("stamp", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.stamp = 1.0


class Plain:
    def __init__(self, value: Any) -> None:
        self.value = value


class Unmeasurable:
    def __sizeof__(self) -> int:
        raise RuntimeError("no size")


def test_default_weigher_sees_through_wrappers_and_samples_containers() -> None:
    """The default weigher weighs what slotted or plain wrappers hold, estimates big lists from a
    sample, and falls back when __sizeof__ raises."""
    payload = {"title": "x" * 5_000, "body": "y" * 5_000}
    assert default_weigher("k", Wrapper(payload)) >= 10_000
    assert default_weigher("k", Plain(b"z" * 10_000)) >= 10_000
    many = ["abc" * 100] * 1000  # 1,000 items of ~350 bytes, only 4 of them measured
    assert 300_000 <= default_weigher("k", many) <= 450_000
    assert default_weigher("k", Unmeasurable()) > 0  # a fallback, not an exception
    cache = MemoryCache(max_bytes=50_000)
    for i in range(20):
        cache.set(i, Wrapper(payload))
    assert len(cache) <= 5


def test_a_raising_or_negative_weigher_leaves_the_cache_untouched() -> None:
    """A weigher that raises or returns a negative weight fails the set, keeping the old value."""

    def weigher(key: Hashable, value: Any) -> int:
        if value == "boom":
            raise RuntimeError("no weight")
        return -1 if value == "neg" else 1

    cache = MemoryCache(weigher=weigher)
    cache.set("k", "ok")
    with pytest.raises(RuntimeError):
        cache.set("k", "boom")
    with pytest.raises(ValueError, match="negative"):
        cache.set("k", "neg")
    assert cache.get("k") == "ok"
    assert cache.stats.sets == 1
    check_invariants(cache)


def test_frequent_keys_survive_a_scan_that_flushes_an_lru() -> None:
    """Frequently read keys survive 2,000 one-time writes, most refused, that would flush an LRU."""
    cache = MemoryCache(max_entries=100)
    hot = [("hot", i) for i in range(50)]
    for key in hot:
        cache.set(key, 1)
    for _ in range(5):
        for key in hot:
            assert cache.get(key) == 1
        cache.set(("tick", _), 0)  # replay the reads
    for i in range(2000):  # one-time keys, 20x the capacity
        cache.set(("scan", i), i)
    survivors = sum(key in cache for key in hot)
    assert survivors >= 48  # an LRU of 100 would keep none of them
    assert cache.stats.rejections > 1500
    check_invariants(cache)


def test_promotion_to_protected_on_replayed_reads() -> None:
    """An entry in probation moves to protected once a write replays a read of it."""
    cache = MemoryCache(max_entries=200)  # window of 2
    for i in range(10):
        cache.set(i, i)
    assert cache._data[0].seg == 1  # pushed out of the window into probation
    cache.get(0)
    cache.set("w", 0)
    assert cache._data[0].seg == 2
    check_invariants(cache)


# ---------------------------------------------------------------------- tags & removal


def test_tags_index_and_invalidate_tags() -> None:
    """invalidate_tags removes every entry with any given tag, as deleted, emptying the index."""
    seen, on_evict = recorder()
    cache = MemoryCache(on_evict=on_evict)
    cache.set("a", 1, tags=["t1", "t2"])
    cache.set("b", 2, tags=("t2",))
    cache.set("c", 3)
    assert cache.invalidate_tags(["t2", "unknown"]) == 2
    assert cache.get("a") is None
    assert cache.get("b") is None
    assert cache.get("c") == 3
    assert cache._tags._keys == {}
    assert sorted(key for key, _, reason in seen if reason == "deleted") == ["a", "b"]
    check_invariants(cache)


def test_retagging_on_overwrite_updates_the_index() -> None:
    """Overwriting with new tags drops the old tags, so only the new ones invalidate the entry."""
    cache = MemoryCache()
    cache.set("a", 1, tags=["old"])
    cache.set("a", 2, tags=["new"])
    assert cache.invalidate_tags(["old"]) == 0
    assert cache.get("a") == 2
    assert cache.invalidate_tags(["new"]) == 1
    check_invariants(cache)


def test_evicted_and_expired_entries_leave_the_tag_index() -> None:
    """Entries evicted for size or removed as expired leave no trace in the tag index."""
    clock = ManualClock()
    cache = MemoryCache(max_entries=10, clock=clock)
    for i in range(100):
        cache.set(i, i, tags=[f"t{i % 3}"], ttl=10)
        check_invariants(cache)
    clock.advance(20)
    cache.cleanup()
    assert cache._tags._keys == {}
    check_invariants(cache)


def test_delete_and_delete_many_count_only_live_entries() -> None:
    """delete and delete_many count the live entries removed; an expired one is reported expired."""
    clock = ManualClock()
    seen, on_evict = recorder()
    cache = MemoryCache(clock=clock, on_evict=on_evict)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("c", 3, ttl=1)
    assert cache.delete("a") is True
    assert cache.delete("a") is False
    clock.advance(2)
    assert cache.delete_many(["b", "c", "zz"]) == 1  # c was already expired
    assert len(cache) == 0
    assert seen == [("a", 1, "deleted"), ("b", 2, "deleted"), ("c", 3, "expired")]
    check_invariants(cache)


def test_invalidate_matching_removes_matches_and_a_raising_predicate_none() -> None:
    """invalidate_matching removes the keys the predicate accepts; a raising one removes none."""
    cache = MemoryCache()
    for i in range(10):
        cache.set(f"user:{i}", i)
        cache.set(f"task:{i}", i)
    assert cache.invalidate_matching(lambda k: str(k).startswith("user:")) == 10
    assert sorted(cache.keys()) == sorted(f"task:{i}" for i in range(10))

    def bad(key: Hashable) -> bool:
        raise RuntimeError("predicate failed")

    with pytest.raises(RuntimeError):
        cache.invalidate_matching(bad)
    assert len(cache) == 10
    check_invariants(cache)


def test_clear_removes_every_entry_and_tag_and_keeps_the_stats() -> None:
    """clear removes every entry, reported cleared, keeps the stats; the cache stays usable."""
    seen, on_evict = recorder()
    cache = MemoryCache(on_evict=on_evict, default_ttl=30)
    for i in range(5):
        cache.set(i, i, tags=["t"])
    cache.get(0)
    assert cache.clear() == 5
    assert len(cache) == 0
    assert sorted(key for key, _, reason in seen if reason == "cleared") == list(range(5))
    assert cache.stats.hits == 1
    check_invariants(cache)
    cache.set("again", 1, tags=["t"])
    assert cache.get("again") == 1
    check_invariants(cache)


# ---------------------------------------------------------------------- callbacks


def test_a_raising_callback_is_logged_and_never_corrupts_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An on_evict callback that raises is logged, never propagates, and corrupts nothing."""
    calls: list[str] = []

    def on_evict(key: Hashable, value: Any, reason: str) -> None:
        calls.append(reason)
        raise RuntimeError("callback bug")

    cache = MemoryCache(max_entries=10, on_evict=on_evict)
    with caplog.at_level(logging.ERROR, logger="corestone.cache.memory"):
        for i in range(30):
            assert cache.set(i, i) in (True, False)
        cache.delete(29)
        cache.invalidate_tags(["none"])
        cache.clear()
    assert len(calls) == 30
    assert "callback bug" in caplog.text
    check_invariants(cache)
    cache.set("still", "works")
    assert cache.get("still") == "works"


def test_a_reentrant_callback_sees_a_consistent_cache() -> None:
    """An on_evict callback sees a consistent cache and may write to it within the bound."""
    cache: MemoryCache

    def on_evict(key: Hashable, value: Any, reason: str) -> None:
        check_invariants(cache)
        if reason == "size" and isinstance(key, int):
            cache.set(("tomb", key), value)  # writes from inside the callback

    cache = MemoryCache(max_entries=20, on_evict=on_evict)
    for i in range(200):
        cache.set(i, i)
        check_invariants(cache)
    assert len(cache) == 20


def test_eviction_reasons_are_the_documented_ones() -> None:
    """Replace, expiry, delete, size and clear report exactly the names in EVICTION_REASONS."""
    seen, on_evict = recorder()
    clock = ManualClock()
    cache = MemoryCache(max_entries=3, clock=clock, on_evict=on_evict)
    cache.set("r", 1)
    cache.set("r", 2)
    cache.set("e", 1, ttl=1)
    clock.advance(2)
    cache.cleanup()
    cache.delete("r")
    for i in range(6):
        cache.set(i, i)
    cache.clear()
    reasons = [reason for _, _, reason in seen]
    assert reasons[:3] == ["replaced", "expired", "deleted"]
    assert set(reasons[3:]) == {"size", "cleared"}
    assert reasons[-1] == "cleared"
    assert set(reasons) == set(EVICTION_REASONS)


# ---------------------------------------------------------------------- model-based


KEYS = st.integers(min_value=0, max_value=5)
TAGS = st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)


class MemoryCacheMachine(RuleBasedStateMachine):
    """Random operations against a reference model of what *may* still be in the cache.

    The cache may drop an entry at any moment (eviction), so the model cannot predict hits;
    it predicts what a hit is allowed to return: the latest value set, never a deleted,
    invalidated, cleared or expired one.  A miss removes the key from the model: nothing
    brings a dropped entry back except a new ``set``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.evicted: Evicted = []
        self.cache = MemoryCache()
        # key -> (value, earliest possible deadline, latest possible deadline, tags)
        self.model: dict[int, tuple[int, float, float, frozenset[str]]] = {}
        self.jitter = 0.0
        self.counter = 0

    @initialize(
        max_entries=st.integers(min_value=1, max_value=8),
        max_bytes=st.none() | st.integers(min_value=0, max_value=120),
        jitter=st.sampled_from([0.0, 0.25]),
    )
    def setup(self, max_entries: int, max_bytes: int | None, jitter: float) -> None:
        def on_evict(key: Hashable, value: Any, reason: str) -> None:
            self.evicted.append((key, value, reason))

        self.jitter = jitter
        self.cache = MemoryCache(
            max_entries=max_entries,
            max_bytes=max_bytes,
            weigher=lambda key, value: 10 + value % 5 * 10,
            ttl_jitter=jitter,
            clock=self.clock,
            on_evict=on_evict,
        )

    @rule(key=KEYS, ttl=st.none() | st.sampled_from([0, 0.5, 1, 3, 30]), tags=TAGS)
    def set(self, key: int, ttl: float | None, tags: list[str]) -> None:
        self.counter += 1
        value = self.counter
        stored = self.cache.set(key, value, ttl=ttl, tags=tags)
        self.model.pop(key, None)
        if ttl is not None and ttl <= 0:
            assert stored is False
            return
        now = self.clock.now
        if ttl is None:
            low = high = float("inf")
        else:
            low, high = now + ttl * (1 - self.jitter), now + ttl * (1 + self.jitter)
        if stored:
            self.model[key] = (value, low, high, frozenset(tags))
        else:
            assert key not in self.cache

    @rule()
    def get_every_key(self) -> None:
        for key in range(6):
            self.get(key)

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        missing = object()
        got = self.cache.get(key, missing)
        expected = self.model.get(key)
        if got is missing:
            self.model.pop(key, None)
            return
        assert expected is not None, "a hit on a key that was deleted, expired or never set"
        value, _, high, _ = expected
        assert got == value
        assert self.clock.now < high, "an expired value was returned"

    @rule(key=KEYS)
    def delete(self, key: int) -> None:
        self.cache.delete(key)
        self.model.pop(key, None)
        assert key not in self.cache

    @rule(tags=TAGS)
    def invalidate_tags(self, tags: list[str]) -> None:
        removed = self.cache.invalidate_tags(tags)
        doomed = [k for k, (_, _, _, t) in self.model.items() if t & set(tags)]
        for key in doomed:
            del self.model[key]
        assert removed <= len(self.cache._data) + removed
        for key in doomed:
            assert key not in self.cache

    @rule(modulus=st.integers(min_value=2, max_value=4))
    def invalidate_matching(self, modulus: int) -> None:
        self.cache.invalidate_matching(lambda k: isinstance(k, int) and k % modulus == 0)
        for key in [k for k in self.model if k % modulus == 0]:
            del self.model[key]

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 1.5, 4.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def cleanup(self) -> None:
        self.cache.cleanup()
        now = self.clock.now
        for key in list(self.model):
            if self.model[key][2] <= now:
                assert key not in self.cache._data

    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.clear()
        assert len(self.cache) == 0

    @invariant()
    def nothing_past_its_deadline_is_served(self) -> None:
        # Checked after every step (not only when a rule happens to read the key) so that a
        # value served a moment too long cannot slip through. Reading an expired key only
        # removes it, which any read may do, so this does not bend the run.
        now = self.clock.now
        missing = object()
        for key in [k for k, (_, _, high, _) in self.model.items() if high <= now]:
            assert self.cache.get(key, missing) is missing, "an expired value was returned"
            del self.model[key]

    @invariant()
    def structures_agree(self) -> None:
        check_invariants(self.cache)

    @invariant()
    def bounds_hold(self) -> None:
        stats = self.cache.stats
        assert stats.entries <= self.cache.max_entries
        if self.cache.max_bytes is not None:
            assert stats.weight_bytes <= self.cache.max_bytes

    @invariant()
    def callbacks_name_known_reasons(self) -> None:
        assert all(reason in EVICTION_REASONS for _, _, reason in self.evicted)


MemoryCacheMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60)
test_memory_cache_against_model = MemoryCacheMachine.TestCase


def test_set_many_stores_like_set_with_one_bookkeeping_pass() -> None:
    """set_many stores like a set per entry: the same bound, tags and ttls apply."""
    clock = [0.0]
    one_by_one = MemoryCache(max_entries=50, clock=lambda: clock[0])
    batched = MemoryCache(max_entries=50, clock=lambda: clock[0])
    entries = [(f"k{i}", i, 10.0 if i % 2 else None, [f"t{i % 3}"]) for i in range(80)]
    for key, value, ttl, tags in entries:
        one_by_one.set(key, value, ttl=ttl, tags=tags)
    assert batched.set_many(entries) <= 50
    assert len(batched) == len(one_by_one) == 50
    assert batched.invalidate_tags(["t0"]) > 0
    assert all(batched.get(f"k{i}") is None for i in range(0, 80, 3))
    clock[0] = 11.0
    assert all(batched.get(f"k{i}") is None for i in range(1, 80, 2))  # the ttl applied


def test_set_many_refuses_a_nan_ttl_before_storing_anything() -> None:
    """A NaN ttl anywhere in set_many raises before any entry is stored."""
    cache = MemoryCache()
    with pytest.raises(ValueError, match="NaN"):
        cache.set_many([("a", 1, None, ()), ("b", 2, float("nan"), ())])
    assert len(cache) == 0
