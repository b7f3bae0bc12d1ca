"""se_viz.engine.compat: every private Paddle access works on the installed Paddle and
returns what its caller expects; a missing one fails loudly, naming it."""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddle import nn

from se_viz.engine import compat, runtime


class Small(nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("count", paddle.zeros([1], "int64"))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc(x)


def test_the_installed_paddle_is_one_it_was_checked_on():
    assert compat.checked_on()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compat.check_version()


def test_another_paddle_version_warns_naming_it_and_the_accesses():
    assert not compat.checked_on("4.0.0") and compat.checked_on("3.3.9")
    with pytest.warns(compat.PaddleVersionWarning, match=r"checked on Paddle 3\.3\.x, not 4\.0"
                                                         r".*_forward_pre_hooks.*set_num_threads"):
        assert not compat.check_version("4.0.0")


def test_layer_parts_are_the_layers_own_hooks_tensors_and_sublayers():
    layer = Small()
    pre, post, params, buffers, subs = compat.layer_parts(layer)
    assert list(subs) == ["fc"] and subs["fc"] is layer.fc
    assert params == {} and list(buffers) == ["count"] and buffers["count"] is layer.count
    _, _, fc_params, fc_buffers, fc_subs = compat.layer_parts(layer.fc)
    assert fc_params["weight"] is layer.fc.weight and fc_params["bias"] is layer.fc.bias
    assert not fc_buffers and not fc_subs
    assert not pre and not post
    h1 = layer.register_forward_pre_hook(lambda lyr, inputs: None)
    h2 = layer.register_forward_post_hook(lambda lyr, inputs, out: None)
    pre, post, *_ = compat.layer_parts(layer)
    assert len(pre) == len(post) == 1 and tuple(pre) != tuple(post)  # distinct hook ids
    h1.remove()
    h2.remove()
    pre, post, *_ = compat.layer_parts(layer)
    assert not pre and not post


def test_inplace_versions_move_on_an_in_place_write():
    w = nn.Linear(3, 2).weight
    (v0,) = compat.inplace_versions([w])
    assert isinstance(v0, int)
    with paddle.no_grad():
        w[0] = 7.0
    assert compat.inplace_versions([w])[0] > v0


def test_data_ptrs_are_stable_and_change_with_new_memory():
    layer = nn.Linear(3, 2)
    ptrs = compat.data_ptrs([layer.weight, layer.bias])
    assert all(isinstance(p, int) and p for p in ptrs) and ptrs[0] != ptrs[1]
    assert compat.data_ptrs([layer.weight, layer.bias]) == ptrs
    layer.to(dtype="float64")
    assert compat.data_ptrs([layer.weight])[0] != ptrs[0]


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "int64", "uint8"])
def test_memory_is_the_tensors_bytes_read_in_place(dtype):
    t = paddle.to_tensor(np.arange(7) % 5, dtype=dtype)
    view = compat.memory(t)
    assert view.dtype == np.uint8 and view.shape == (7, t.element_size())
    assert view.tobytes() == t.numpy().tobytes()  # bfloat16: its raw uint16 bits
    with paddle.no_grad():
        t[6] = 3
    assert view[6].tobytes() == t.numpy()[6:].tobytes()  # sees the write: no copy
    assert compat.memory(paddle.zeros([0, 3], dtype)).shape == (0, t.element_size())


def test_set_num_threads_sets_paddles_cpu_threads():
    assert compat.set_num_threads(1) is True
    assert compat.set_num_threads(runtime.cpu_threads()) is True


def test_the_eager_mode_guard_is_the_importing_threads_context_manager():
    guard = compat.eager_mode_guard()  # pytest imports paddle in this thread
    assert hasattr(guard, "__enter__") and hasattr(guard, "__exit__")
    other: list = []
    worker = threading.Thread(target=lambda: other.append(compat.eager_mode_guard()))
    worker.start()
    worker.join()
    assert other == [None]  # a thread-local: other threads have none


# ----------------------------------------------------------------------------- missing accesses
def test_a_missing_layer_dict_raises_naming_it():
    class Bare:
        _forward_pre_hooks = {}

    with pytest.raises(compat.PaddleCompatError,
                       match=r"no nn\.Layer\._forward_post_hooks.*engine='eager'"):
        compat.layer_parts(Bare())


def test_missing_tensor_methods_raise_naming_them():
    with pytest.raises(compat.PaddleCompatError, match=r"Tensor\._inplace_version\(\)"):
        compat.inplace_versions([object()])
    with pytest.raises(compat.PaddleCompatError, match=r"Tensor\.data_ptr\(\)"):
        compat.data_ptrs([object()])


def test_a_missing_thread_setter_warns_and_goes_on(monkeypatch):
    monkeypatch.delattr(paddle.base.core, "set_num_threads")
    with pytest.warns(compat.PaddleVersionWarning, match=r"paddle\.base\.core\.set_num_threads"):
        assert compat.set_num_threads(2) is False
    with pytest.warns(compat.PaddleVersionWarning):
        assert runtime.set_cpu_threads(2) == 2


def test_a_missing_eager_guard_warns_and_goes_on(monkeypatch):
    from paddle.base import framework

    monkeypatch.delattr(framework.global_var, "_functional_dygraph_context_manager")
    with pytest.warns(compat.PaddleVersionWarning, match="_functional_dygraph_context_manager"):
        assert compat.eager_mode_guard() is None
    keep: list = []
    with pytest.warns(compat.PaddleVersionWarning):
        runtime.keep_eager_mode(keep)
    assert keep == [] and paddle.in_dynamic_mode()


# ----------------------------------------------------------------------------- one place
PRIVATE = re.compile(r"\.(_forward_pre_hooks|_forward_post_hooks|_parameters|_buffers|"
                     r"_sub_layers|_inplace_version|data_ptr)\b|\bimport ctypes\b|"
                     r"\bpaddle\.base\b|\bglobal_var\b")
# a Layer subclass reading its own sublayer dict (SEModule.reduce/expand): Paddle's
# subclass API, kept where the block is defined
OWN_LAYER = {"se_viz/engine/attention.py": {"._sub_layers"}}


def test_only_compat_touches_paddles_private_attributes():
    root = Path(__file__).resolve().parents[1]
    found = {}
    for path in sorted((root / "se_viz").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel != "se_viz/engine/compat.py":
            used = {m[0] for m in PRIVATE.finditer(path.read_text("utf-8"))}
            if used - OWN_LAYER.get(rel, set()):
                found[rel] = sorted(used)
    assert not found, f"private Paddle accesses outside se_viz/engine/compat.py: {found}"
