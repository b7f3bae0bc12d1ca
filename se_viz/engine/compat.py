"""Every private Paddle access se_viz makes, in one place, so that an upgrade breaks here.

Paddle has no public API for these. Each was checked on the Paddle versions in `CHECKED_ON`
(tests/test_compat.py checks every one on the installed Paddle). Importing this module on
another version warns once (`PaddleVersionWarning`); an access that is gone raises
`PaddleCompatError` naming it, or, for the two that only tune the process, warns and goes on.

    layer_parts(layer)     nn.Layer._forward_pre_hooks, _forward_post_hooks, _parameters,
                           _buffers, _sub_layers          (traced.ModelState)
    inplace_versions(ts)   Tensor._inplace_version()      (traced.ModelState)
    data_ptrs(ts)          Tensor.data_ptr()              (traced.ModelState)
    memory(t)              a CPU tensor's bytes, read in place through ctypes
    value_reader(ts, ix)   a few values of many tensors, read in place by one gather
                                                          (traced.ModelState)
    tensor_words(ts)       the same addresses and versions read from Paddle's C++ objects by three
                           gathers (`TensorWords`; offsets found and checked at run time by
                           `tensor_layout`)                (traced.ModelState)
    set_num_threads(n)     paddle.base.core.set_num_threads   (runtime.set_cpu_threads)
    eager_mode_guard()     paddle.base.framework.global_var._functional_dygraph_context_manager
                                                          (runtime.keep_eager_mode)
"""

from __future__ import annotations

import ctypes
import functools
import math
import operator
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle

from .gather import reader

CHECKED_ON = ("3.3",)  # Paddle major.minor versions every access here was checked on
LAYER_DICTS = ("_forward_pre_hooks", "_forward_post_hooks", "_parameters", "_buffers",
               "_sub_layers")


class PaddleCompatError(RuntimeError):
    """A private Paddle attribute se_viz relies on is missing from the installed Paddle."""


class PaddleVersionWarning(UserWarning):
    """The installed Paddle is not one se_viz's private accesses were checked on."""


def checked_on(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed Paddle's) is in `CHECKED_ON`."""
    version = paddle.__version__ if version is None else version
    return ".".join(version.split(".")[:2]) in CHECKED_ON


def check_version(version: str | None = None) -> bool:
    """`checked_on`, warning (`PaddleVersionWarning`) with every access at risk when not."""
    version = paddle.__version__ if version is None else version
    ok = checked_on(version)
    if not ok:
        warnings.warn(f"se_viz was checked on Paddle {_checked()}, not {version}: its private "
                      f"accesses (se_viz/engine/compat.py: nn.Layer.{', '.join(LAYER_DICTS)}, "
                      "Tensor._inplace_version, paddle.base.core.set_num_threads, "
                      "global_var._functional_dygraph_context_manager) may fail; "
                      f"install paddlepaddle {CHECKED_ON[-1]}.* if they do",
                      PaddleVersionWarning, stacklevel=2)
    return ok


def _checked() -> str:
    return ", ".join(f"{v}.x" for v in CHECKED_ON)


def _missing(access: str, exc: Exception | None = None) -> str:
    return (f"Paddle {paddle.__version__} has no {access}, which se_viz reads (checked on "
            f"Paddle {_checked()}; {type(exc).__name__ if exc else 'missing'})")


def _error(access: str, exc: Exception) -> PaddleCompatError:
    return PaddleCompatError(f"{_missing(access, exc)}: capture with engine='eager' "
                             f"(SE_VIZ_ENGINE=eager) or install paddlepaddle {CHECKED_ON[-1]}.*")


# ----------------------------------------------------------------------------- layers, tensors
def layer_parts(layer: paddle.nn.Layer) -> tuple[dict, dict, dict, dict, dict]:
    """``layer``'s own (not its sublayers') forward pre-hooks, post-hooks (id -> hook),
    parameters, buffers (name -> tensor or None) and sublayers (name -> layer), as Paddle
    keeps them: the dicts themselves, several times cheaper than the public iterators."""
    try:
        return (layer._forward_pre_hooks, layer._forward_post_hooks, layer._parameters,
                layer._buffers, layer._sub_layers)
    except AttributeError as exc:
        gone = [n for n in LAYER_DICTS if not hasattr(layer, n)] or LAYER_DICTS
        raise _error(f"nn.Layer.{gone[0]}", exc) from exc


_PARTS = operator.attrgetter(*LAYER_DICTS)


def layers_parts(layers: Sequence[paddle.nn.Layer]) -> list[tuple[dict, ...]]:
    """`layer_parts` of every layer, mapped in C (no Python frame per layer)."""
    try:
        return list(map(_PARTS, layers))
    except AttributeError:
        return [layer_parts(layer) for layer in layers]  # raises naming the attribute


def inplace_versions(tensors: Sequence[paddle.Tensor]) -> list[int]:
    """Each tensor's in-place version: a counter Paddle bumps on every in-place write.
    (Mapped in C: ~0.1 us a tensor; read before every fast capture.)"""
    return _each("_inplace_version", tensors)


def data_ptrs(tensors: Sequence[paddle.Tensor]) -> list[int]:
    """Each tensor's data address (int): it changes when Paddle gives a tensor new memory
    (a cast, a move to another device)."""
    return _each("data_ptr", tensors)


def _each(method: str, tensors: Sequence[paddle.Tensor]) -> list:
    """``t.<method>()`` of every tensor, mapped in C through ``paddle.Tensor``'s method;
    asked of each one when that is gone or a tensor is not a ``paddle.Tensor`` (raising
    `PaddleCompatError` naming the method when it is missing)."""
    try:
        return list(map(getattr(paddle.Tensor, method), tensors))
    except (AttributeError, TypeError):
        try:
            return [getattr(t, method)() for t in tensors]
        except AttributeError as exc:
            raise _error(f"Tensor.{method}()", exc) from exc


def memory(t: paddle.Tensor) -> np.ndarray:
    """A (numel, element size) uint8 view of a CPU tensor's bytes, read in place: it sees
    later in-place writes. Valid only while ``data_ptrs([t])`` is unchanged (compare before
    reading). (0, element size) for a tensor not on the CPU, whose memory is not readable
    here. Sized from the tensor's own dtype, so any dtype is read within its bounds."""
    size = _element_size(t)
    n = math.prod(t.shape)
    if n == 0 or not t.place.is_cpu_place():
        return np.empty((0, size), np.uint8)
    raw = (ctypes.c_uint8 * (n * size)).from_address(data_ptrs([t])[0])
    return np.ctypeslib.as_array(raw).reshape(n, size)


def _element_size(t: paddle.Tensor) -> int:
    try:
        return t.element_size()
    except AttributeError as exc:
        raise _error("Tensor.element_size()", exc) from exc


def value_reader(tensors: Sequence[paddle.Tensor], index: Sequence[Sequence[int]]):
    """A function returning, as one uint8 array, the bytes of the values ``index[i]`` of
    each CPU tensor ``tensors[i]``, read in place by one numpy gather (`gather.reader`: the
    cheapest way to look at a few values of many tensors). Valid only while `data_ptrs` of
    the tensors is unchanged (compare before calling it). Tensors not on the CPU and
    out-of-range indices are skipped."""
    starts: list[np.ndarray] = []
    for t, idx in zip(tensors, index):
        n = math.prod(t.shape)
        if n == 0 or not t.place.is_cpu_place():
            continue
        size = _element_size(t)
        values = np.asarray([i for i in idx if 0 <= i < n], np.int64)
        starts.append((data_ptrs([t])[0] + values[:, None] * size + np.arange(size)).ravel())
    return reader(np.concatenate(starts) if starts else [], np.uint8)


# ----------------------------------------------------------------------------- tensor words
# Have these Paddle tensors moved or been written in place? Three gathers over Paddle's own
# C++ objects instead of two C calls per tensor.
#
# The model check before every fast capture (`traced.ModelState`) needs each weight's data
# address (a cast or a move gives new memory) and in-place version. Asking each tensor
# (``data_ptr()``, ``_inplace_version()``, mapped in C: `data_ptrs`) costs 0.6 + 0.3 us a
# tensor right after a forward pass has evicted the objects from the caches: 0.24 ms of
# MobileNetV3's 3.6 ms forward, 0.3 ms of SE-ResNet-50's. Reading the same words with numpy
# gathers, whose loads overlap, costs 0.05-0.1 ms (benchmarks/floor.py's check row).
#
# The words are where Paddle keeps them (Paddle 3.3, Linux x86-64): a tensor object holds a
# ``paddle::Tensor`` whose first member points to its ``DenseTensor``; that holds the meta
# (with the byte offset into the allocation), the ``Allocation`` (whose base address it
# holds) and the in-place version counter. Their offsets are not assumed: `tensor_layout`
# finds them once, on probe tensors made for it, reading through ``/proc/self/mem`` (a read
# there fails instead of crashing), and accepts them only when exactly one set of offsets
# explains every probe's address, byte offset and version, also after an in-place write and
# for a view.
# `TensorWords` then checks every tensor it is given the same safe way against Paddle's own
# answers and is used only if all agree. Where any of this fails (another Paddle, another
# platform, a tensor of another kind), callers ask Paddle per tensor instead.
#
# Safety: a check reads, level by level, only addresses it validated when it was made: the
# tensors' objects (held), then their ``DenseTensor`` only if every tensor still points to
# the same one, then the allocation and the counter only if those pointers are unchanged
# too. Anything moved is reported as a change before anything behind it is read.

_IMPL = 16          # paddle::Tensor right after the PyObject header; its impl_ comes first
_SPAN = 512         # bytes of a DenseTensor searched for its members
_ALLOC_SPAN = 32    # bytes of an Allocation searched for its base address


@dataclass(frozen=True)
class Layout:
    """Byte offsets: in a DenseTensor, of its byte offset into the allocation, of its
    allocation pointer and of its version counter pointer; in an Allocation, of its base
    address."""

    offset: int
    holder: int
    version: int
    base: int


class _Memory:
    """Reads of this process's memory that fail (None) instead of crashing."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.fd = os.open("/proc/self/mem", os.O_RDONLY)

    def read(self, address: int, n: int) -> bytes | None:
        if address <= 0:
            return None
        try:
            data = os.pread(self.fd, n, address)
        except (OSError, OverflowError, ValueError):
            return None
        return data if len(data) == n else None

    def u64(self, address: int) -> int | None:
        data = self.read(address, 8)
        return None if data is None else struct.unpack("<Q", data)[0]

    def u32(self, address: int) -> int | None:
        data = self.read(address, 4)
        return None if data is None else struct.unpack("<I", data)[0]

    def words(self, address: int, n: int) -> list[int] | None:
        data = self.read(address, 8 * n)
        return None if data is None else list(struct.unpack(f"<{n}Q", data))


_MEMORY: list[_Memory] = []


def _memory() -> _Memory | None:
    """This process's memory, opened once per process (a forked child's inherited file
    would read its parent's); None where /proc/self/mem cannot be opened."""
    if _MEMORY and _MEMORY[0].pid == os.getpid():
        return _MEMORY[0]
    try:
        mem = _Memory()
    except OSError:
        return None
    if _MEMORY:
        os.close(_MEMORY[0].fd)
    _MEMORY[:] = [mem]
    return mem


def _truth(t: paddle.Tensor) -> tuple[int, int, int]:
    return int(t.data_ptr()), int(t._offset()), int(t._inplace_version())


def _explains(mem: _Memory, lay: Layout, t: paddle.Tensor) -> bool:
    """Whether ``lay`` reads ``t``'s data address and version as Paddle gives them."""
    ptr, _, version = _truth(t)
    return _read(mem, lay, t) == (ptr, version)


def _read(mem: _Memory, lay: Layout, t: paddle.Tensor) -> tuple[int, int] | None:
    impl = mem.u64(id(t) + _IMPL)
    if not impl:
        return None
    offset, holder, counter = (mem.u64(impl + k) for k in (lay.offset, lay.holder, lay.version))
    if offset is None or not holder or not counter:
        return None
    base, version = mem.u64(holder + lay.base), mem.u32(counter)
    if base is None or version is None:
        return None
    return (base + offset) & 0xFFFFFFFFFFFFFFFF, version


def _candidates(mem: _Memory, t: paddle.Tensor) -> set[Layout]:
    """Every layout that explains ``t``'s address, byte offset and version (none if its
    object cannot be read)."""
    ptr, offset, version = _truth(t)
    impl = mem.u64(id(t) + _IMPL)
    words = mem.words(impl, _SPAN // 8) if impl else None
    if words is None:
        return set()
    offsets = [8 * i for i, w in enumerate(words) if w == offset]
    holders, versions = [], []
    for i, w in enumerate(words):
        if w < 4096 or w >= 1 << 56:
            continue
        alloc = mem.words(w, _ALLOC_SPAN // 8)
        if alloc is not None:
            holders += [(8 * i, 8 * j) for j, a in enumerate(alloc) if a + offset == ptr]
        if mem.u32(w) == version:
            versions.append(8 * i)
    return {Layout(o, h, v, b) for o in offsets for h, b in holders for v in versions}


@functools.lru_cache(maxsize=None)
def tensor_layout() -> Layout | None:
    """The offsets on this Paddle, found once on probe tensors (a parameter, a tensor, a
    view of it at a non-zero offset, each before and after an in-place write); None where
    they cannot be found or more than one set explains the probes."""
    mem = _memory()
    if mem is None or struct.calcsize("P") != 8 or not hasattr(paddle.Tensor, "_offset"):
        return None
    try:
        with paddle.no_grad():
            base = paddle.to_tensor(np.arange(4096, dtype=np.float32))
            view = base[100:200]
            param = paddle.create_parameter([64, 64], "float32")
            probes = [base, view, param]
            if int(view._offset()) == 0 or int(view.data_ptr()) != int(base.data_ptr()) + 400:
                return None  # no view to tell the byte offset from the rest
            found = None
            for _ in range(2):
                for t in probes:
                    c = _candidates(mem, t)
                    found = c if found is None else found & c
                    if not found:  # unreadable, or no set of offsets explains them all
                        return None
                before = [int(t._inplace_version()) for t in probes]
                base.scale_(2.0)  # moves the shared counter of the base and its view
                param.scale_(0.5)
                if [int(t._inplace_version()) for t in probes] == before:
                    return None  # no in-place write to tell the counter from the rest
            if found is None or len(found) != 1:
                return None
            (lay,) = found
            fresh = paddle.to_tensor(np.ones(3, np.float32))
            return lay if all(_explains(mem, lay, t) for t in probes + [fresh]) else None
    except Exception:  # noqa: BLE001 - any surprise means: ask Paddle per tensor
        return None


class TensorWords:
    """The words of ``tensors`` that say where their data is and how often it was written
    in place, as they are now; `same` says whether they still are. `usable` is False where
    any tensor's words do not read as Paddle's own answers (then do not call `same`)."""

    def __init__(self, tensors: Sequence[paddle.Tensor]) -> None:
        self.usable = False
        lay, mem = tensor_layout(), _memory()
        if lay is None or mem is None or not tensors:
            return
        try:
            if not all(isinstance(t, paddle.Tensor) and _explains(mem, lay, t)
                       for t in tensors):
                return
        except Exception:  # noqa: BLE001 - a tensor Paddle cannot answer for (no memory)
            return
        self._tensors = list(tensors)  # held: their objects are read on every check
        self._impls = reader([id(t) + _IMPL for t in self._tensors])
        impl = self._impls()
        self._fields = reader(np.concatenate(
            [impl + np.uint64(k) for k in (lay.offset, lay.holder, lay.version)]
        ).astype(np.int64))
        fields = self._fields()
        n = len(tensors)
        holder, counter = fields[n:2 * n], fields[2 * n:]
        base = holder + np.uint64(lay.base)
        self._ends = reader(np.concatenate([base, base + np.uint64(4), counter]
                                           ).astype(np.int64), np.uint32)
        self._now = (impl, fields, self._ends())
        self.usable = True

    def same(self) -> bool:
        """Every tensor still has the same DenseTensor, byte offset, allocation, base
        address and version (each level read only if the one before it is unchanged)."""
        impl, fields, ends = self._now
        return (np.array_equal(self._impls(), impl) and np.array_equal(self._fields(), fields)
                and np.array_equal(self._ends(), ends))

    def addresses(self) -> list[int]:
        """Each tensor's data address as these words read it (for tests)."""
        impl, fields, ends = self._now
        n = len(impl)
        base = ends[:n].astype(np.uint64) | (ends[n:2 * n].astype(np.uint64) << np.uint64(32))
        return (base + fields[:n]).tolist()

    def versions(self) -> list[int]:
        """Each tensor's in-place version as these words read it (for tests)."""
        return self._now[2][2 * len(self._now[0]):].tolist()


def tensor_words(tensors: Sequence[paddle.Tensor]) -> TensorWords | None:
    """A `TensorWords` over ``tensors`` (their data addresses and in-place versions read
    without a call per tensor), or None where Paddle's objects cannot be read that way here
    (then use `data_ptrs` and `inplace_versions`)."""
    words = TensorWords(tensors)
    return words if words.usable else None


# ----------------------------------------------------------------------------- the process
def set_num_threads(n: int) -> bool:
    """Let Paddle's CPU kernels use ``n`` threads; False (with a warning) if Paddle has no
    ``paddle.base.core.set_num_threads`` (then it keeps its own default)."""
    try:
        setter = paddle.base.core.set_num_threads
    except AttributeError as exc:
        warnings.warn(f"{_missing('paddle.base.core.set_num_threads', exc)}: Paddle's CPU "
                      "kernels keep their default thread count", PaddleVersionWarning,
                      stacklevel=2)
        return False
    setter(int(n))
    return True


def eager_mode_guard() -> Any:
    """The context manager Paddle entered at import to turn eager mode on, kept in a
    thread-local (whose garbage collection turns eager mode off for every thread); None if
    this thread has none, or (with a warning) if Paddle no longer keeps one there."""
    from paddle.base import framework

    access = "paddle.base.framework.global_var._functional_dygraph_context_manager"
    try:
        return framework.global_var._functional_dygraph_context_manager
    except AttributeError as exc:
        warnings.warn(f"{_missing(access, exc)}: eager mode is not pinned, so captures from "
                      "threads started after the importing thread ended may fail",
                      PaddleVersionWarning, stacklevel=2)
        return None


check_version()
