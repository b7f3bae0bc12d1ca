"""compat.tensor_words: Paddle's own words for where each tensor's data is and how often
it was written in place, read by gathers (the model check before every fast capture). They must
read exactly as Paddle's own answers, see what those see, and never read behind a word
that moved."""

from __future__ import annotations

import paddle
import pytest
from paddle import nn

from se_viz.engine import compat

from .conftest import make_tiny


def _tensors(model):
    return [*model.parameters(), *model.buffers()]


def test_the_layout_is_found_on_this_paddle():
    """On the project's Paddle (Linux, 3.3) the offsets are found; where this fails after
    an upgrade, captures stay correct but the check is 2-3x slower (compat asks per tensor)."""
    lay = compat.tensor_layout()
    assert lay is not None
    assert len({lay.offset, lay.holder, lay.version}) == 3


@pytest.mark.parametrize("arch", ["se_resnet50", "seresnext50_32x4d", "ecaresnet50d",
                                  "efficientnet_b0", "mobilenetv3_large_100", "regnety_008",
                                  "lcnet_100"])
def test_the_words_read_as_paddles_own_answers(arch):
    """Every family's real shapes (grouped, depthwise, ECA's conv, BN buffers)."""
    from se_viz.engine.build import build_model

    model = (make_tiny(arch, seed=1) if arch == "se_resnet50"
             else build_model(arch, num_classes=10, seed=1))
    ts = _tensors(model)
    words = compat.tensor_words(ts)
    assert words is not None and words.same()
    assert words.addresses() == compat.data_ptrs(ts)
    assert words.versions() == compat.inplace_versions(ts)


def test_an_in_place_write_is_seen_by_the_version():
    layer = nn.Linear(4, 3)
    words = compat.tensor_words([layer.weight, layer.bias])
    with paddle.no_grad():
        layer.bias.scale_(2.0)
    assert not words.same()
    assert compat.tensor_words([layer.weight, layer.bias]).versions()[1] == \
        compat.inplace_versions([layer.bias])[0]


def test_new_memory_is_seen_and_nothing_behind_it_is_read():
    """A cast gives the weights new allocations: seen at the DenseTensor's words, and the
    old allocations' words (maybe freed) are never read."""
    layer = nn.Linear(4, 3)
    words = compat.tensor_words([layer.weight, layer.bias])

    def must_not_read():
        raise AssertionError("read behind a word that moved")

    layer.to(dtype="float64")
    words._ends = must_not_read
    assert not words.same()


def test_a_view_reads_its_own_byte_offset():
    base = paddle.to_tensor([float(i) for i in range(64)])
    view = base[8:16]
    words = compat.tensor_words([base, view])
    assert words.addresses() == compat.data_ptrs([base, view])
    assert words.addresses()[1] - words.addresses()[0] == 8 * 4


def test_what_cannot_be_read_falls_back_to_asking_each_tensor(monkeypatch):
    assert compat.tensor_words([]) is None
    assert compat.tensor_words([object()]) is None
    empty = paddle.Tensor()  # no elements: read as Paddle answers all the same
    assert compat.tensor_words([empty]).addresses() == compat.data_ptrs([empty])
    monkeypatch.setattr(compat, "tensor_layout", lambda: None)
    assert compat.tensor_words([nn.Linear(2, 2).weight]) is None


def test_no_readable_memory_means_no_layout(monkeypatch):
    monkeypatch.setattr(compat, "_memory", lambda: None)
    compat.tensor_layout.cache_clear()
    try:
        assert compat.tensor_layout() is None
    finally:
        monkeypatch.undo()
        compat.tensor_layout.cache_clear()
    assert compat.tensor_layout() is not None


def test_a_forked_child_reads_its_own_memory():
    """The file on /proc/self/mem is opened again in a child: an inherited one would read
    the parent's memory (here: zeros the child overwrote)."""
    import os

    import numpy as np

    shared = np.zeros(4, np.int64)  # at the same address in both processes
    parent = compat._memory()
    pid = os.fork()
    if pid == 0:  # the child: its exit status says whether it read its own memory
        ok = False
        try:
            shared[:] = 7
            mem = compat._memory()
            ok = (mem is not parent and mem.pid == os.getpid()
                  and mem.read(shared.ctypes.data, shared.nbytes) == shared.tobytes())
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert compat._memory() is parent and not shared.any()
