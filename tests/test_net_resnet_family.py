"""SE-ResNeXt-50, legacy SE-ResNet-50, ECA-ResNet-50-D (timm) and SE_ResNeXt50_vd_32x4d
(PaddleClas): block lists, widths, parameter counts, key names, forward and tracing.

Parameter counts are the reference frameworks' own: timm's (``sum(p.numel() for p in
model.parameters())``, BN running statistics excluded; published 27.56M / 28.09M / 25.58M)
and PaddleClas's model list (27.76M for SE_ResNeXt50_vd_32x4d, a count that includes BN
running statistics, as its 28.16M for SE_ResNet50_vd does).
"""

from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from se_viz.engine.attention import EcaModule, SEModule
from se_viz.engine.model import attention_layers, count_parameters
from se_viz.engine.networks import build

STAGE_CHANNELS = (256, 512, 1024, 2048)
STAGE_DEPTHS = (3, 4, 6, 3)
SE_HIDDEN = (16, 32, 64, 128)

# arch -> what its reference framework says about it
EXPECTED = {
    "seresnext50_32x4d": dict(
        layout="timm", head_key="fc.weight", attn="layer{L}.{i}.se", kind="se",
        hidden=SE_HIDDEN, params=27_559_896, published_m=27.56, with_bn_stats=False,
        keys=("conv1.weight", "bn1._variance", "layer1.0.conv2.weight",
              "layer1.0.downsample.0.weight", "layer1.0.downsample.1._mean",
              "layer1.0.se.fc1.weight", "layer4.2.se.fc2.bias", "fc.bias")),
    "legacy_seresnet50": dict(
        layout="timm", head_key="last_linear.weight", attn="layer{L}.{i}.se_module", kind="se",
        hidden=SE_HIDDEN, params=28_088_024, published_m=28.09, with_bn_stats=False,
        keys=("layer0.conv1.weight", "layer0.bn1._mean", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.weight", "layer1.0.se_module.fc1.bias",
              "layer4.2.se_module.fc2.weight", "last_linear.bias")),
    "ecaresnet50d": dict(
        layout="timm", head_key="fc.weight", attn="layer{L}.{i}.se", kind="eca",
        hidden=(None,) * 4, params=25_576_350, published_m=25.58, with_bn_stats=False,
        keys=("conv1.0.weight", "conv1.1._variance", "conv1.3.weight", "conv1.4.bias",
              "conv1.6.weight", "bn1.weight", "layer1.0.downsample.1.weight",
              "layer2.0.downsample.2._mean", "layer3.5.se.conv.weight", "fc.bias")),
    "se_resnext50_vd_32x4d": dict(
        layout="paddleclas", head_key="out.weight", attn="bb_{s}_{j}.scale", kind="se",
        hidden=SE_HIDDEN, params=27_687_768, published_m=27.76, with_bn_stats=True,
        keys=("conv1_1._conv.weight", "conv1_3._batch_norm._variance",
              "bb_0_0.short._conv.weight", "bb_1_0.short._batch_norm._mean",
              "bb_0_0.scale.squeeze.weight", "bb_3_2.scale.excitation.bias", "out.bias")),
}
ARCHS = tuple(EXPECTED)


@pytest.fixture(scope="module")
def models():
    return {arch: build(arch, num_classes=1000) for arch in ARCHS}


def attention_path(arch: str, s: int, i: int) -> str:
    """Module path of the attention layer of stage s (0..3), block i (0-based)."""
    return EXPECTED[arch]["attn"].format(L=s + 1, i=i, s=s, j=i)


@pytest.mark.parametrize("arch", ARCHS)
def test_block_list(models, arch):
    model, exp = models[arch], EXPECTED[arch]
    blocks = model.info.blocks
    assert len(blocks) == 16
    assert model.info.arch == arch and model.info.layout == exp["layout"]
    assert model.info.num_classes == 1000 and model.info.width == 64
    assert model.info.reduction == (0.0 if exp["kind"] == "eca" else 16.0)
    expected = [(s, i) for s, d in enumerate(STAGE_DEPTHS) for i in range(d)]
    subs = dict(model.named_sublayers())
    for b, (s, i) in zip(blocks, expected):
        assert (b.name, b.stage, b.index) == (f"SE_{s + 2}_{i + 1}", s + 2, i + 1)
        assert b.path == attention_path(arch, s, i)
        assert b.path.startswith(b.block_path + ".") and b.block_path in subs
        assert b.channels == STAGE_CHANNELS[s]
        assert b.hidden == exp["hidden"][s]
        assert b.kind == exp["kind"] and b.gate.kind == "sigmoid"
        assert b.width_rule


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_layers_found(models, arch):
    found = attention_layers(models[arch])
    assert len(found) == 16
    cls = EcaModule if EXPECTED[arch]["kind"] == "eca" else SEModule
    for b, layer in found:
        assert isinstance(layer, cls)
        assert layer.channels == b.channels and layer.hidden == b.hidden


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_is_the_reference_count(models, arch):
    model, exp = models[arch], EXPECTED[arch]
    n = count_parameters(model)  # trainable only: BN running statistics excluded
    assert n == exp["params"]
    everything = sum(int(np.prod(p.shape)) for p in model.parameters())
    published = everything if exp["with_bn_stats"] else n
    assert round(published / 1e6, 2) == exp["published_m"]


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_gives_logits(models, arch):
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 64)),
                         dtype="float32")
    with paddle.no_grad():
        y = models[arch](x)
    assert tuple(y.shape) == (1, 1000)
    assert np.isfinite(y.numpy()).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_key_names_and_head(models, arch):
    exp = EXPECTED[arch]
    sd = models[arch].state_dict()
    missing = [k for k in exp["keys"] if k not in sd]
    assert not missing
    assert models[arch].head_key == exp["head_key"]
    assert list(sd[exp["head_key"]].shape) == [2048, 1000]  # Paddle Linear: [in, out]
    assert not any("running" in k or "num_batches" in k for k in sd)


@pytest.mark.parametrize("arch", ["seresnext50_32x4d", "se_resnext50_vd_32x4d"])
def test_resnext_convs_are_grouped(models, arch):
    """32 groups of 4 channels in the first stage's 3x3 conv (weights [128, 4, 3, 3])."""
    key = "layer1.0.conv2.weight" if arch.startswith("seresnext") else "bb_0_0.conv1._conv.weight"
    assert list(models[arch].state_dict()[key].shape) == [128, 4, 3, 3]


def test_legacy_stride_on_first_1x1(models):
    """The Caffe layout strides the first 1x1 conv, not the 3x3 one."""
    block = dict(models["legacy_seresnet50"].named_sublayers())["layer2.0"]
    assert list(block.conv1._stride) == [2, 2] and list(block.conv2._stride) == [1, 1]


def test_eca_kernels_follow_the_channels(models):
    """k = odd nearest |log2 C + 1| / 2: 5, 5, 5, 7 for 256 .. 2048 channels."""
    for b, layer in attention_layers(models["ecaresnet50d"]):
        t = int(abs(math.log2(b.channels) + 1) / 2)
        k = max(t if t % 2 else t + 1, 3)
        assert layer.kernel == k == {256: 5, 512: 5, 1024: 5, 2048: 7}[b.channels]
        assert list(layer.conv.weight.shape) == [1, 1, k]
        assert b.width_rule == f"ECA kernel k={k}"


@pytest.mark.parametrize("arch", ARCHS)
def test_num_classes(arch):
    model = build(arch, num_classes=7)
    assert model.info.num_classes == 7 and not model.training
    assert list(model.state_dict()[model.head_key].shape) == [2048, 7]


@pytest.mark.parametrize("arch", ARCHS)
def test_traced_forward_equals_eager(arch):
    model = build(arch)  # its own copy: to_static replaces the layer's forward in place
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 67, 67)),
                         dtype="float32")  # odd size: ceil-mode pools see partial windows
    with paddle.no_grad():
        eager = model(x).numpy()
        spec = [paddle.static.InputSpec([None, 3, None, None], "float32")]
        traced = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
        out = traced(x).numpy()
    np.testing.assert_allclose(out, eager, rtol=1e-5, atol=1e-6)
