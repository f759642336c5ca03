"""LruCache: the one bounded cache (by count, and by bytes when sizes are given)."""

import pytest
from orchestra.actors.lru import LruCache


def test_the_least_recently_used_entry_goes_first_past_the_count():
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert list(cache) == ["a", "c"] and cache.get("b") is None


def test_peek_does_not_make_an_entry_recent():
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1
    cache.put("c", 3)
    assert "a" not in cache and list(cache) == ["b", "c"]


def test_the_byte_bound_holds_and_counts_replacements_and_pops():
    cache: LruCache[str, bytes] = LruCache(100, max_bytes=10, size=len)
    cache.put("a", b"1234")
    cache.put("b", b"5678")
    cache.put("a", b"12")  # replaced: its old size is no longer counted
    assert cache.bytes == 6
    cache.put("c", b"abcde")  # 11 > 10: the least recently used ("b") goes
    assert list(cache) == ["a", "c"] and cache.bytes == 7
    assert cache.pop("a") == b"12" and cache.bytes == 5
    cache.put("big", b"x" * 11)  # larger than the whole bound: not kept, and nothing else either
    assert len(cache) == 0 and cache.bytes == 0


def test_bounds_are_checked():
    with pytest.raises(ValueError):
        LruCache(0)
    with pytest.raises(ValueError):
        LruCache(1, max_bytes=10)
