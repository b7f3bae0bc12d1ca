"""traced.ModelState: the check before every fast capture that the model is still the one
its graph was made from. Every kind of change is seen, with CPython's dict tags and
without them (the portable comparison); what does not change the graph is not a change."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import paddle
import pytest
from paddle import nn

from se_viz.engine import compat, dict_tags, traced
from se_viz.engine.model import se_blocks

from .conftest import make_tiny


@pytest.fixture(params=[("tags", "words"), ("tags", "calls"), ("compare", "words"),
                        ("compare", "calls")], ids="+".join)
def state_of(request, monkeypatch):
    """ModelState with the dict tags (where this interpreter has them) or without, and
    reading the tensors' addresses and versions from Paddle's objects (`tensor_words`) or
    asking each tensor."""
    dicts, tensors = request.param
    if dicts == "tags":
        if not dict_tags.available():
            pytest.skip("this interpreter's dicts have no usable version tag")
    else:
        monkeypatch.setattr(dict_tags, "available", lambda: False)
    if tensors == "calls":
        monkeypatch.setattr(compat, "tensor_words", lambda ts: None)

    def make(model):
        state = traced.ModelState(model)
        assert (state.tags is not None) == (dicts == "tags")
        assert (state.words is not None) == (tensors == "words")
        assert not state.changed()
        return state
    return make


def _model():
    model = make_tiny("se_resnet50", seed=3)
    model(paddle.zeros([1, 3, 32, 32]))  # every layer called once (Paddle sets _built)
    return model


def test_the_dict_tags_work_on_this_interpreter():
    """CPython 3.11 (the project's) has them: without them every check compares dicts."""
    assert dict_tags.available()
    d, od = {"a": 1}, OrderedDict(b=2)
    read = dict_tags.TagReader([d, od]).read
    before = read()
    np.testing.assert_array_equal(read(), before)
    d["a"] = 2
    after = read()
    assert after[0] != before[0] and after[1] == before[1]
    od["c"] = 3
    assert read()[1] != after[1]


def _at(model, path):
    return dict(model.named_sublayers())[path]


CHANGES = {
    "a sublayer replaced": lambda m: setattr(_at(m, "bb_1_0"), "conv1", nn.Conv2D(4, 4, 1)),
    "a gate swapped": lambda m: setattr(se_blocks(m)[0][2], "gate", nn.Hardsigmoid()),
    "a forward replaced": lambda m: setattr(_at(m, "bb_0_0.scale"), "forward", lambda x: x),
    "a post-hook added deep in the tree":
        lambda m: _at(m, "bb_2_0.conv1._batch_norm").register_forward_post_hook(
            lambda layer, i, o: o),
    "a pre-hook on the model": lambda m: m.register_forward_pre_hook(lambda layer, i: i),
    "a parameter replaced": lambda m: setattr(m.out, "bias", m.out.create_parameter(
        m.out.bias.shape, is_bias=True)),
    "a sublayer dict replaced by an equal copy with one layer swapped":
        lambda m: setattr(_at(m, "bb_0_0"), "_sub_layers", OrderedDict(
            (k, nn.Identity() if k == "scale" else v)
            for k, v in _at(m, "bb_0_0")._sub_layers.items())),
    "a layer's class changed": lambda m: setattr(
        _at(m, "bb_3_0.scale"), "__class__",
        type("Other", (type(_at(m, "bb_3_0.scale")),), {})),
    "weights loaded by set_value": lambda m: m.out.weight.set_value(m.out.weight.numpy() * 2),
    "weights loaded by set_state_dict": lambda m: m.set_state_dict(
        {k: v.numpy() + 1 for k, v in m.state_dict().items() if k.startswith("out.")}),
    "one middle value written in place": lambda m: _write_middle(m),
    "a cast to float64": lambda m: m.to(dtype="float64"),
    "an optimiser step": lambda m: _sgd_step(m),
    "weights copied in by Tensor.copy_":
        lambda m: m.out.weight.copy_(paddle.full(m.out.weight.shape, 0.5), False),
    "weights written by paddle.assign":
        lambda m: paddle.assign(paddle.full(m.out.bias.shape, 0.5), output=m.out.bias),
}


def _sgd_step(model):
    """One SGD step of the classifier: moves neither an address nor a version."""
    opt = paddle.optimizer.SGD(0.1, parameters=model.out.parameters())
    model(paddle.ones([1, 3, 32, 32])).sum().backward()
    opt.step()


def _write_middle(model):
    w = _at(model, "bb_1_0.conv1._conv").weight
    with paddle.no_grad():
        w[w.shape[0] // 2] = 3.0


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_kind_of_change_is_seen(state_of, change):
    model = _model()
    state = state_of(model)
    CHANGES[change](model)
    assert state.changed()
    assert state.changed()  # and it stays changed


def test_a_removed_hook_restores_the_state(state_of):
    """The eager engine's recorder adds hooks and removes them: not a change afterwards."""
    model = _model()
    state = state_of(model)
    handle = _at(model, "bb_1_0").register_forward_post_hook(lambda layer, i, o: o)
    assert state.changed()
    handle.remove()
    assert not state.changed()


def test_flags_that_do_not_change_the_graph_are_not_changes(state_of):
    """train()/eval() and Paddle's first-call flag are written, and re-armed on."""
    from se_viz.engine.build import build_model

    model = build_model("lcnet_100", seed=4)
    state = state_of(model)
    model(paddle.zeros([1, 3, 32, 32]))  # _built set on every layer
    model.train()
    model.eval()
    assert not state.changed()
    if state.tags is not None:  # re-armed: the next check reads only the tags
        np.testing.assert_array_equal(state.tags.read(), state.tag_values)
    with paddle.no_grad():
        model.classifier.bias[0] = 1.0
    assert state.changed()


def test_a_dropped_model_is_freed_and_its_state_says_changed(state_of):
    import gc
    import weakref

    model = _model()
    state = state_of(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert state.changed()
