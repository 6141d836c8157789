"""The GGUF prompt cache's bookkeeping: longest shared prefix wins, snapshots that extend others replace
them, and the total size stays within the budget (least recently used dropped first)."""

from __future__ import annotations

from model_server.runtime.prompt_cache import PromptCache, common_prefix


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [1]) == 0


def test_best_is_the_longest_shared_prefix() -> None:
    cache = PromptCache(1000)
    cache.put([1, 2, 3, 4], b"a")
    cache.put([1, 2, 9], b"b")
    cache.put([7, 8], b"c")
    found = cache.best([1, 2, 3, 5])
    assert found is not None and found[0].state == b"a" and found[1] == 3
    found = cache.best([1, 2, 9, 9])
    assert found is not None and found[0].state == b"b" and found[1] == 3
    assert cache.best([6]) is None


def test_an_extending_snapshot_replaces_its_prefix_and_a_prefix_is_not_kept() -> None:
    cache = PromptCache(1000)
    cache.put([1, 2], b"short")
    cache.put([1, 2, 3], b"long")
    assert len(cache) == 1 and cache.size_bytes == 4
    cache.put([1, 2], b"again")
    assert len(cache) == 1
    found = cache.best([1, 2])
    assert found is not None and found[0].state == b"long"


def test_size_is_bounded_and_least_recently_used_go_first() -> None:
    cache = PromptCache(10)
    cache.put([1], b"xxxx")
    cache.put([2], b"yyyy")
    assert cache.best([1, 5]) is not None  # [1] is now the most recently used
    cache.put([3], b"zzzz")
    assert cache.size_bytes <= 10 and len(cache) == 2
    assert cache.best([2]) is None and cache.best([1]) is not None and cache.best([3]) is not None


def test_too_large_or_empty_snapshots_are_not_kept() -> None:
    cache = PromptCache(3)
    cache.put([1], b"xxxx")
    cache.put([], b"x")
    assert len(cache) == 0 and cache.size_bytes == 0
    off = PromptCache(0)
    off.put([1], b"x")
    assert len(off) == 0


def test_the_number_of_snapshots_is_bounded_too() -> None:
    cache = PromptCache(10**9, max_entries=3)
    for first in range(5):
        cache.put([first, 1, 2], b"x")
    assert len(cache) == 3
    assert cache.best([0, 1, 2]) is None and cache.best([4, 1, 2]) is not None
