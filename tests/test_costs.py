"""Parameter and multiply-add counts against count_parameters, paddle.flops and the paper."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle import nn

from se_viz.engine import costs
from se_viz.arch import hidden_width
from se_viz.engine.model import count_parameters
from se_viz.engine.networks.resnet import SEResNet

STAGE_C = (256, 512, 1024, 2048)
DEPTHS = (3, 4, 6, 3)
SQ = sum(n * c * c for n, c in zip(DEPTHS, STAGE_C))  # sum over SE blocks of C^2


def _zero(layer, inputs, output):  # paddle.flops counter that counts nothing
    layer.total_ops += 0


# paddle.flops also counts BN (2 per element) and pooling; these layers are not MACs of
# convs or linears, so they are zeroed to compare like with like.
CONV_LINEAR_ONLY = {nn.BatchNorm2D: _zero, nn.AvgPool2D: _zero, nn.AdaptiveAvgPool2D: _zero,
                    nn.MaxPool2D: _zero, nn.ReLU: _zero, nn.Sigmoid: _zero}


@pytest.fixture
def paddle_flops_numpy2(monkeypatch):
    """paddle.flops (3.3.1) calls int() on shape-[1] tensors, which NumPy >= 2.4 refuses
    ("only 0-dimensional arrays can be converted to Python scalars"); for this test only,
    let int() of a one-element tensor read its element."""
    monkeypatch.setattr(paddle.Tensor, "__int__", lambda t: int(t.numpy().reshape(-1)[0]))


@pytest.mark.parametrize("arch", ["se_resnet50_vd", "se_resnet50"])
@pytest.mark.parametrize("size", [64, 57, 13])
def test_flops_match_paddle_flops_on_tiny_model(arch, size, paddle_flops_numpy2):
    """Independent reference: paddle.flops runs the net with its own counters."""
    model = SEResNet(arch, reduction=16, num_classes=10, width=8)
    mine = costs.model_costs(model, size)
    theirs = paddle.flops(model, [1, 3, size, size], custom_ops=CONV_LINEAR_ONLY)
    assert mine.flops_total == int(theirs)
    assert mine.params_total == count_parameters(model)


def test_stage_breakdown_adds_up_on_tiny_model():
    model = SEResNet("se_resnet50_vd", reduction=4, num_classes=10, width=8)
    c = costs.model_costs(model, 64)
    stem_head = sum(int(np.prod(p.shape)) for n, p in model.named_parameters()
                    if n.startswith(("conv1_", "out.")) and p.trainable)
    assert sum(c.stage_params) + stem_head == c.params_total
    assert sum(c.stage_se_params) == c.params_se
    assert sum(c.stage_se_flops) == c.flops_se
    assert c.flops_total > sum(c.stage_flops)
    for (_, _, block) in model.blocks:  # SE flops = the two linears = 2 * C * h
        se = block.scale
        assert se.channels * se.hidden * 2 == int(np.prod(se.squeeze.weight.shape)) * 2
    widths = [b.scale.channels for _, _, b in model.blocks]
    assert c.flops_se == sum(2 * ch * hidden_width(ch, 4) for ch in widths)


def test_se_resnet50_vd_matches_paddleclas_parameter_count():
    c = costs.network_costs("se_resnet50_vd", 16)
    assert c.params_total == 28_107_256
    assert c.params_total == count_parameters(SEResNet("se_resnet50_vd", 16))
    assert c.stage_se_params == tuple(n * (2 * ch * (ch // 16) + ch // 16 + ch)
                                      for n, ch in zip(DEPTHS, STAGE_C))
    # the paper: "most [extra parameters] in the last stage"
    assert c.stage_se_params[3] / c.params_se > 0.6


def test_canonical_counts_and_the_papers_3_87_gflops():
    """timm's layout (stride on the 3x3) costs 4.09 G multiply-adds (REFERENCE 5: 4.092 G);
    the paper's 3.87 / 3.86 "GFLOPs" are multiply-adds of the original ResNet layout with
    the stride on the first 1x1 conv, which `stride_in_1x1` counts."""
    timm = costs.network_costs("se_resnet50", 16)
    assert timm.flops_total == 4_091_699_200
    assert timm.params_total == 28_088_024  # paper: 28.1 M
    assert timm.params_total - timm.params_se == 25_557_032  # ResNet-50: 25.6 M
    legacy = costs.network_costs("se_resnet50", 16, stride_in_1x1=True)
    assert legacy.params_total == timm.params_total
    assert legacy.flops_total / 1e9 == pytest.approx(3.87, rel=0.02)
    assert (legacy.flops_total - legacy.flops_se) / 1e9 == pytest.approx(3.86, rel=0.02)
    # SE's own linears add ~0.0025 G: the paper's +0.01 G also counts the x * s rescaling
    assert legacy.flops_se == SQ * 2 // 16
    assert legacy.flops_total - timm.flops_total == -3 * 77_070_336  # 3/4 of three 1x1 convs


def test_cache_returns_same_object():
    assert costs.network_costs("se_resnet50_vd", 16) is costs.network_costs("se_resnet50_vd", 16)


def test_bad_input_size_is_explained():
    tiny = SEResNet("se_resnet50", 16, num_classes=10, width=8)
    with pytest.raises(ValueError, match="input_size"):
        costs.model_costs(tiny, 0)
    assert costs.model_costs(tiny, 1).flops_total > 0  # Paddle runs a 1x1 input too
    with pytest.raises(TypeError, match="se_viz network"):
        costs.model_costs(nn.Linear(2, 2))


@pytest.mark.slow
def test_reduction_sweep_follows_two_over_r_rule():
    rows = costs.reduction_table("se_resnet50_vd", (1, 2, 4, 8, 16, 32, 64))
    assert [r.reduction for r in rows] == [1, 2, 4, 8, 16, 32, 64]
    base = rows[0].params_total - rows[0].params_se  # the same backbone for every r
    for row in rows:
        r = row.reduction
        assert row.params_total - row.params_se == base
        hidden = {c: hidden_width(c, r) for c in STAGE_C}
        exact = sum(n * (2 * c * hidden[c] + hidden[c] + c) for n, c in zip(DEPTHS, STAGE_C))
        assert row.params_se == exact  # weights 2*C*h plus biases h + C
        biases = sum(n * (hidden[c] + c) for n, c in zip(DEPTHS, STAGE_C))
        assert row.params_se - biases == 2 / r * SQ  # exact: every r here divides every C
        assert row.flops_se == sum(n * 2 * c * hidden[c] for n, c in zip(DEPTHS, STAGE_C))
    assert costs.reduction_table("se_resnet50_vd")[4] is rows[4]  # cached
