"""RegNetY (timm layout): widths from the design, block list, timm's key names and counts."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from se_viz.engine.attention import SEModule
from se_viz.engine.model import attention_layers, count_parameters
from se_viz.engine.networks import build
from se_viz.engine.networks.regnet import MODEL_CFGS, block_widths, stage_specs

# timm/models/regnet.py: stage widths after group rounding, stage depths; params from timm's
# results/benchmark-*.csv (6.26 M, 19.44 M) and timm.create_model(...) exactly
EXPECTED = {
    "regnety_008": dict(depths=[1, 3, 8, 2], widths=[64, 128, 320, 768], groups=16,
                        params=6_263_168, blocks=14),
    "regnety_032": dict(depths=[2, 5, 13, 1], widths=[72, 216, 576, 1512], groups=24,
                        params=19_436_338, blocks=21),
}
# SE hidden = round(block input x 0.25): block 1 of a stage sees the previous stage's width
HIDDEN = {
    "regnety_008": {"SE_1_1": 8, "SE_2_1": 16, "SE_2_2": 32, "SE_3_1": 32, "SE_3_2": 80,
                    "SE_4_1": 80, "SE_4_2": 192},
    "regnety_032": {"SE_1_1": 8, "SE_1_2": 18, "SE_2_1": 18, "SE_2_2": 54, "SE_3_1": 54,
                    "SE_3_2": 144, "SE_4_1": 144},
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def net(request):
    paddle.seed(0)
    return request.param, build(request.param, num_classes=1000)


def test_design_gives_timm_stages():
    assert block_widths(MODEL_CFGS["regnety_008"]) == [56] + [136] * 3 + [320] * 8 + [776] * 2
    for arch, want in EXPECTED.items():
        specs = stage_specs(MODEL_CFGS[arch])
        assert [s.depth for s in specs] == want["depths"]
        assert [s.width for s in specs] == want["widths"]
        assert {s.group_size for s in specs} == {want["groups"]}


def test_blocks_names_channels_hidden(net):
    arch, model = net
    want = EXPECTED[arch]
    blocks = model.info.blocks
    assert len(blocks) == want["blocks"] == sum(want["depths"])
    names = [(s + 1, i + 1) for s, d in enumerate(want["depths"]) for i in range(d)]
    assert [(b.stage, b.index) for b in blocks] == names
    assert [b.name for b in blocks] == [f"SE_{s}_{i}" for s, i in names]
    assert [b.channels for b in blocks] == [w for w, d in zip(want["widths"], want["depths"])
                                            for _ in range(d)]
    assert blocks[0].path == "s1.b1.se" and blocks[0].block_path == "s1.b1"
    assert blocks[-1].path == f"s4.b{want['depths'][-1]}.se"
    assert all(b.kind == "se" and b.act == "relu" and b.gate.kind == "sigmoid"
               and b.width_rule == "round(block input x 0.25)" for b in blocks)
    hidden = {b.name: b.hidden for b in blocks}
    assert {k: hidden[k] for k in HIDDEN[arch]} == HIDDEN[arch]
    info = model.info
    assert (info.arch, info.layout, info.se_impl, info.reduction) == (arch, "timm", "conv", 4.0)


def test_parameter_count_matches_timm(net):
    arch, model = net
    assert count_parameters(model) == EXPECTED[arch]["params"]


def test_attention_layers_found(net):
    arch, model = net
    found = attention_layers(model)
    assert [b.name for b, _ in found] == [b.name for b in model.info.blocks]
    for b, layer in found:
        assert isinstance(layer, SEModule) and layer.impl == "conv"
        assert (layer.channels, layer.hidden) == (b.channels, b.hidden)
        assert list(layer.reduce.weight.shape) == [b.hidden, b.channels, 1, 1]


def test_timm_key_names_and_shapes(net):
    arch, model = net
    want = EXPECTED[arch]
    sd = {k: list(v.shape) for k, v in model.state_dict().items()}
    g = want["groups"]
    w1 = want["widths"][0]
    assert sd["stem.conv.weight"] == [32, 3, 3, 3]
    assert sd["stem.bn._mean"] == [32]
    assert sd["s1.b1.conv1.conv.weight"] == [w1, 32, 1, 1]
    assert sd["s1.b1.conv2.conv.weight"] == [w1, g, 3, 3]  # groups = width / group_size
    assert sd["s1.b1.se.fc1.weight"] == [8, w1, 1, 1] and sd["s1.b1.se.fc1.bias"] == [8]
    assert sd["s1.b1.se.fc2.weight"] == [w1, 8, 1, 1]
    assert sd["s1.b1.conv3.bn._variance"] == [w1]
    assert sd["s2.b1.downsample.conv.weight"] == [want["widths"][1], w1, 1, 1]
    assert "s2.b1.downsample.bn.weight" in sd and "s2.b2.downsample.conv.weight" not in sd
    assert sd[model.head_key] == [want["widths"][-1], 1000] and model.head_key == "head.fc.weight"
    assert sd["head.fc.bias"] == [1000]
    assert not [k for k in sd if ".se.bn" in k or "final_conv" in k]
    downsample = {k.split(".downsample")[0] for k in sd if ".downsample." in k}
    assert downsample == {f"s{s}.b1" for s in range(1, 5)}


def test_forward_shape_eval_and_classes(net):
    arch, model = net
    assert not model.training
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 64)),
                         dtype="float32")
    assert list(model(x).shape) == [1, 1000]
    small = build(arch, num_classes=10)
    assert list(small(x).shape) == [1, 10] and small.info.num_classes == 10


def test_bad_num_classes_refused():
    with pytest.raises(ValueError, match="num_classes"):
        build("regnety_008", num_classes=0)


def test_traced_forward_equals_eager():
    paddle.seed(0)
    model = build("regnety_008", num_classes=1000)  # to_static converts the layer: a fresh one
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 64, 64)),
                         dtype="float32")
    eager = model(x).numpy()
    traced = paddle.jit.to_static(
        model, input_spec=[paddle.static.InputSpec([None, 3, 64, 64], "float32")],
        full_graph=True)
    np.testing.assert_allclose(traced(x).numpy(), eager, rtol=1e-5, atol=1e-5)
