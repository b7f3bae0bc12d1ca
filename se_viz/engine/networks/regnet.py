"""RegNetY in PaddlePaddle, in timm's layout (``timm/models/regnet.py``).

A RegNet is a stem, four stages of residual bottlenecks and a linear classifier. Its per-block
widths come from four numbers (Radosavovic et al., "Designing Network Design Spaces"): block
j has width w0 + wa * j, snapped to w0 * wm^k for the nearest integer k and rounded to a multiple
of 8; blocks of equal width form a stage. RegNetY adds an SE block after the grouped 3x3 conv,
its hidden width a quarter of the block's *input* channels (not of the channels it gates).

Module names are timm's (``stem.conv``, ``s1.b1.conv2.bn``, ``s1.b1.se.fc1``,
``s2.b1.downsample.conv``, ``head.fc``), so a timm checkpoint loads by renaming BN running
statistics and transposing the classifier's weight only. Parameter-free timm modules
(``se.bn`` = Identity, identity shortcuts, ``final_conv``) have no counterpart here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import paddle
from paddle import nn

from ...arch import BN_EPS, BN_MOMENTUM, ModelInfo
from ...blocks import SIGMOID, AttentionBlock, block_name
from ..attention import SEModule

SE_WIDTH_RULE = "round(block input x 0.25)"


@dataclass(frozen=True)
class RegNetCfg:
    """A RegNet design (timm's ``RegNetCfg``, the fields RegNetY uses): ``depth`` blocks whose
    widths follow ``w0 + wa * j`` quantised by ``wm``; grouped convs of ``group_size`` channels
    per group; SE hidden width ``se_ratio`` x block input."""

    depth: int
    w0: int
    wa: float
    wm: float
    group_size: int
    bottle_ratio: float = 1.0
    se_ratio: float = 0.25
    stem_width: int = 32


@dataclass(frozen=True)
class StageSpec:
    """One stage: output ``width``, number of blocks ``depth``, channels per group."""

    width: int
    depth: int
    group_size: int


def block_widths(cfg: RegNetCfg, quant: int = 8) -> list[int]:
    """Per-block widths from (w0, wa, wm, depth), as pycls/timm's ``generate_regnet``."""
    if not (cfg.wa >= 0 and cfg.w0 > 0 and cfg.wm > 1 and cfg.w0 % quant == 0):
        raise ValueError(f"not a RegNet design: {cfg}")
    linear = np.arange(cfg.depth) * cfg.wa + cfg.w0
    exps = np.round(np.log(linear / cfg.w0) / math.log(cfg.wm))
    widths = np.round(cfg.w0 * np.power(cfg.wm, exps) / quant) * quant
    return widths.astype(int).tolist()


def stage_specs(cfg: RegNetCfg) -> list[StageSpec]:
    """Blocks of equal width grouped into stages, then each width made a multiple of its
    group width (timm's ``adjust_widths_groups_comp``: Python round, half to even)."""
    widths, depths = np.unique(block_widths(cfg), return_counts=True)
    specs = []
    for width, depth in zip(widths.tolist(), depths.tolist()):
        bottleneck = int(width * cfg.bottle_ratio)
        group = min(cfg.group_size, bottleneck)
        bottleneck = int(round(bottleneck / group) * group)
        specs.append(StageSpec(int(bottleneck / cfg.bottle_ratio), int(depth), group))
    return specs


MODEL_CFGS = {
    "regnety_008": RegNetCfg(depth=14, w0=56, wa=38.84, wm=2.4, group_size=16),
    "regnety_032": RegNetCfg(depth=21, w0=80, wa=42.63, wm=2.66, group_size=24),
}


class ConvNormAct(nn.Layer):
    """Conv2D (no bias, symmetric padding) + BatchNorm2D (+ ReLU): timm's ``ConvNormAct``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, kernel, stride=stride,
                              padding=((stride - 1) + (kernel - 1)) // 2, groups=groups,
                              bias_attr=False)
        self.bn = nn.BatchNorm2D(cout, momentum=BN_MOMENTUM, epsilon=BN_EPS)
        self.act = nn.ReLU() if act else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class Bottleneck(nn.Layer):
    """1x1 -> grouped 3x3 (carries the stride) -> SE -> 1x1, plus shortcut, then ReLU.

    The shortcut is a strided 1x1 conv + BN where the shape changes (``downsample``), else
    the identity.
    """

    def __init__(self, cin: int, cout: int, stride: int, group_size: int,
                 cfg: RegNetCfg) -> None:
        super().__init__()
        mid = int(round(cout * cfg.bottle_ratio))
        self.conv1 = ConvNormAct(cin, mid, 1)
        self.conv2 = ConvNormAct(mid, mid, 3, stride=stride, groups=mid // group_size)
        self.se = SEModule(mid, int(round(cin * cfg.se_ratio)), act="relu", gate=SIGMOID,
                           impl="conv", names=("fc1", "fc2"))
        self.conv3 = ConvNormAct(mid, cout, 1, act=False)
        self.downsample = (ConvNormAct(cin, cout, 1, stride=stride, act=False)
                           if cin != cout or stride != 1 else None)
        self.act3 = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.conv3(self.se(self.conv2(self.conv1(x))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.act3(y + shortcut)


class ClassifierHead(nn.Layer):
    """Global average pool -> Linear (timm's ``head.global_pool``, ``head.fc``)."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc(self.global_pool(x).reshape([0, -1]))


class RegNet(nn.Layer):
    """RegNetY: stem (3x3 stride 2), stages ``s1``..``s4`` of ``b1``..``bN``, head.

    Input (N, 3, H, W) float32, output logits (N, num_classes).
    """

    def __init__(self, arch: str, cfg: RegNetCfg, num_classes: int = 1000) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        self.stem = ConvNormAct(3, cfg.stem_width, 3, stride=2)
        attention, self._stages = [], []
        cin = cfg.stem_width
        for s, spec in enumerate(stage_specs(cfg), start=1):
            stage = nn.Sequential()
            for i in range(1, spec.depth + 1):
                block = Bottleneck(cin, spec.width, 2 if i == 1 else 1, spec.group_size, cfg)
                stage.add_sublayer(f"b{i}", block)
                path = f"s{s}.b{i}"
                attention.append(AttentionBlock(
                    block_name(s, i), f"{path}.se", path, stage=s, index=i,
                    channels=block.se.channels, hidden=block.se.hidden, gate=SIGMOID,
                    kind="se", width_rule=SE_WIDTH_RULE, act="relu"))
                cin = spec.width
            self._stages.append(self.add_sublayer(f"s{s}", stage))
        self.head = ClassifierHead(cin, int(num_classes))
        self.num_features = cin
        self.head_key = "head.fc.weight"
        self.info = ModelInfo(arch=arch, reduction=1.0 / cfg.se_ratio,
                              num_classes=int(num_classes), width=64, se_impl="conv",
                              layout="timm", blocks=tuple(attention))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.stem(x)
        for stage in self._stages:
            x = stage(x)
        return self.head(x)


def _build(arch: str, num_classes: int) -> RegNet:
    model = RegNet(arch, MODEL_CFGS[arch], num_classes)
    model.eval()
    return model


def regnety_008(num_classes: int = 1000) -> nn.Layer:
    """timm's ``regnety_008`` (RegNetY-800MF), in eval mode (untrained: `se_viz.build_model`
    adds weights)."""
    return _build("regnety_008", num_classes)


def regnety_032(num_classes: int = 1000) -> nn.Layer:
    """timm's ``regnety_032`` (RegNetY-3.2GF), in eval mode (untrained)."""
    return _build("regnety_032", num_classes)
