"""EfficientNet-B0, MobileNetV3-Large and LCNet in PaddlePaddle, in timm's and PaddleClas's layouts.

One builder (`TimmMobileNet`) makes the timm networks from a block table, as timm's
``_efficientnet_builder`` does from its block strings: a network is a stem, stages of
depthwise-separable ("ds"; "dsa" with an activation after the pointwise conv and no skip),
inverted-residual ("ir") or conv-BN-act ("cn") blocks, and a head. Module names are timm's
(``conv_stem``, ``bn1``, ``blocks.2.0.conv_pw``, ``blocks.2.0.se.conv_reduce``, ``conv_head``,
``classifier``), so a timm file loads by renaming BN running statistics and transposing the
classifier's weight. timm's BatchNormAct2d is `BatchNormAct2D` here (BN with its activation as
a parameter-free ``act``). Convs pad symmetrically, (k - 1) // 2 (timm's default padding, not
TF "same", for these three networks).

PaddleClas's MobileNetV3_large_x1_0 and PPLCNet_x1_0 keep PaddleClas's names (``conv``,
``blocks.3.mid_se.conv1``, ``last_second_conv``, ``last_conv``, ``fc``; ``conv1``,
``blocks6.0.se.conv1``), so their ``.pdparams`` load unchanged. Their SE blocks are narrower
(C // 4) with other gates, and their heads end in a ``downscale_in_infer`` dropout, which
scales the features by 0.8 at inference; their files do not load into timm's networks.

Blocks are named ``SE_{stage}_{index}``: stage i + 1 for timm's ``blocks.i`` and PPLCNet's
``blocks{i + 1}``; PaddleClas's MobileNetV3 has one flat list of 15 blocks, grouped here into
timm's stages of the same network, so a block has one name in both layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import paddle
from paddle import nn

from ...arch import BN_EPS, BN_MOMENTUM, FULL_WIDTH, ModelInfo
from ...blocks import SIGMOID, AttentionBlock, Gate, block_name
from ..attention import SEModule, make_divisible

ACTS = {"relu": nn.ReLU, "silu": nn.Silu, "hardswish": nn.Hardswish}
SE_RATIO = 0.25
TIMM_HARD_SIGMOID = Gate("hardsigmoid", 1.0 / 6.0, 0.5)  # timm/torch: relu6(x + 3) / 6
PADDLECLAS_MNV3_GATE = Gate("hardsigmoid", 0.2, 0.5)  # mobilenet_v3.py's own Hardsigmoid
PADDLE_HARD_SIGMOID = Gate("hardsigmoid", 0.1666667, 0.5)  # nn.Hardsigmoid() (pp_lcnet.py)


def _act(name: str | None) -> nn.Layer:
    return ACTS[name]() if name else nn.Identity()


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
          bias: bool = False) -> nn.Conv2D:
    return nn.Conv2D(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2,
                     groups=groups, bias_attr=None if bias else False)


def _bn(channels: int) -> nn.BatchNorm2D:
    return nn.BatchNorm2D(channels, momentum=BN_MOMENTUM, epsilon=BN_EPS)


def _attention(block_path: str, se_name: str, stage: int, index: int, se: SEModule,
               rule: str) -> AttentionBlock:
    return AttentionBlock(block_name(stage, index), f"{block_path}.{se_name}", block_path,
                          stage=stage, index=index, channels=se.channels, hidden=se.hidden,
                          gate=se.gate_spec, kind="se", width_rule=rule, act=se.act_name)


class BatchNormAct2D(nn.BatchNorm2D):
    """timm's BatchNormAct2d: BatchNorm then ``act`` (parameter-free; Identity for none)."""

    def __init__(self, channels: int, act: str | None = None) -> None:
        super().__init__(channels, momentum=BN_MOMENTUM, epsilon=BN_EPS)
        self.act = _act(act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(nn.BatchNorm2D.forward(self, x))


# --- timm layout ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """``repeats`` blocks of one ``kind`` (timm's block string ``ir_r2_k3_s2_e6_c24_se0.25``:
    kind ir, 2 repeats, kernel 3, stride 2 (first block of a stage only), expansion 6,
    ``out`` 24 channels, SE); ``act`` None takes the network's activation."""

    kind: str
    repeats: int
    kernel: int
    stride: int
    out: int
    exp: float = 1.0
    se: bool = False
    act: str | None = None


@dataclass(frozen=True)
class SeRule:
    """How a family sizes its SE block: ``width(C, expansion)`` -> hidden, said in ``text``;
    ``act`` None uses the block's activation."""

    width: Callable[[int, float], int]
    text: str
    act: str | None
    gate: Gate


@dataclass(frozen=True)
class TimmNet:
    """A network of timm's EfficientNet/MobileNetV3 family: stages of `Row`s, the default
    activation, stem and head widths, the SE rule, and the head: "efficientnet" (conv_head +
    bn2 before pooling) or "mobilenetv3" (pooling, then conv_head with bias and act2)."""

    stages: tuple[tuple[Row, ...], ...]
    act: str
    stem: int
    features: int
    se: SeRule
    head: str


# EfficientNet: rd_ratio 0.25 / expansion of the expanded width, rounded = round(input x 0.25)
EFFICIENTNET_SE = SeRule(lambda c, exp: round(c * (SE_RATIO / exp)), "round(block input x 0.25)",
                         None, SIGMOID)
MOBILENETV3_SE = SeRule(lambda c, exp: make_divisible(c * SE_RATIO, 8),
                        "make_divisible(C x 0.25, 8)", "relu", TIMM_HARD_SIGMOID)
LCNET_SE = SeRule(lambda c, exp: round(c * SE_RATIO), "round(C x 0.25)", "relu",
                  TIMM_HARD_SIGMOID)

# timm efficientnet.py _gen_efficientnet (b0: multipliers 1.0)
EFFICIENTNET_B0 = TimmNet(
    stages=((Row("ds", 1, 3, 1, 16, se=True),),
            (Row("ir", 2, 3, 2, 24, 6, True),),
            (Row("ir", 2, 5, 2, 40, 6, True),),
            (Row("ir", 3, 3, 2, 80, 6, True),),
            (Row("ir", 3, 5, 1, 112, 6, True),),
            (Row("ir", 4, 5, 2, 192, 6, True),),
            (Row("ir", 1, 3, 1, 320, 6, True),)),
    act="silu", stem=32, features=1280, se=EFFICIENTNET_SE, head="efficientnet")

# timm mobilenetv3.py _gen_mobilenet_v3, large (not minimal)
MOBILENETV3_LARGE = TimmNet(
    stages=((Row("ds", 1, 3, 1, 16, act="relu"),),
            (Row("ir", 1, 3, 2, 24, 4, act="relu"), Row("ir", 1, 3, 1, 24, 3, act="relu")),
            (Row("ir", 3, 5, 2, 40, 3, True, "relu"),),
            (Row("ir", 1, 3, 2, 80, 6), Row("ir", 1, 3, 1, 80, 2.5), Row("ir", 2, 3, 1, 80, 2.3)),
            (Row("ir", 2, 3, 1, 112, 6, True),),
            (Row("ir", 3, 5, 2, 160, 6, True),),
            (Row("cn", 1, 1, 1, 960),)),
    act="hardswish", stem=16, features=1280, se=MOBILENETV3_SE, head="mobilenetv3")

# timm mobilenetv3.py _gen_lcnet
LCNET_100 = TimmNet(
    stages=((Row("dsa", 1, 3, 1, 32),),
            (Row("dsa", 2, 3, 2, 64),),
            (Row("dsa", 2, 3, 2, 128),),
            (Row("dsa", 1, 3, 2, 256), Row("dsa", 1, 5, 1, 256)),
            (Row("dsa", 4, 5, 1, 256),),
            (Row("dsa", 2, 5, 2, 512, se=True),)),
    act="hardswish", stem=16, features=1280, se=LCNET_SE, head="mobilenetv3")


def _timm_se(cfg: TimmNet, channels: int, exp: float, act: str) -> SEModule:
    rule = cfg.se
    return SEModule(channels, rule.width(channels, exp), act=rule.act or act, gate=rule.gate,
                    impl="conv", names=("conv_reduce", "conv_expand"))


class DepthwiseSeparable(nn.Layer):
    """timm's DepthwiseSeparableConv: dw conv, BN + act, SE, pw conv, BN (+ act), skip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act: str,
                 se: SEModule | None, skip: bool, pw_act: bool) -> None:
        super().__init__()
        self.conv_dw = _conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2D(cin, act)
        self.se = se
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2D(cout, act if pw_act else None)
        self.has_skip = skip

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.bn1(self.conv_dw(x))
        if self.se is not None:
            y = self.se(y)
        y = self.bn2(self.conv_pw(y))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Layer):
    """timm's InvertedResidual: pw expand + BN + act, dw conv + BN + act, SE, pw linear + BN,
    skip when shapes allow."""

    def __init__(self, cin: int, mid: int, cout: int, kernel: int, stride: int, act: str,
                 se: SEModule | None) -> None:
        super().__init__()
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2D(mid, act)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2D(mid, act)
        self.se = se
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2D(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        if self.se is not None:
            y = self.se(y)
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class ConvBnAct(nn.Layer):
    """timm's ConvBnAct (no skip): conv, BN + act."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act: str) -> None:
        super().__init__()
        self.conv = _conv(cin, cout, kernel, stride)
        self.bn1 = BatchNormAct2D(cout, act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.bn1(self.conv(x))


def _timm_block(cfg: TimmNet, row: Row, cin: int, stride: int) -> nn.Layer:
    act = row.act or cfg.act
    if row.kind in ("ds", "dsa"):
        se = _timm_se(cfg, cin, 1.0, act) if row.se else None
        skip = row.kind == "ds" and stride == 1 and cin == row.out
        return DepthwiseSeparable(cin, row.out, row.kernel, stride, act, se, skip,
                                  pw_act=row.kind == "dsa")
    if row.kind == "ir":
        mid = make_divisible(cin * row.exp)
        se = _timm_se(cfg, mid, row.exp, act) if row.se else None
        return InvertedResidual(cin, mid, row.out, row.kernel, stride, act, se)
    if row.kind == "cn":
        return ConvBnAct(cin, row.out, row.kernel, stride, act)
    raise ValueError(f"unknown block kind {row.kind!r}")


class TimmMobileNet(nn.Layer):
    """A timm EfficientNet/MobileNetV3/LCNet built from ``cfg``; input (N, 3, H, W) float32,
    output logits (N, num_classes)."""

    def __init__(self, arch: str, cfg: TimmNet, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = _conv(3, cfg.stem, 3, 2)
        self.bn1 = BatchNormAct2D(cfg.stem, cfg.act)
        self.blocks = nn.Sequential()
        attention, cin = [], cfg.stem
        for i, stage in enumerate(cfg.stages):
            seq, j = nn.Sequential(), 0
            for row in stage:
                for _ in range(row.repeats):
                    block = _timm_block(cfg, row, cin, row.stride if j == 0 else 1)
                    seq.add_sublayer(str(j), block)
                    if getattr(block, "se", None) is not None:
                        attention.append(_attention(f"blocks.{i}.{j}", "se", i + 1, j + 1,
                                                    block.se, cfg.se.text))
                    cin, j = row.out, j + 1
            self.blocks.add_sublayer(str(i), seq)
        self.head_first = cfg.head == "efficientnet"
        self.conv_head = _conv(cin, cfg.features, 1, bias=not self.head_first)
        if self.head_first:
            self.bn2 = BatchNormAct2D(cfg.features, cfg.act)
        else:
            self.act2 = _act(cfg.act)
        self.global_pool = nn.AdaptiveAvgPool2D(1)
        self.classifier = nn.Linear(cfg.features, int(num_classes))
        self.num_features = cfg.features
        self.head_key = "classifier.weight"
        self.info = ModelInfo(arch=arch, reduction=1 / SE_RATIO, num_classes=int(num_classes),
                              width=FULL_WIDTH, se_impl="conv", layout="timm",
                              blocks=tuple(attention))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        if self.head_first:  # EfficientNet: 1x1 conv + BN + act, then pooling
            x = self.global_pool(self.bn2(self.conv_head(x)))
        else:  # MobileNetV3 / LCNet: pooling, then 1x1 conv (bias) + act
            x = self.act2(self.conv_head(self.global_pool(x)))
        return self.classifier(x.reshape([0, -1]))


# --- PaddleClas layout ------------------------------------------------------------------------

class ConvBNLayer(nn.Layer):
    """PaddleClas's ConvBNLayer: ``conv`` (no bias), ``bn``, ``act`` (Identity for none)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = None) -> None:
        super().__init__()
        self.conv = _conv(cin, cout, kernel, stride, groups)
        self.bn = _bn(cout)
        self.act = _act(act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.bn(self.conv(x)))


def _paddleclas_se(channels: int, gate: Gate) -> SEModule:
    return SEModule(channels, channels // 4, act="relu", gate=gate, impl="conv",
                    names=("conv1", "conv2"))


class ResidualUnit(nn.Layer):
    """PaddleClas MobileNetV3's block: expand_conv, bottleneck_conv (dw), mid_se, linear_conv,
    identity shortcut when shapes allow (an expand conv even at expansion 1)."""

    def __init__(self, cin: int, mid: int, cout: int, kernel: int, stride: int, se: bool,
                 act: str) -> None:
        super().__init__()
        self.expand_conv = ConvBNLayer(cin, mid, 1, act=act)
        self.bottleneck_conv = ConvBNLayer(mid, mid, kernel, stride, groups=mid, act=act)
        self.mid_se = _paddleclas_se(mid, PADDLECLAS_MNV3_GATE) if se else None
        self.linear_conv = ConvBNLayer(mid, cout, 1)
        self.if_shortcut = stride == 1 and cin == cout

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.bottleneck_conv(self.expand_conv(x))
        if self.mid_se is not None:
            y = self.mid_se(y)
        y = self.linear_conv(y)
        return x + y if self.if_shortcut else y


class PaddleClasMobileNetV3(nn.Layer):
    """PaddleClas's MobileNetV3 (large, scale 1.0): its 15 blocks are timm's ``ir``/``ds`` rows
    of `MOBILENETV3_LARGE` (same kernels, strides, widths, activations; PaddleClas gives the
    expanded widths 64, 72, ..., 960 that timm derives), flattened into ``blocks.k``; timm's
    last ``cn`` row is ``last_second_conv``."""

    def __init__(self, arch: str, num_classes: int = 1000) -> None:
        super().__init__()
        cfg = MOBILENETV3_LARGE
        self.conv = ConvBNLayer(3, cfg.stem, 3, 2, act=cfg.act)
        self.blocks = nn.Sequential()
        attention, cin, k = [], cfg.stem, 0
        for i, stage in enumerate(cfg.stages[:-1]):
            j = 0
            for row in stage:
                for _ in range(row.repeats):
                    mid = make_divisible(cin * row.exp)
                    block = ResidualUnit(cin, mid, row.out, row.kernel,
                                         row.stride if j == 0 else 1, row.se, row.act or cfg.act)
                    self.blocks.add_sublayer(str(k), block)
                    if row.se:
                        attention.append(_attention(f"blocks.{k}", "mid_se", i + 1, j + 1,
                                                    block.mid_se, "C // 4"))
                    cin, j, k = row.out, j + 1, k + 1
        last = cfg.stages[-1][0]
        self.last_second_conv = ConvBNLayer(cin, last.out, 1, act=cfg.act)
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = _conv(last.out, cfg.features, 1)
        self.hardswish = nn.Hardswish()
        self.dropout = nn.Dropout(p=0.2, mode="downscale_in_infer")
        self.fc = nn.Linear(cfg.features, int(num_classes))
        self.num_features = cfg.features
        self.head_key = "fc.weight"
        self.info = ModelInfo(arch=arch, reduction=4.0, num_classes=int(num_classes),
                              width=FULL_WIDTH, se_impl="conv", layout="paddleclas",
                              blocks=tuple(attention))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.last_second_conv(self.blocks(self.conv(x)))
        x = self.dropout(self.hardswish(self.last_conv(self.avg_pool(x))))
        return self.fc(x.reshape([0, -1]))


class PaddleClasDepthwiseSeparable(nn.Layer):
    """PP-LCNet's block: dw_conv (BN + hardswish), se, pw_conv (BN + hardswish)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, se: bool) -> None:
        super().__init__()
        self.dw_conv = ConvBNLayer(cin, cin, kernel, stride, groups=cin, act="hardswish")
        self.se = _paddleclas_se(cin, PADDLE_HARD_SIGMOID) if se else None
        self.pw_conv = ConvBNLayer(cin, cout, 1, act="hardswish")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.dw_conv(x)
        if self.se is not None:
            x = self.se(x)
        return self.pw_conv(x)


# pp_lcnet.py NET_CONFIG at scale 1.0: blocks2..blocks6, each (kernel, in, out, stride, se)
PPLCNET_STAGES = (
    ((3, 16, 32, 1, False),),
    ((3, 32, 64, 2, False), (3, 64, 64, 1, False)),
    ((3, 64, 128, 2, False), (3, 128, 128, 1, False)),
    ((3, 128, 256, 2, False),) + ((5, 256, 256, 1, False),) * 5,
    ((5, 256, 512, 2, True), (5, 512, 512, 1, True)),
)


class PPLCNet(nn.Layer):
    """PaddleClas's PPLCNet (scale 1.0): conv1, blocks2..blocks6, pooled last_conv (no bias)
    + hardswish + dropout, fc. Stage numbers are PaddleClas's (blocks6 is stage 6)."""

    def __init__(self, arch: str, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = ConvBNLayer(3, 16, 3, 2, act="hardswish")
        attention = []
        for s, stage in enumerate(PPLCNET_STAGES, start=2):
            seq = nn.Sequential(*[PaddleClasDepthwiseSeparable(cin, cout, k, stride, se)
                                  for k, cin, cout, stride, se in stage])
            self.add_sublayer(f"blocks{s}", seq)
            attention += [_attention(f"blocks{s}.{j}", "se", s, j + 1, block.se, "C // 4")
                          for j, block in enumerate(seq) if block.se is not None]
        self._stages = [getattr(self, f"blocks{s}") for s in range(2, 2 + len(PPLCNET_STAGES))]
        cin = PPLCNET_STAGES[-1][-1][2]
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = _conv(cin, 1280, 1)
        self.act = nn.Hardswish()
        self.dropout = nn.Dropout(p=0.2, mode="downscale_in_infer")
        self.fc = nn.Linear(1280, int(num_classes))
        self.num_features = 1280
        self.head_key = "fc.weight"
        self.info = ModelInfo(arch=arch, reduction=4.0, num_classes=int(num_classes),
                              width=FULL_WIDTH, se_impl="conv", layout="paddleclas",
                              blocks=tuple(attention))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.conv1(x)
        for stage in self._stages:
            x = stage(x)
        x = self.dropout(self.act(self.last_conv(self.avg_pool(x))))
        return self.fc(x.reshape([0, -1]))


# --- factories ----------------------------------------------------------------------------------

def _eval(model: nn.Layer) -> nn.Layer:
    model.eval()
    return model


def efficientnet_b0(num_classes: int = 1000) -> nn.Layer:
    """timm ``efficientnet_b0`` (16 SE blocks, sigmoid gates), eval mode, untrained."""
    return _eval(TimmMobileNet("efficientnet_b0", EFFICIENTNET_B0, num_classes))


def mobilenetv3_large_100(num_classes: int = 1000) -> nn.Layer:
    """timm ``mobilenetv3_large_100`` (8 SE blocks, hard sigmoid 1/6), eval mode, untrained."""
    return _eval(TimmMobileNet("mobilenetv3_large_100", MOBILENETV3_LARGE, num_classes))


def lcnet_100(num_classes: int = 1000) -> nn.Layer:
    """timm ``lcnet_100`` (2 SE blocks, hard sigmoid 1/6), eval mode, untrained."""
    return _eval(TimmMobileNet("lcnet_100", LCNET_100, num_classes))


def mobilenetv3_large_x1_0(num_classes: int = 1000) -> nn.Layer:
    """PaddleClas ``MobileNetV3_large_x1_0`` (8 SE blocks, hard sigmoid 0.2), eval mode."""
    return _eval(PaddleClasMobileNetV3("mobilenetv3_large_x1_0", num_classes))


def pplcnet_x1_0(num_classes: int = 1000) -> nn.Layer:
    """PaddleClas ``PPLCNet_x1_0`` (2 SE blocks, nn.Hardsigmoid), eval mode, untrained."""
    return _eval(PPLCNet("pplcnet_x1_0", num_classes))
