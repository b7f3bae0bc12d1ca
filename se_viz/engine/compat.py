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
    value_reader(ts, ix)   a few values of many tensors, read in place by one gather (traced.ModelState)
    set_num_threads(n)     paddle.base.core.set_num_threads   (runtime.set_cpu_threads)
    eager_mode_guard()     paddle.base.framework.global_var._functional_dygraph_context_manager
                                                          (runtime.keep_eager_mode)
"""

from __future__ import annotations

import ctypes
import math
import operator
import warnings
from collections.abc import Sequence
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
