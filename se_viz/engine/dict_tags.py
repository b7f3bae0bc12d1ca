"""Has any of these dicts changed? One numpy gather over CPython's dict version tags.

CPython keeps in every dict a version tag (PEP 509, ``ma_version_tag``) that moves on
every write; it is not exposed to Python. `TagReader` reads the tags of many dicts, and the
type pointers of many objects, by one gather over their memory: about 20-40 us for 1,500
objects even right after a forward pass has evicted them from the caches, where comparing
the dicts themselves costs 0.3-0.5 ms (benchmarks/floor.py). `traced.ModelState` uses it
to skip comparing a model's dicts when none was written to since they were compared.

The layout is CPython's own (object header, ``ma_used``, then the tag), so `available`
checks it on this interpreter once: a dict's ``ma_used`` must read as its length, its tag
must move on every kind of write to a plain dict, an OrderedDict and an instance
``__dict__``, and stay put otherwise. Where it does not (another Python, a free-threaded
build, a future CPython that drops the tag), `available` is False and callers compare the
dicts instead. Only objects the caller keeps alive are read. Not seen: an OrderedDict
reordered in place (``move_to_end``: its order lives outside the dict; Paddle never does).
"""

from __future__ import annotations

import functools
import sys
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .gather import reader

_USED, _TAG, _TYPE = 16, 24, 8  # byte offsets: ma_used, ma_version_tag, ob_type


class TagReader:
    """Reads, in one gather, the version tag of each of ``dicts`` and the type pointer of
    each of ``objects``. The caller keeps every one of them alive while it reads."""

    def __init__(self, dicts: Sequence[dict], objects: Sequence[object] = ()) -> None:
        self.read = reader([id(d) + _TAG for d in dicts] + [id(o) + _TYPE for o in objects])


class _Probe:
    pass


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether this interpreter's dicts carry a tag that moves on every write (checked on
    plain dicts, OrderedDicts and an instance ``__dict__``; CPython 3.11-3.13 do)."""
    if sys.implementation.name != "cpython":
        return False
    try:
        plain, ordered, obj = {"a": 1}, OrderedDict(a=1), _Probe()
        obj.x = 1
        inst = obj.__dict__
        dicts = [plain, ordered, inst]
        read = TagReader(dicts, [obj]).read
        used = reader([id(d) + _USED for d in dicts])
        if used().tolist() != [len(d) for d in dicts] or read()[-1] != id(_Probe):
            return False
        writes = [lambda: plain.__setitem__("b", 2), lambda: plain.__setitem__("a", 3),
                  lambda: plain.pop("b"), lambda: ordered.__setitem__("b", 2),
                  lambda: ordered.pop("a"),
                  lambda: setattr(obj, "x", 2), lambda: setattr(obj, "y", 1),
                  lambda: delattr(obj, "y")]
        before = read()
        if not np.array_equal(before, read()):
            return False
        for write in writes:
            write()
            after = read()
            if np.array_equal(after[:-1], before[:-1]):
                return False
            before = after
        obj.__class__ = _Other
        return int(read()[-1]) == id(_Other)
    except Exception:  # noqa: BLE001 - any surprise means: compare the dicts instead
        return False


class _Other(_Probe):
    pass
