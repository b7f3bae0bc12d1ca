"""SE-ResNet-50 layouts: names, shapes, parameter counts against the paper's formula."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from se_viz.arch import hidden_width
from se_viz.engine.model import count_parameters, se_blocks
from se_viz.engine.networks.resnet import SEResNet, se_block, se_resnet50, se_resnet50_vd

from .conftest import batch, make_tiny

STAGE_CHANNELS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3


def _se_params(channels, r):
    return sum(2 * c * hidden_width(c, r) + hidden_width(c, r) + c for c in channels)


def test_block_names_in_forward_order(tiny_vd):
    names = [n for n, _, _ in se_blocks(tiny_vd)]
    assert names == [f"SE_{s}_{i}" for s, d in zip((2, 3, 4, 5), (3, 4, 6, 3))
                     for i in range(1, d + 1)]
    assert names == [b.name for b in tiny_vd.info.blocks]
    assert names[0] == "SE_2_1" and names[-1] == "SE_5_3" and len(names) == 16
    assert [p for _, p, _ in se_blocks(tiny_vd)][:2] == ["bb_0_0.scale", "bb_0_1.scale"]


@pytest.mark.parametrize("arch", ["se_resnet50_vd", "se_resnet50"])
def test_full_size_channels_and_output(arch):
    model = SEResNet(arch)
    assert [se.channels for _, _, se in se_blocks(model)] == STAGE_CHANNELS
    assert sorted({se.hidden for _, _, se in se_blocks(model)}) == [16, 32, 64, 128]
    assert sum(STAGE_CHANNELS) == 15104


def test_se_resnet50_vd_parameter_count_matches_paddleclas():
    model = SEResNet("se_resnet50_vd")
    assert count_parameters(model) == 28_107_256  # PaddleClas model list: 28.1 M
    assert len(model.state_dict()) == 341


@pytest.mark.parametrize("r", [1, 2, 4, 8, 32, 64, 3.5])
def test_other_reductions_follow_the_paper_formula(r):
    base16 = count_parameters(SEResNet("se_resnet50_vd", reduction=16))
    got = count_parameters(SEResNet("se_resnet50_vd", reduction=r))
    # extra = 2/r * sum(blocks * C^2) (+ biases); differences are exact with int(C/r)
    assert got - base16 == _se_params(STAGE_CHANNELS, r) - _se_params(STAGE_CHANNELS, 16)
    if float(r).is_integer():
        approx = sum(2 * c * c / r for c in STAGE_CHANNELS) - sum(2 * c * c / 16 for c in
                                                                   STAGE_CHANNELS)
        assert abs((got - base16) - approx) < 0.01 * max(abs(approx), 1) + 20_000


@pytest.mark.parametrize("r,paper_m", [(2, 45.7), (4, 35.7), (8, 30.7), (16, 28.1), (32, 26.9)])
def test_canonical_layout_matches_paper_table(r, paper_m):
    got = count_parameters(SEResNet("se_resnet50", reduction=r)) / 1e6
    assert abs(got - paper_m) < 0.1 + 1e-9, got


def test_se_extra_parameters_are_about_2_5_million():
    model = SEResNet("se_resnet50")
    se_only = sum(count_parameters(se) for _, _, se in se_blocks(model))
    assert se_only == _se_params(STAGE_CHANNELS, 16)
    assert 2.4e6 < se_only < 2.6e6  # paper: ~2.5 M extra, most of it in the last stage
    last = sum(count_parameters(se) for n, _, se in se_blocks(model) if n.startswith("SE_5"))
    assert last > se_only / 2


@pytest.mark.parametrize("r", [0, 0.5, -1])
def test_reduction_below_one_is_refused(r):
    with pytest.raises(ValueError, match="r must be >= 1"):
        SEResNet("se_resnet50_vd", reduction=r, width=8)


def test_huge_reduction_keeps_one_hidden_unit():
    model = SEResNet("se_resnet50_vd", reduction=10_000, width=8, num_classes=3)
    assert {se.hidden for _, _, se in se_blocks(model)} == {1}
    out = model(paddle.to_tensor(batch(1)))
    assert out.shape == [1, 3]


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="se_resnet50_vd"):
        SEResNet("resnet50")


def test_seeded_initialisation_is_deterministic():
    a = make_tiny(seed=3).state_dict()
    b = make_tiny(seed=3).state_dict()
    c = make_tiny(seed=4).state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not np.array_equal(a["bb_0_0.scale.squeeze.weight"].numpy(),
                              c["bb_0_0.scale.squeeze.weight"].numpy())


def test_factories_build_eval_models():
    for factory in (se_resnet50_vd, se_resnet50):
        model = factory(width=8, num_classes=5)
        assert not model.training
        assert model(paddle.to_tensor(batch(2))).shape == [2, 5]


def test_se_block_matches_its_definition():
    rng = np.random.default_rng(1)
    se = se_block(32, reduction=4, impl="linear")
    x = rng.normal(size=(2, 32, 5, 7)).astype(np.float32)
    w1, b1 = se.squeeze.weight.numpy(), se.squeeze.bias.numpy()
    w2, b2 = se.excitation.weight.numpy(), se.excitation.bias.numpy()
    s = 1 / (1 + np.exp(-(np.maximum(x.mean(axis=(2, 3)) @ w1 + b1, 0) @ w2 + b2)))
    got = se(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(got, x * s[:, :, None, None], rtol=1e-5, atol=1e-6)


PADDLECLAS_KEYS = {  # REFERENCE.md 1a: names and shapes in PaddleClas's SE_ResNet50_vd file
    "conv1_1._conv.weight": [32, 3, 3, 3],
    "conv1_3._batch_norm._variance": [64],
    "bb_0_0.conv0._conv.weight": [64, 64, 1, 1],
    "bb_0_0.scale.squeeze.weight": [256, 16],
    "bb_0_0.scale.squeeze.bias": [16],
    "bb_0_0.scale.excitation.weight": [16, 256],
    "bb_0_0.short._conv.weight": [256, 64, 1, 1],
    "bb_1_0.conv1._conv.weight": [128, 128, 3, 3],
    "bb_3_2.scale.excitation.bias": [2048],
    "out.weight": [2048, 1000],
    "out.bias": [1000],
}


def test_vd_keys_are_paddleclas_keys_so_its_file_loads_unchanged():
    state = SEResNet("se_resnet50_vd").state_dict()
    for key, shape in PADDLECLAS_KEYS.items():
        assert list(state[key].shape) == shape, key
    assert not any("_pool2d_avg" in k or k.endswith(".gate") for k in state)
    assert sum(k.startswith("bb_") and k.endswith("short._conv.weight") for k in state) == 4
