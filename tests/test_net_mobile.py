"""EfficientNet-B0, MobileNetV3-Large and LCNet (se_viz.engine.networks.mobile), both layouts.

Parameter counts and key names are those of timm.create_model(name) and of PaddleClas's own
classes (mobilenet_v3.py, pp_lcnet.py), checked against both by hand: the same keys and shapes
(after renaming BN statistics and transposing the classifier for timm) and the same logits.
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from se_viz.engine.attention import SEModule
from se_viz.engine.model import attention_layers, count_parameters
from se_viz.engine.networks import build

# arch: (layout, attention blocks, trainable parameters, published count in millions)
EXPECTED = {
    "efficientnet_b0": ("timm", 16, 5_288_548, 5.29),
    "mobilenetv3_large_100": ("timm", 8, 5_483_032, 5.48),
    "lcnet_100": ("timm", 2, 2_953_800, 2.95),
    # PaddleClas's model list says 5.50M and 2.96M; its own classes count these numbers
    "mobilenetv3_large_x1_0": ("paddleclas", 8, 5_480_206, 5.48),
    "pplcnet_x1_0": ("paddleclas", 2, 2_952_520, 2.95),
}

# arch: {block name: (SE path, block path, channels, hidden)}
KNOWN_BLOCKS = {
    "efficientnet_b0": {"SE_1_1": ("blocks.0.0.se", "blocks.0.0", 32, 8),
                        "SE_2_1": ("blocks.1.0.se", "blocks.1.0", 96, 4),
                        "SE_6_4": ("blocks.5.3.se", "blocks.5.3", 1152, 48),
                        "SE_7_1": ("blocks.6.0.se", "blocks.6.0", 1152, 48)},
    "mobilenetv3_large_100": {"SE_3_1": ("blocks.2.0.se", "blocks.2.0", 72, 24),
                              "SE_5_1": ("blocks.4.0.se", "blocks.4.0", 480, 120),
                              "SE_6_3": ("blocks.5.2.se", "blocks.5.2", 960, 240)},
    "mobilenetv3_large_x1_0": {"SE_3_1": ("blocks.3.mid_se", "blocks.3", 72, 18),
                               "SE_5_1": ("blocks.10.mid_se", "blocks.10", 480, 120),
                               "SE_6_3": ("blocks.14.mid_se", "blocks.14", 960, 240)},
    "lcnet_100": {"SE_6_1": ("blocks.5.0.se", "blocks.5.0", 256, 64),
                  "SE_6_2": ("blocks.5.1.se", "blocks.5.1", 512, 128)},
    "pplcnet_x1_0": {"SE_6_1": ("blocks6.0.se", "blocks6.0", 256, 64),
                     "SE_6_2": ("blocks6.1.se", "blocks6.1", 512, 128)},
}

# arch: (gate kind, slope, SE inner activation, keys its weight files have)
GATES = {
    "efficientnet_b0": ("sigmoid", None, "silu",
                        ("conv_stem.weight", "bn1._variance", "blocks.6.0.se.conv_reduce.bias",
                         "conv_head.weight", "bn2._mean")),
    "mobilenetv3_large_100": ("hardsigmoid", 1 / 6, "relu",
                              ("blocks.0.0.conv_dw.weight", "blocks.6.0.conv.weight",
                               "blocks.6.0.bn1._mean", "conv_head.bias")),
    "lcnet_100": ("hardsigmoid", 1 / 6, "relu",
                  ("blocks.5.1.se.conv_expand.weight", "blocks.5.1.bn2.weight",
                   "conv_head.bias")),
    "mobilenetv3_large_x1_0": ("hardsigmoid", 0.2, "relu",
                               ("conv.conv.weight", "blocks.0.expand_conv.bn._mean",
                                "blocks.14.mid_se.conv2.bias", "last_second_conv.bn._variance",
                                "last_conv.weight")),
    "pplcnet_x1_0": ("hardsigmoid", 0.1666667, "relu",
                     ("conv1.bn.weight", "blocks5.5.dw_conv.conv.weight",
                      "blocks6.1.se.conv1.weight", "last_conv.weight")),
}

ARCHS = tuple(EXPECTED)


@pytest.fixture(scope="module")
def models() -> dict:
    return {}


def _model(models: dict, arch: str):
    if arch not in models:
        models[arch] = build(arch, num_classes=1000)
    return models[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_widths_and_counts(models, arch):
    model = _model(models, arch)
    layout, n_blocks, n_params, published = EXPECTED[arch]
    info = model.info
    assert info.arch == arch and info.layout == layout and info.se_impl == "conv"
    assert info.num_classes == 1000 and info.reduction == 4.0
    assert len(info.blocks) == n_blocks
    assert len({b.name for b in info.blocks}) == n_blocks
    by_name = {b.name: b for b in info.blocks}
    for name, (path, block_path, channels, hidden) in KNOWN_BLOCKS[arch].items():
        b = by_name[name]
        assert (b.path, b.block_path, b.channels, b.hidden) == (path, block_path, channels, hidden)
        assert b.name == f"SE_{b.stage}_{b.index}" and b.kind == "se" and b.width_rule
    assert count_parameters(model) == n_params
    assert round(n_params / 1e6, 2) == pytest.approx(published, abs=0.01)


@pytest.mark.parametrize("arch", ARCHS)
def test_gates_layers_and_keys(models, arch):
    model = _model(models, arch)
    kind, slope, act, keys = GATES[arch]
    found = attention_layers(model)
    assert [b for b, _ in found] == list(model.info.blocks)
    for b, layer in found:
        assert isinstance(layer, SEModule)
        assert (layer.channels, layer.hidden) == (b.channels, b.hidden)
        assert b.gate == layer.gate_spec and b.gate.kind == kind and b.act == act == layer.act_name
        if slope is not None:
            assert b.gate.slope == slope and b.gate.offset == 0.5
    state = model.state_dict()
    assert all(k in state for k in keys)
    assert not any(k.endswith(("running_mean", "running_var")) for k in state)
    head = state[model.head_key]
    assert tuple(head.shape) == (model.num_features, 1000)  # Paddle Linear layout [in, out]


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape(models, arch):
    model = _model(models, arch)
    paddle.seed(0)
    with paddle.no_grad():
        y = model(paddle.randn([1, 3, 64, 64]))
    assert tuple(y.shape) == (1, 1000)
    assert np.isfinite(y.numpy()).all()


def test_num_classes_changes_head_only():
    model = build("pplcnet_x1_0", num_classes=7)
    assert tuple(model.state_dict()[model.head_key].shape) == (1280, 7)
    assert model.info.num_classes == 7
    with paddle.no_grad():
        assert tuple(model(paddle.randn([2, 3, 32, 32])).shape) == (2, 7)


@pytest.mark.parametrize("arch", ["mobilenetv3_large_x1_0", "lcnet_100"])
def test_gates_equal_manual_recomputation(models, arch):
    """The gate layer's output equals gate(W2 relu(W1 GAP(x) + b1) + b2) with the block's
    declared Gate (so the slope in the block list is the slope the network uses)."""
    model = _model(models, arch)
    block, layer = attention_layers(model)[-1]
    seen = {}

    def keep_input(_layer, inputs):
        seen["x"] = inputs[0].numpy()  # returns None: the input is left unchanged

    def keep_gates(_layer, _inputs, output):
        seen["s"] = output.numpy()

    handles = [layer.register_forward_pre_hook(keep_input),
               layer.gate.register_forward_post_hook(keep_gates)]
    try:
        paddle.seed(1)
        with paddle.no_grad():
            model(paddle.randn([2, 3, 64, 64]))
    finally:
        for h in handles:
            h.remove()
    x = seen["x"].astype(np.float64)
    w1 = layer.reduce.weight.numpy()[:, :, 0, 0].astype(np.float64)
    w2 = layer.expand.weight.numpy()[:, :, 0, 0].astype(np.float64)
    z = np.maximum(x.mean(axis=(2, 3)) @ w1.T + layer.reduce.bias.numpy(), 0.0)
    s = block.gate(z @ w2.T + layer.expand.bias.numpy())
    np.testing.assert_allclose(seen["s"][:, :, 0, 0], s, rtol=1e-4, atol=1e-5)


def test_paddleclas_head_scales_by_dropout_at_inference(models):
    """PaddleClas's heads end in Dropout(0.2, "downscale_in_infer"): x 0.8 in eval mode."""
    model = _model(models, "pplcnet_x1_0")
    assert model.dropout.p == 0.2 and model.dropout.mode == "downscale_in_infer"
    x = paddle.ones([1, 4])
    assert np.allclose(model.dropout(x).numpy(), 0.8)


def test_traced_forward_equals_eager():
    """The forward traces whole (constant reshapes, no Python logic on tensor values)."""
    model = build("lcnet_100")  # its own copy: to_static replaces the layer's forward
    x = paddle.randn([2, 3, 32, 32])
    with paddle.no_grad():
        eager = model(x).numpy()
    static = paddle.jit.to_static(
        model, input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32")],
        full_graph=True)
    np.testing.assert_allclose(static(x).numpy(), eager, rtol=1e-5, atol=1e-5)
