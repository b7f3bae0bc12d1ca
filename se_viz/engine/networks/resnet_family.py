"""SE-ResNeXt, the SENet authors' SE-ResNet and ECA-ResNet-D in PaddlePaddle.

Four networks, each in the layout of the files users have weights for:

* ``seresnext50_32x4d`` - timm's ResNet class (``timm/models/resnet.py``): 7x7 stem, ResNeXt
  bottleneck (32 groups of 4 channels at stage 2), SE after ``bn3`` as ``layerN.i.se``
  (``fc1``/``fc2`` 1x1 convs, hidden make_divisible(C / 16, 8)), classifier ``fc``.
* ``ecaresnet50d`` - the same class, "D" variant: deep 3x3 stem (32, 32, 64) as ``conv1.0``..
  ``conv1.6``, avg-pool shortcut ``downsample.{0: pool, 1: conv, 2: bn}``, ECA as
  ``layerN.i.se`` (one Conv1d over the block's output channels, no bias).
* ``legacy_seresnet50`` - timm's ``senet.py`` (Cadene's port of the authors' Caffe model):
  ``layer0.{conv1, bn1, relu1}``, ``pool0`` max pool with ceil mode and no padding, the
  stride on the first 1x1 conv, ``se_module`` (``fc1``/``fc2``, hidden C // 16),
  classifier ``last_linear``.
* ``se_resnext50_vd_32x4d`` - PaddleClas's SE_ResNeXt50_vd_32x4d
  (``ppcls/arch/backbone/model_zoo/se_resnext_vd.py``): stem ``conv1_1..3`` (64, 64, 128),
  blocks ``bb_{s}_{i}`` of ``conv0..2``, ``scale`` (``squeeze``/``excitation`` Linear,
  hidden int(C / 16)) and ``short``, classifier ``out``.

Module names are the files' own, so timm checkpoints load by renaming BN statistics and
transposing Linear weights, and PaddleClas's ``.pdparams`` loads unchanged. Parameter-free
modules of the originals (timm's ``se.bn`` Identity, activations, pools) carry no keys.
Dropout before the classifier (legacy SENet: 0.2) is left out: these networks run in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import paddle
from paddle import nn

from ...arch import BN_EPS, BN_MOMENTUM, DEPTHS, EXPANSION, ModelInfo, hidden_width
from ...blocks import SIGMOID, AttentionBlock, block_name
from ..attention import EcaModule, SEModule, eca_kernel, make_divisible
from .resnet import ConvBN

REDUCTION = 16
STAGE_PLANES = (64, 128, 256, 512)  # bottleneck planes; a block's output is planes x 4


def bn(channels: int) -> nn.BatchNorm2D:
    return nn.BatchNorm2D(channels, momentum=BN_MOMENTUM, epsilon=BN_EPS)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
         padding: int | None = None) -> nn.Conv2D:
    """Conv2D without bias, "same" padding (k - 1) // 2 unless given."""
    pad = (kernel - 1) // 2 if padding is None else padding
    return nn.Conv2D(cin, cout, kernel, stride=stride, padding=pad, groups=groups,
                     bias_attr=False)


def describe(attn: SEModule | EcaModule, stage: int, index: int, path: str,
             rule: str) -> AttentionBlock:
    """The `AttentionBlock` of ``attn`` at ``path`` (attention layer ``path.se`` etc.),
    ``stage`` 2..5 and ``index`` from 1 as in the paper."""
    return AttentionBlock(
        block_name(stage, index), path, path.rsplit(".", 1)[0], stage=stage, index=index,
        channels=attn.channels, hidden=attn.hidden, gate=attn.gate_spec, kind=attn.kind,
        width_rule=rule, act=getattr(attn, "act_name", "none"))


# -- timm's ResNet class: seresnext50_32x4d, ecaresnet50d -------------------------------------

@dataclass(frozen=True)
class TimmResNetCfg:
    """The options of timm's ``ResNet`` these networks use: stem ("" = 7x7, "deep" = three
    3x3 convs of stem_width, stem_width, 2 x stem_width), ResNeXt cardinality and base width,
    avg-pool shortcut ("D" variant), attention "se" or "eca"."""

    stem: str = ""
    stem_width: int = 64
    cardinality: int = 1
    base_width: int = 64
    avg_down: bool = False
    attn: str = "se"


TIMM_CFGS = {
    "seresnext50_32x4d": TimmResNetCfg(cardinality=32, base_width=4, attn="se"),
    "ecaresnet50d": TimmResNetCfg(stem="deep", stem_width=32, avg_down=True, attn="eca"),
}


def timm_attention(kind: str, channels: int) -> tuple[SEModule | EcaModule, str]:
    """timm's ``create_attn(kind, C)``: SEModule with hidden make_divisible(C / 16, 8)
    (round_limit 0), or EcaModule with its kernel from C (gamma 2, beta 1)."""
    if kind == "eca":
        k = eca_kernel(channels)
        return EcaModule(channels, k, SIGMOID), f"ECA kernel k={k}"
    hidden = make_divisible(channels / REDUCTION, 8, round_limit=0.0)
    return (SEModule(channels, hidden, act="relu", gate=SIGMOID, impl="conv",
                     names=("fc1", "fc2")), f"make_divisible(C / {REDUCTION}, 8)")


def timm_downsample(cin: int, cout: int, stride: int, avg_down: bool) -> nn.Sequential:
    """timm's ``downsample_conv`` (strided 1x1 conv, BN) or ``downsample_avg`` (2x2 avg pool,
    ceil mode, padding not counted, or Identity at stride 1; 1x1 conv; BN)."""
    if not avg_down:
        return nn.Sequential(conv(cin, cout, 1, stride=stride), bn(cout))
    pool = (nn.Identity() if stride == 1 else
            nn.AvgPool2D(2, stride, 0, ceil_mode=True, exclusive=True))
    return nn.Sequential(pool, conv(cin, cout, 1), bn(cout))


class TimmBottleneck(nn.Layer):
    """timm's ``Bottleneck``: 1x1 -> 3x3 (stride, groups) -> 1x1 -> attention ``se``, plus
    shortcut, ReLU. Width floor(planes x base_width / 64) x cardinality."""

    def __init__(self, cin: int, planes: int, stride: int, cfg: TimmResNetCfg,
                 attention: nn.Layer, downsample: nn.Layer | None) -> None:
        super().__init__()
        width = int(math.floor(planes * (cfg.base_width / 64)) * cfg.cardinality)
        cout = planes * EXPANSION
        self.conv1, self.bn1, self.act1 = conv(cin, width, 1), bn(width), nn.ReLU()
        self.conv2 = conv(width, width, 3, stride=stride, groups=cfg.cardinality)
        self.bn2, self.act2 = bn(width), nn.ReLU()
        self.conv3, self.bn3 = conv(width, cout, 1), bn(cout)
        self.se = attention
        self.act3 = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        y = self.se(self.bn3(self.conv3(y)))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.act3(y + shortcut)


class TimmResNet(nn.Layer):
    """timm's ResNet (stem ``conv1``/``bn1``/``act1``/``maxpool``, ``layer1..4``, ``fc``)
    with bottleneck blocks of depths (3, 4, 6, 3). Input (N, 3, H, W), logits (N, K)."""

    def __init__(self, arch: str, num_classes: int = 1000) -> None:
        super().__init__()
        cfg = TIMM_CFGS[arch]
        cin = 2 * cfg.stem_width if cfg.stem == "deep" else 64
        if cfg.stem == "deep":
            w = cfg.stem_width
            self.conv1 = nn.Sequential(conv(3, w, 3, stride=2), bn(w), nn.ReLU(),
                                       conv(w, w, 3), bn(w), nn.ReLU(), conv(w, cin, 3))
        else:
            self.conv1 = conv(3, cin, 7, stride=2)
        self.bn1, self.act1 = bn(cin), nn.ReLU()
        self.maxpool = nn.MaxPool2D(3, 2, 1)
        attention = []
        for s, (planes, depth) in enumerate(zip(STAGE_PLANES, DEPTHS)):
            cout, stage = planes * EXPANSION, nn.Sequential()
            for i in range(depth):
                stride = 2 if (i == 0 and s > 0) else 1
                down = (timm_downsample(cin, cout, stride, cfg.avg_down)
                        if i == 0 and (stride != 1 or cin != cout) else None)
                attn, rule = timm_attention(cfg.attn, cout)
                stage.add_sublayer(str(i), TimmBottleneck(cin, planes, stride, cfg, attn, down))
                attention.append(describe(attn, s + 2, i + 1, f"layer{s + 1}.{i}.se", rule))
                cin = cout
            self.add_sublayer(f"layer{s + 1}", stage)
        self.global_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(cin, int(num_classes))
        self.num_features = cin
        self.head_key = "fc.weight"
        self.info = ModelInfo(
            arch=arch, reduction=float(REDUCTION) if cfg.attn == "se" else 0.0,
            num_classes=int(num_classes), width=64, se_impl="conv", layout="timm",
            blocks=tuple(attention))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.global_pool(x).reshape([0, -1]))


# -- timm's legacy SENet (senet.py): legacy_seresnet50 ----------------------------------------

class LegacySEBottleneck(nn.Layer):
    """timm's ``SEResNetBottleneck`` (Caffe layout): the stride on the first 1x1 conv, one
    ``relu`` module, ``se_module`` (hidden C // 16) before the residual sum."""

    def __init__(self, cin: int, planes: int, stride: int, attention: SEModule,
                 downsample: nn.Layer | None) -> None:
        super().__init__()
        cout = planes * EXPANSION
        self.conv1, self.bn1 = conv(cin, planes, 1, stride=stride), bn(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3), bn(planes)
        self.conv3, self.bn3 = conv(planes, cout, 1), bn(cout)
        self.relu = nn.ReLU()
        self.se_module = attention
        self.downsample = downsample

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.se_module(self.bn3(self.conv3(y)))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(y + shortcut)


class LegacySENet(nn.Layer):
    """timm's ``SENet`` as legacy_seresnet50: ``layer0`` (7x7 conv, BN, ReLU), ``pool0``,
    ``layer1..4``, ``last_linear``. Input (N, 3, H, W), logits (N, K)."""

    def __init__(self, arch: str = "legacy_seresnet50", num_classes: int = 1000) -> None:
        super().__init__()
        cin = 64
        self.layer0 = nn.Sequential(("conv1", conv(3, cin, 7, stride=2)), ("bn1", bn(cin)),
                                    ("relu1", nn.ReLU()))
        self.pool0 = nn.MaxPool2D(3, 2, 0, ceil_mode=True)  # Caffe's pooling, no padding
        attention = []
        for s, (planes, depth) in enumerate(zip(STAGE_PLANES, DEPTHS)):
            cout, stage = planes * EXPANSION, nn.Sequential()
            for i in range(depth):
                stride = 2 if (i == 0 and s > 0) else 1
                down = (nn.Sequential(conv(cin, cout, 1, stride=stride, padding=0), bn(cout))
                        if i == 0 and (stride != 1 or cin != cout) else None)
                attn = SEModule(cout, hidden_width(cout, REDUCTION), act="relu", gate=SIGMOID,
                                impl="conv", names=("fc1", "fc2"))
                stage.add_sublayer(str(i), LegacySEBottleneck(cin, planes, stride, attn, down))
                attention.append(describe(attn, s + 2, i + 1, f"layer{s + 1}.{i}.se_module",
                                          f"C // {REDUCTION}"))
                cin = cout
            self.add_sublayer(f"layer{s + 1}", stage)
        self.global_pool = nn.AdaptiveAvgPool2D(1)
        self.last_linear = nn.Linear(cin, int(num_classes))
        self.num_features = cin
        self.head_key = "last_linear.weight"
        self.info = ModelInfo(arch=arch, reduction=float(REDUCTION), num_classes=int(num_classes),
                              width=64, se_impl="conv", layout="timm", blocks=tuple(attention))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.pool0(self.layer0(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.last_linear(self.global_pool(x).reshape([0, -1]))


# -- PaddleClas SE_ResNeXt50_vd_32x4d: se_resnext50_vd_32x4d ----------------------------------

class PaddleClasSEBottleneck(nn.Layer):
    """PaddleClas's ResNeXt ``BottleneckBlock``: ``conv0`` 1x1 -> ``conv1`` 3x3 (stride, 32
    groups) -> ``conv2`` 1x1 to 2 x width -> ``scale`` (SE), plus ``short``, ReLU."""

    def __init__(self, cin: int, width: int, stride: int, cardinality: int,
                 attention: SEModule, short: str | None) -> None:
        super().__init__()
        cout = 2 * width
        self.conv0 = ConvBN(cin, width, 1, act=True)
        self.conv1 = ConvBN(width, width, 3, stride=stride, groups=cardinality,
                                      act=True)
        self.conv2 = ConvBN(width, cout, 1)
        self.scale = attention
        # first block of the first stage: plain 1x1 projection; later stages: "vd" avg pool
        self.short = (ConvBN(cin, cout, 1, avg_down=short == "vd")
                      if short is not None else None)
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.scale(self.conv2(self.conv1(self.conv0(x))))
        shortcut = self.short(x) if self.short is not None else x
        return self.relu(shortcut + y)


class PaddleClasSEResNeXt(nn.Layer):
    """PaddleClas's ``ResNeXt(layers=50, cardinality=32)`` with SE: stem ``conv1_1..3``,
    ``pool2d_max``, blocks ``bb_{s}_{i}``, ``pool2d_avg``, ``out``. Input (N, 3, H, W),
    logits (N, K)."""

    def __init__(self, arch: str = "se_resnext50_vd_32x4d", num_classes: int = 1000,
                 cardinality: int = 32) -> None:
        super().__init__()
        self.conv1_1 = ConvBN(3, 64, 3, stride=2, act=True)
        self.conv1_2 = ConvBN(64, 64, 3, act=True)
        self.conv1_3 = ConvBN(64, 128, 3, act=True)
        self.pool2d_max = nn.MaxPool2D(3, 2, 1)
        self._blocks, attention, cin = [], [], 128
        for s, depth in enumerate(DEPTHS):
            width = 128 * 2 ** s  # PaddleClas's num_filters (32 groups x 4 at stage 2)
            for i in range(depth):
                stride = 2 if (i == 0 and s > 0) else 1
                short = None if i > 0 else ("conv" if s == 0 else "vd")
                attn = SEModule(2 * width, hidden_width(2 * width, REDUCTION), act="relu",
                                gate=SIGMOID, impl="linear", names=("squeeze", "excitation"))
                path = f"bb_{s}_{i}"
                block = PaddleClasSEBottleneck(cin, width, stride, cardinality, attn, short)
                self._blocks.append(self.add_sublayer(path, block))
                attention.append(describe(attn, s + 2, i + 1, f"{path}.scale",
                                          f"int(C / {REDUCTION})"))
                cin = 2 * width
        self.pool2d_avg = nn.AdaptiveAvgPool2D(1)
        self.out = nn.Linear(cin, int(num_classes))
        self.num_features = cin
        self.head_key = "out.weight"
        self.info = ModelInfo(arch=arch, reduction=float(REDUCTION), num_classes=int(num_classes),
                              width=64, se_impl="linear", layout="paddleclas",
                              blocks=tuple(attention))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.pool2d_max(self.conv1_3(self.conv1_2(self.conv1_1(x))))
        for block in self._blocks:
            x = block(x)
        return self.out(self.pool2d_avg(x).reshape([0, -1]))


# -- factories ---------------------------------------------------------------------------------

def _check(num_classes: int) -> int:
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    return int(num_classes)


def _eval(model: nn.Layer) -> nn.Layer:
    model.eval()
    return model


def seresnext50_32x4d(num_classes: int = 1000) -> nn.Layer:
    """timm's ``seresnext50_32x4d``, in eval mode (untrained: `se_viz.build_model` adds
    weights)."""
    return _eval(TimmResNet("seresnext50_32x4d", _check(num_classes)))


def ecaresnet50d(num_classes: int = 1000) -> nn.Layer:
    """timm's ``ecaresnet50d`` (ResNet-50-D with ECA), in eval mode (untrained)."""
    return _eval(TimmResNet("ecaresnet50d", _check(num_classes)))


def legacy_seresnet50(num_classes: int = 1000) -> nn.Layer:
    """timm's ``legacy_seresnet50`` (the SENet authors' SE-ResNet-50), in eval mode
    (untrained)."""
    return _eval(LegacySENet("legacy_seresnet50", _check(num_classes)))


def se_resnext50_vd_32x4d(num_classes: int = 1000) -> nn.Layer:
    """PaddleClas's ``SE_ResNeXt50_vd_32x4d``, in eval mode (untrained)."""
    return _eval(PaddleClasSEResNeXt("se_resnext50_vd_32x4d", _check(num_classes)))
