"""SE-ResNet-50 in PaddlePaddle: the bottleneck and the network, in its two original layouts.

Two layouts share one class (`SEResNet`), the way timm parameterises ResNets:

* ``se_resnet50_vd`` - PaddleClas's SE_ResNet50_vd: deep 3x3 stem, avg-pool ("vd") shortcut.
  Module names are PaddleClas's own, so its ImageNet ``.pdparams`` loads without a key map.
* ``se_resnet50`` - the canonical SENet layout of timm's ``seresnet50``: 7x7 stem, strided 1x1
  shortcut. timm checkpoints load through the key map in `se_viz.engine.weights`.

The SE block's two fully connected layers are ``nn.Linear`` (``se_impl="linear"``, as
PaddleClas) or 1x1 ``nn.Conv2D`` (``"conv"``, as timm); both compute the same numbers from
the same weights. Everything else in se_viz (the fast graph, the costs) is derived from
this file by running or tracing its forward.
"""

from __future__ import annotations

import paddle
from paddle import nn

from ...arch import (BN_EPS, BN_MOMENTUM, DEPTHS, EXPANSION, FULL_WIDTH, ModelInfo,
                     check_se_impl, hidden_width, module_path, paper_name)
from ...blocks import AttentionBlock
from ..attention import SEModule


def se_block(channels: int, reduction: float, impl: str) -> SEModule:
    """PaddleClas's SE layer: hidden int(C / r), ReLU, sigmoid; layers ``squeeze`` and
    ``excitation`` (nn.Linear as PaddleClas, or 1x1 conv as timm: the same numbers)."""
    return SEModule(channels, hidden_width(channels, reduction), impl=check_se_impl(impl),
                    names=("squeeze", "excitation"))


class ConvBN(nn.Layer):
    """PaddleClas's ``ConvBNLayer``: Conv2D (no bias, ``groups``) + BatchNorm2D (+ ReLU),
    optionally after a 2x2 avg-pool in ceil mode (vd shortcut)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 act: bool = False, avg_down: bool = False, groups: int = 1) -> None:
        super().__init__()
        self._pool2d_avg = nn.AvgPool2D(2, 2, 0, ceil_mode=True) if avg_down else None
        self._conv = nn.Conv2D(cin, cout, kernel, stride=stride, groups=groups,
                               padding=(kernel - 1) // 2, bias_attr=False)
        self._batch_norm = nn.BatchNorm2D(cout, momentum=BN_MOMENTUM, epsilon=BN_EPS)
        self._act = nn.ReLU() if act else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self._pool2d_avg is not None:
            x = self._pool2d_avg(x)
        x = self._batch_norm(self._conv(x))
        return self._act(x) if self._act is not None else x


class Bottleneck(nn.Layer):
    """1x1 -> 3x3 (carries the stride) -> 1x1 -> SE, plus shortcut, then ReLU."""

    def __init__(self, cin: int, planes: int, stride: int, reduction: float,
                 shortcut: str | None, se_impl: str = "linear") -> None:
        super().__init__()
        cout = planes * EXPANSION
        self.conv0 = ConvBN(cin, planes, 1, act=True)
        self.conv1 = ConvBN(planes, planes, 3, stride=stride, act=True)
        self.conv2 = ConvBN(planes, cout, 1)
        self.scale = se_block(cout, reduction, se_impl)
        if shortcut == "vd":  # PaddleClas: avg-pool then 1x1 conv (stride-1 conv)
            self.short = ConvBN(cin, cout, 1, avg_down=stride > 1)
        elif shortcut == "conv":  # canonical: strided 1x1 conv
            self.short = ConvBN(cin, cout, 1, stride=stride)
        else:
            self.short = None
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.scale(self.conv2(self.conv1(self.conv0(x))))
        short = self.short(x) if self.short is not None else x
        return self.relu(short + y)


class SEResNet(nn.Layer):
    """SE-ResNet with bottleneck blocks; ``arch`` picks the stem and shortcut of a layout.

    ``width`` is the first stage's bottleneck width (64 for SE-ResNet-50; tests use 8).
    Input (N, 3, H, W) float32, output logits (N, num_classes).
    """

    def __init__(self, arch: str = "se_resnet50_vd", reduction: float = 16,
                 num_classes: int = 1000, width: int = FULL_WIDTH,
                 se_impl: str = "linear") -> None:
        super().__init__()
        if arch not in FACTORIES:
            raise ValueError(f"SEResNet builds {' or '.join(FACTORIES)}, not {arch!r}")
        check_se_impl(se_impl)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        hidden_width(EXPANSION * width, reduction)  # validates r early
        self.arch = arch
        if arch == "se_resnet50_vd":
            half = max(1, width // 2)
            self.conv1_1 = ConvBN(3, half, 3, stride=2, act=True)
            self.conv1_2 = ConvBN(half, half, 3, act=True)
            self.conv1_3 = ConvBN(half, width, 3, act=True)
            stem = [self.conv1_1, self.conv1_2, self.conv1_3]
        else:
            self.conv1 = ConvBN(3, width, 7, stride=2, act=True)
            stem = [self.conv1]
        self.pool2d_max = nn.MaxPool2D(3, 2, 1)
        self._stem = stem
        self.blocks: list[tuple[str, str, Bottleneck]] = []
        attention = []
        cin = width
        for s, depth in enumerate(DEPTHS):
            planes = width * 2 ** s
            for i in range(depth):
                stride = 2 if (i == 0 and s > 0) else 1
                kind = None if i > 0 else ("vd" if arch == "se_resnet50_vd" else "conv")
                block = Bottleneck(cin, planes, stride, reduction, kind, se_impl)
                path = module_path(s, i)
                self.add_sublayer(path, block)
                self.blocks.append((paper_name(s, i), path, block))
                attention.append(AttentionBlock(
                    paper_name(s, i), f"{path}.scale", path, stage=s + 2, index=i + 1,
                    channels=block.scale.channels, hidden=block.scale.hidden,
                    width_rule=f"int(C / r), r = {float(reduction):g}"))
                cin = planes * EXPANSION
        self.pool2d_avg = nn.AdaptiveAvgPool2D(1)
        self.out = nn.Linear(cin, int(num_classes))
        self.num_features = cin
        self.head_key = "out.weight"
        self.info = ModelInfo(arch=arch, reduction=float(reduction),
                              num_classes=int(num_classes), width=width, se_impl=se_impl,
                              blocks=tuple(attention))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for layer in self._stem:
            x = layer(x)
        x = self.pool2d_max(x)
        for _, _, block in self.blocks:
            x = block(x)
        return self.out(self.pool2d_avg(x).reshape([0, -1]))


def se_resnet50_vd(num_classes: int = 1000, reduction: float = 16, width: int = FULL_WIDTH,
                   se_impl: str = "linear") -> SEResNet:
    """PaddleClas SE_ResNet50_vd layout, in eval mode (untrained: `se_viz.build_model`
    adds weights)."""
    model = SEResNet("se_resnet50_vd", reduction, num_classes, width, se_impl)
    model.eval()
    return model


def se_resnet50(num_classes: int = 1000, reduction: float = 16, width: int = FULL_WIDTH,
                se_impl: str = "linear") -> SEResNet:
    """Canonical SE-ResNet-50 layout, timm's ``seresnet50``, in eval mode (untrained)."""
    model = SEResNet("se_resnet50", reduction, num_classes, width, se_impl)
    model.eval()
    return model


FACTORIES = {"se_resnet50_vd": None, "se_resnet50": None}  # the layouts SEResNet builds
