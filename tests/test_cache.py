"""se_viz.cache: LRU bounded by entries and bytes, nbytes accounting, threads, stats."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from se_viz.cache import BoundedCache, CacheStats, nbytes_of


@dataclass(frozen=True)
class Inner:
    gates: dict[str, np.ndarray]
    probs: np.ndarray


@dataclass(frozen=True)
class Outer:
    crop: np.ndarray
    inner: Inner
    parts: tuple
    name: str = "x"


def _arr(n_bytes: int) -> np.ndarray:
    return np.zeros(n_bytes, np.uint8)


# ----------------------------------------------------------------------------- nbytes_of


def test_nbytes_of_walks_nested_dataclasses_dicts_lists_and_tuples():
    value = Outer(crop=np.zeros((224, 224, 3), np.uint8),                     # 150528
                  inner=Inner(gates={"a": np.zeros(64, np.float32),           # 256
                                     "b": np.zeros((2, 8), np.float16)},      # 32
                              probs=np.zeros(1000, np.float64)),              # 8000
                  parts=([np.zeros(10, np.int32)], {"k": (b"abcd",)}))        # 40 + 4
    assert nbytes_of(value) == 150528 + 256 + 32 + 8000 + 40 + 4


def test_nbytes_of_counts_shared_memory_once():
    base = np.zeros(1000, np.float32)
    assert nbytes_of([base, base, {"again": base}]) == 4000
    # Views keep their whole base alive: charged the base, once.
    assert nbytes_of((base[:10], base[500:], base)) == 4000
    assert nbytes_of(base[:10]) == 4000
    # The outermost array (here over a bytes object) is the owner that gets charged.
    assert nbytes_of(np.frombuffer(b"\0" * 80, np.float64)[:2]) == 80


def test_nbytes_of_ignores_other_objects_and_survives_cycles():
    cyclic: list = [np.zeros(8, np.uint8)]
    cyclic.append(cyclic)
    assert nbytes_of(cyclic) == 8
    assert nbytes_of({"s": "a long string", "n": 3, "f": 1.5, "none": None}) == 0
    assert nbytes_of(Outer) == 0  # a dataclass type, not an instance


# ----------------------------------------------------------------------------- LRU


def test_lru_by_entries_evicts_the_least_recently_used():
    cache = BoundedCache(max_entries=3, max_bytes=10**9)
    for k in "abc":
        cache.put(k, _arr(1))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", _arr(1))
    assert "b" not in cache and {"a", "c", "d"} == {k for k in "abcd" if k in cache}
    assert cache.stats().evictions == 1 and len(cache) == 3


def test_lru_by_bytes_evicts_until_the_new_value_fits():
    cache = BoundedCache(max_entries=100, max_bytes=1000)
    for k in range(4):
        cache.put(k, _arr(250))
    assert cache.stats().bytes == 1000 and len(cache) == 4
    cache.get(0)
    cache.put("big", _arr(600))  # needs 3 x 250 freed: 1, 2, 3 go (0 was used recently)
    assert [k for k in (0, 1, 2, 3, "big") if k in cache] == [0, "big"]
    stats = cache.stats()
    assert stats.bytes == 850 and stats.evictions == 3


def test_a_value_larger_than_the_budget_is_returned_but_not_stored():
    cache = BoundedCache(max_entries=10, max_bytes=100)
    cache.put("small", _arr(50))
    assert cache.put("huge", _arr(101)) is False
    assert "huge" not in cache and "small" in cache
    big = cache.get_or_compute("huge2", lambda: _arr(500))
    assert big.nbytes == 500 and "huge2" not in cache and cache.stats().bytes == 50


def test_replacing_a_key_updates_the_byte_count():
    cache = BoundedCache(max_entries=10, max_bytes=1000)
    cache.put("k", _arr(300))
    cache.put("k", _arr(100))
    assert cache.stats().bytes == 100 and len(cache) == 1


def test_bytes_follow_nested_results():
    value = Inner(gates={b: np.zeros(256, np.float32) for b in ("x", "y")},
                  probs=np.zeros(1000, np.float32))
    cache = BoundedCache(max_entries=10, max_bytes=10_000)
    cache.put("r", value)
    assert cache.stats().bytes == 2 * 1024 + 4000


def test_stats_count_hits_misses_and_clear_resets():
    cache = BoundedCache(max_entries=2, max_bytes=1000)
    calls = []
    for key in ("a", "a", "b", "a", "c", "b"):
        cache.get_or_compute(key, lambda key=key: calls.append(key) or _arr(10))
    # a miss, a hit, b miss, a hit, c miss (evicts b), b miss (evicts a)
    assert calls == ["a", "b", "c", "b"]
    assert cache.stats() == CacheStats(entries=2, bytes=20, hits=2, misses=4, evictions=2,
                                       max_entries=2, max_bytes=1000)
    assert cache.get("zzz", "default") == "default" and cache.stats().misses == 5
    cache.clear()
    assert cache.stats() == CacheStats(0, 0, 0, 0, 0, 2, 1000)


def test_an_exception_stores_nothing_and_the_next_call_computes():
    cache = BoundedCache(max_entries=2, max_bytes=1000)

    def boom():
        raise RuntimeError("bad image")

    with pytest.raises(RuntimeError, match="bad image"):
        cache.get_or_compute("k", boom)
    assert "k" not in cache
    assert cache.get_or_compute("k", lambda: _arr(5)).nbytes == 5
    assert cache._key_locks == {}  # no lock left behind


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="must be >= 1"):
        BoundedCache(0, 10)
    with pytest.raises(ValueError, match="must be >= 1"):
        BoundedCache(10, 0)


# ----------------------------------------------------------------------------- threads


def test_eight_threads_asking_for_one_key_compute_it_once():
    cache = BoundedCache(max_entries=4, max_bytes=10_000)
    calls = []
    start = threading.Barrier(8)
    got: list = [None] * 8

    def compute():
        calls.append(1)
        time.sleep(0.05)  # long enough that every other thread arrives meanwhile
        return _arr(100)

    def worker(i: int) -> None:
        start.wait()
        got[i] = cache.get_or_compute("same", compute)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(g is got[0] for g in got)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (7, 1, 1)


def test_eight_threads_hammering_stay_within_both_bounds():
    cache = BoundedCache(max_entries=20, max_bytes=5_000)
    errors: list[BaseException] = []
    computed = [0] * 8

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(400):
                key = int(rng.integers(0, 60))
                size = 50 + key * 5  # a key always has the same size
                value = cache.get_or_compute(key, lambda s=size: _arr(s))
                computed[seed] += 1
                assert value.nbytes == size
                if rng.random() < 0.1:
                    cache.put(("extra", key), _arr(size))
                stats = cache.stats()
                assert stats.entries <= 20 and stats.bytes <= 5_000
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    stats = cache.stats()
    # The byte count is exactly the sum of what is stored: no drift under contention.
    assert stats.bytes == sum(size for _, size in cache._data.values())
    assert stats.bytes == sum(nbytes_of(v) for v, _ in cache._data.values())
    assert stats.hits + stats.misses == sum(computed)
    assert stats.entries == len(cache._data) and cache._key_locks == {}
