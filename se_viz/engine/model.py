"""SE-ResNet-50 in PaddlePaddle: the SE block, the bottleneck, the network. Written once.

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

import numpy as np
import paddle
from paddle import nn

from ..arch import (BN_EPS, BN_MOMENTUM, DEPTHS, EXPANSION, FULL_WIDTH, ModelInfo,
                    check_arch, check_se_impl, hidden_width, module_path, paper_name)


class SEBlock(nn.Layer):
    """Squeeze-and-Excitation: s = gate(excitation(relu(squeeze(GAP(x))))), output x * s.

    ``gate`` is its own parameter-free sublayer (a sigmoid), so one forward hook on it yields
    ``s``: (N, C) for the linear layout, (N, C, 1, 1) for the conv layout. ``pool`` yields
    the squeeze values (N, C, 1, 1).
    """

    def __init__(self, channels: int, reduction: float = 16, impl: str = "linear") -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction)
        self.channels, self.hidden, self.impl = channels, hidden, check_se_impl(impl)
        self.pool = nn.AdaptiveAvgPool2D(1)
        if impl == "linear":
            self.squeeze = nn.Linear(channels, hidden)
            self.excitation = nn.Linear(hidden, channels)
        else:
            self.squeeze = nn.Conv2D(channels, hidden, 1)
            self.excitation = nn.Conv2D(hidden, channels, 1)
        self.relu = nn.ReLU()
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.pool(x)  # (N, C, 1, 1)
        if self.impl == "linear":  # reshape with 0 = "keep N": a constant shape when traced
            s = self.gate(self.excitation(self.relu(self.squeeze(y.reshape([0, -1])))))
            return x * s.reshape([0, -1, 1, 1])
        return x * self.gate(self.excitation(self.relu(self.squeeze(y))))


class ConvBN(nn.Layer):
    """Conv2D (no bias) + BatchNorm2D (+ ReLU), optionally after a 2x2 avg-pool (vd shortcut)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 act: bool = False, avg_down: bool = False) -> None:
        super().__init__()
        self._pool2d_avg = nn.AvgPool2D(2, 2, 0, ceil_mode=True) if avg_down else None
        self._conv = nn.Conv2D(cin, cout, kernel, stride=stride,
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
        self.scale = SEBlock(cout, reduction, se_impl)
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
        check_arch(arch)
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
                cin = planes * EXPANSION
        self.pool2d_avg = nn.AdaptiveAvgPool2D(1)
        self.out = nn.Linear(cin, int(num_classes))
        self.num_features = cin
        self.info = ModelInfo(arch=arch, reduction=float(reduction),
                              num_classes=int(num_classes), width=width, se_impl=se_impl)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for layer in self._stem:
            x = layer(x)
        x = self.pool2d_max(x)
        for _, _, block in self.blocks:
            x = block(x)
        return self.out(self.pool2d_avg(x).reshape([0, -1]))


def se_blocks(model: nn.Layer) -> list[tuple[str, str, SEBlock]]:
    """(paper name, module path of the SE layer, SE layer) for every block, in forward order."""
    if not isinstance(model, SEResNet):
        raise TypeError(f"expected an se_viz SEResNet, got {type(model).__name__}")
    return [(name, f"{path}.scale", block.scale) for name, path, block in model.blocks]


def count_parameters(layer: nn.Layer) -> int:
    """Number of trainable parameters (BN running statistics excluded)."""
    return int(sum(int(np.prod(p.shape)) for p in layer.parameters() if p.trainable))


def se_resnet50_vd(reduction: float = 16, num_classes: int = 1000, width: int = FULL_WIDTH,
                   se_impl: str = "linear") -> SEResNet:
    """PaddleClas SE_ResNet50_vd layout, in eval mode (untrained: `se_viz.build_model`
    adds weights)."""
    model = SEResNet("se_resnet50_vd", reduction, num_classes, width, se_impl)
    model.eval()
    return model


def se_resnet50(reduction: float = 16, num_classes: int = 1000, width: int = FULL_WIDTH,
                se_impl: str = "linear") -> SEResNet:
    """Canonical SE-ResNet-50 layout, timm's ``seresnet50``, in eval mode (untrained)."""
    model = SEResNet("se_resnet50", reduction, num_classes, width, se_impl)
    model.eval()
    return model


FACTORIES = {"se_resnet50_vd": se_resnet50_vd, "se_resnet50": se_resnet50}
