"""A thread-safe LRU cache bounded in entries AND bytes, for results shared by every session.

numpy + stdlib only. The size of a value is the memory its numpy arrays (and bytes) hold,
found by walking dataclass fields, dicts, lists, tuples and sets (`nbytes_of`). When a new
value pushes the cache over ``max_entries`` or ``max_bytes``, the least recently used
entries are evicted until it fits. A value larger than ``max_bytes`` on its own is
returned but never stored.

`get_or_compute` runs the computation outside the cache's lock, under a lock of its own
key: two threads asking for the same missing key compute it once (the second waits and
then finds it), while different keys compute in parallel.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def nbytes_of(value: Any) -> int:
    """Bytes held by the numpy arrays and bytes objects inside ``value``.

    Walks dataclass fields, mappings (keys and values), lists, tuples, sets and frozensets.
    An array is charged for the memory it keeps alive: a view counts its base array once,
    however many views of it are stored. Anything else counts 0.
    """
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            owner = obj
            while isinstance(owner.base, np.ndarray):
                owner = owner.base
            if owner is not obj and id(owner) in seen:
                continue
            seen.add(id(owner))
            total += owner.nbytes
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            total += obj.nbytes if isinstance(obj, memoryview) else len(obj)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        elif isinstance(obj, Mapping):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
    return total


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a BoundedCache: its size, limits and counters since the last clear."""

    entries: int
    bytes: int
    hits: int
    misses: int
    evictions: int
    max_entries: int
    max_bytes: int


class BoundedCache:
    """LRU mapping bounded by ``max_entries`` and ``max_bytes`` (as measured by ``sizeof``)."""

    def __init__(self, max_entries: int, max_bytes: int,
                 sizeof: Callable[[Any], int] = nbytes_of) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"max_entries and max_bytes must be >= 1, got {max_entries} "
                             f"and {max_bytes}")
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._sizeof = sizeof
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._key_locks: dict[Hashable, list] = {}  # key -> [lock, number of users]

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value stored under ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            return self._lookup(key, default)

    def put(self, key: Hashable, value: Any) -> bool:
        """Store ``value``, evicting LRU entries to fit; False if it alone exceeds max_bytes."""
        size = int(self._sizeof(value))
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return False
            self._data[key] = (value, size)
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped
                self._evictions += 1
            return True

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value for ``key``, or ``compute()`` stored under it (computed once).

        ``compute`` runs without the cache lock held; a second caller of the same key waits
        for the first and gets its value. An exception from ``compute`` stores nothing and
        reaches the caller.
        """
        missing = object()
        with self._lock:
            found = self._lookup(key, missing, count_miss=False)
            if found is not missing:
                return found
            entry = self._key_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                with self._lock:
                    found = self._lookup(key, missing)
                if found is not missing:
                    return found
                value = compute()
                self.put(key, value)
                return value
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._key_locks.pop(key, None)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._data), self._bytes, self._hits, self._misses,
                              self._evictions, self.max_entries, self.max_bytes)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self._hits = self._misses = self._evictions = 0

    def _lookup(self, key: Hashable, default: Any, count_miss: bool = True) -> Any:
        """Caller holds the lock."""
        item = self._data.get(key)
        if item is None:
            self._misses += count_miss
            return default
        self._data.move_to_end(key)
        self._hits += 1
        return item[0]


__all__ = ["BoundedCache", "CacheStats", "nbytes_of"]
