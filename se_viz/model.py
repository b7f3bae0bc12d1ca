"""SE-ResNet-50 in PaddlePaddle: the SE block, the bottleneck, two layouts and their factories.

Two layouts share one class (`SEResNet`), the way timm parameterises ResNets:

* ``se_resnet50_vd`` - PaddleClas's SE_ResNet50_vd: deep 3x3 stem, avg-pool ("vd") shortcut.
  Module names are PaddleClas's own, so its ImageNet ``.pdparams`` loads without a key map.
* ``se_resnet50`` - the canonical SENet layout of timm's ``seresnet50``: 7x7 stem, strided 1x1
  shortcut. timm checkpoints load through the key map in ``se_viz.weights``.

Blocks are named as in the paper: ``SE_{stage}_{block}`` with stages 2..5 and blocks from 1
(PaddleClas's ``bb_{s}_{i}`` is ``SE_{s+2}_{i+1}``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import paddle
from paddle import nn

ARCHS = ("se_resnet50_vd", "se_resnet50")
DEPTHS = (3, 4, 6, 3)
EXPANSION = 4
BN_EPS = 1e-5
BN_MOMENTUM = 0.9


def paper_name(stage: int, index: int) -> str:
    """Paper block name for PaddleClas stage ``stage`` (0..3) and block ``index`` (0-based)."""
    return f"SE_{stage + 2}_{index + 1}"


def hidden_width(channels: int, reduction: float) -> int:
    """Width of the SE bottleneck: int(C / r), at least 1 (PaddleClas's rule)."""
    if not reduction >= 1:
        raise ValueError(f"reduction ratio r must be >= 1, got {reduction!r}")
    return max(1, int(channels / reduction))


class SEBlock(nn.Layer):
    """Squeeze-and-Excitation: s = sigmoid(W2 relu(W1 GAP(x))), output x * s.

    ``gate`` is its own parameter-free sublayer so a single forward hook on it yields
    ``s`` of shape (N, C) in [0, 1]; ``pool`` yields the squeeze values (N, C, 1, 1).
    """

    def __init__(self, channels: int, reduction: float = 16) -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction)
        self.channels = channels
        self.hidden = hidden
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.squeeze = nn.Linear(channels, hidden)
        self.relu = nn.ReLU()
        self.excitation = nn.Linear(hidden, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = paddle.flatten(self.pool(x), 1)
        s = self.gate(self.excitation(self.relu(self.squeeze(y))))
        return x * s.unsqueeze([2, 3])


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
                 shortcut: str | None) -> None:
        super().__init__()
        cout = planes * EXPANSION
        self.conv0 = ConvBN(cin, planes, 1, act=True)
        self.conv1 = ConvBN(planes, planes, 3, stride=stride, act=True)
        self.conv2 = ConvBN(planes, cout, 1)
        self.scale = SEBlock(cout, reduction)
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


@dataclass(frozen=True)
class ModelInfo:
    """Static description of a built model, shown wherever results are shown."""

    arch: str
    reduction: float
    num_classes: int
    width: int = 64
    weights: str = "untrained"          # "untrained", a file path, or "pretrained:<file>"
    layout: str = "se_viz"              # layout the weights file had
    sha256: str | None = None
    pretrained: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def untrained(self) -> bool:
        return self.weights == "untrained"


class SEResNet(nn.Layer):
    """SE-ResNet with bottleneck blocks; ``arch`` picks the stem and shortcut of a layout.

    ``width`` is the first stage's bottleneck width (64 for SE-ResNet-50; tests use 8).
    Input (N, 3, H, W) float32, output logits (N, num_classes).
    """

    def __init__(self, arch: str = "se_resnet50_vd", reduction: float = 16,
                 num_classes: int = 1000, width: int = 64,
                 depths: tuple[int, ...] = DEPTHS) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
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
        for s, depth in enumerate(depths):
            planes = width * 2 ** s
            for i in range(depth):
                stride = 2 if (i == 0 and s > 0) else 1
                kind = None if i > 0 else ("vd" if arch == "se_resnet50_vd" else "conv")
                block = Bottleneck(cin, planes, stride, reduction, kind)
                path = f"bb_{s}_{i}"
                self.add_sublayer(path, block)
                self.blocks.append((paper_name(s, i), path, block))
                cin = planes * EXPANSION
        self.pool2d_avg = nn.AdaptiveAvgPool2D(1)
        self.out = nn.Linear(cin, int(num_classes))
        self.num_features = cin
        self.info = ModelInfo(arch=arch, reduction=float(reduction),
                              num_classes=int(num_classes), width=width)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for layer in self._stem:
            x = layer(x)
        x = self.pool2d_max(x)
        for _, _, block in self.blocks:
            x = block(x)
        return self.out(paddle.flatten(self.pool2d_avg(x), 1))


def se_blocks(model: nn.Layer) -> list[tuple[str, str, SEBlock]]:
    """(paper name, module path of the SE layer, SE layer) for every block, in forward order."""
    if not isinstance(model, SEResNet):
        raise TypeError(f"expected an se_viz SEResNet, got {type(model).__name__}")
    return [(name, f"{path}.scale", block.scale) for name, path, block in model.blocks]


def block_names(model: nn.Layer) -> list[str]:
    """Paper names ``SE_2_1`` ... in forward order."""
    return [name for name, _, _ in se_blocks(model)]


def init_seeded(model: nn.Layer, seed: int = 0) -> nn.Layer:
    """Deterministic initialisation from numpy (independent of Paddle's global RNG).

    Convolutions: He-normal; the last BN of each bottleneck: gamma 0.5 (keeps the
    untrained residual stream bounded); other BN: gamma 1, beta 0, mean 0, var 1;
    Linear: uniform(+-1/sqrt(fan_in)) weights and biases.
    """
    rng = np.random.default_rng(seed)
    for name, p in model.state_dict().items():
        shape = tuple(p.shape)
        if name.endswith("_conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith("_batch_norm.weight"):
            value = np.full(shape, 0.5 if ".conv2." in name else 1.0)
        elif name.endswith(("_batch_norm.bias", "_batch_norm._mean")):
            value = np.zeros(shape)
        elif name.endswith("_batch_norm._variance"):
            value = np.ones(shape)
        elif name.endswith(".weight"):  # Linear [in, out]
            bound = 1.0 / np.sqrt(shape[0])
            value = rng.uniform(-bound, bound, shape)
        elif name.endswith(".bias"):
            bound = 1.0 / np.sqrt(model.state_dict()[name[:-4] + "weight"].shape[0])
            value = rng.uniform(-bound, bound, shape)
        else:  # pragma: no cover - every SEResNet key is handled above
            raise KeyError(f"no initialiser for {name}")
        p.set_value(value.astype(np.float32))
    return model


def _factory(arch: str, reduction: float, num_classes: int, width: int,
             seed: int | None) -> SEResNet:
    model = SEResNet(arch, reduction=reduction, num_classes=num_classes, width=width)
    if seed is not None:
        init_seeded(model, seed)
    model.eval()
    return model


def se_resnet50_vd(reduction: float = 16, num_classes: int = 1000, width: int = 64,
                   seed: int | None = 0) -> SEResNet:
    """PaddleClas SE_ResNet50_vd layout, seeded-initialised, in eval mode."""
    return _factory("se_resnet50_vd", reduction, num_classes, width, seed)


def se_resnet50(reduction: float = 16, num_classes: int = 1000, width: int = 64,
                seed: int | None = 0) -> SEResNet:
    """Canonical SE-ResNet-50 layout (timm ``seresnet50``), seeded-initialised, in eval mode."""
    return _factory("se_resnet50", reduction, num_classes, width, seed)


FACTORIES = {"se_resnet50_vd": se_resnet50_vd, "se_resnet50": se_resnet50}


def count_parameters(model: nn.Layer) -> int:
    """Number of trainable parameters (BN running statistics excluded)."""
    return int(sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable))


@dataclass(frozen=True)
class SEParameters:
    """One SE block's weights as numpy: w1 (C, h), b1 (h,), w2 (h, C), b2 (C,)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray


def se_parameters(model: nn.Layer) -> dict[str, SEParameters]:
    """Block name -> its SE weights as float32 numpy copies (Paddle Linear is [in, out])."""
    return {name: SEParameters(se.squeeze.weight.numpy().copy(), se.squeeze.bias.numpy().copy(),
                               se.excitation.weight.numpy().copy(),
                               se.excitation.bias.numpy().copy())
            for name, _, se in se_blocks(model)}


def set_cpu_threads(n: int | None = None) -> int:
    """Let Paddle's CPU kernels use ``n`` threads (default `cpu_threads()`); returns it.

    ``import paddle`` leaves Paddle at one thread; this is called once when this module
    is imported, so every core is used.
    """
    n = cpu_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n!r}")
    paddle.base.core.set_num_threads(n)
    return n


def keep_eager_mode(keep: list) -> None:
    """Keep Paddle in eager (dygraph) mode in this thread and in threads started later.

    Paddle 3.x enables eager mode at import with a context manager stored in a thread-local.
    When the thread that imported Paddle ends (Streamlit imports the app in a short-lived
    script thread), the guard is garbage-collected, its exit resets the process-wide tracer
    to None, and later threads run in static-graph mode ("conv2d(): argument must be Value,
    but got EagerParamBase"). ``keep`` (a list that lives as long as the process) holds the
    guard so that this never happens; a thread that still finds eager mode off turns it on.
    """
    from paddle.base import framework

    if not paddle.in_dynamic_mode():
        paddle.disable_static()
    guard = framework.global_var._functional_dygraph_context_manager
    if guard is not None and all(g is not guard for g in keep):
        keep.append(guard)


def cpu_threads() -> int:
    """Threads for CPU inference: ``$SE_VIZ_THREADS`` if set to a positive integer, else
    every core this process may run on (its CPU affinity)."""
    env = os.environ.get("SE_VIZ_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


set_cpu_threads()
