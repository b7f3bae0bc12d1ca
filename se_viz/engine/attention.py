"""Channel-attention blocks: one configurable SE block (as timm's ``SEModule``) and ECA.

Both keep the same parts as sublayers, so one recorder (`se_viz.engine.hooks`) serves every
network: ``pool`` yields the squeeze values (N, C, 1, 1); ``gate`` is a parameter-free
sublayer whose output is the gates ``s``; ``act`` (SE only) is the excitation's inner
activation, where hidden units can be masked. The fully connected layers are registered
under the names the network's weight files use (``squeeze``/``excitation`` for PaddleClas's
SE-ResNets, ``fc1``/``fc2`` for timm's, ``conv_reduce``/``conv_expand`` for EfficientNet,
``conv1``/``conv2`` for PaddleClas's mobile networks), and reachable as ``reduce``/``expand``.
"""

from __future__ import annotations

import math

import paddle
from paddle import nn
from paddle.nn import functional as F

from ..arch import check_se_impl
from ..blocks import Gate, SIGMOID


class HardSigmoid(nn.Layer):
    """clip(slope * x + offset, 0, 1), parameter-free (timm's relu6(x + 3) / 6 at 1/6, 0.5)."""

    def __init__(self, slope: float = 1.0 / 6.0, offset: float = 0.5) -> None:
        super().__init__()
        self.slope, self.offset = float(slope), float(offset)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.hardsigmoid(x, slope=self.slope, offset=self.offset)


def gate_layer(gate: Gate) -> nn.Layer:
    return nn.Sigmoid() if gate.kind == "sigmoid" else HardSigmoid(gate.slope, gate.offset)


ACTS = {"relu": nn.ReLU, "silu": nn.Silu, "relu6": nn.ReLU6}


def act_layer(name: str) -> nn.Layer:
    if name not in ACTS:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTS)}")
    return ACTS[name]()


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """timm's channel rounding: nearest multiple of ``divisor``, never below ``round_limit``
    of ``v`` (so 0.25 x 72 = 18 -> 24)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return int(new_v)


def eca_kernel(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA-Net's adaptive kernel size: the odd number nearest |log2(C) + beta| / gamma, >= 3."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class SEModule(nn.Layer):
    """Squeeze-and-Excitation: s = gate(expand(act(reduce(GAP(x))))), output x * s.

    channels C, hidden width h (already derived by the network: int(C/r), a rounded
    fraction, or a fraction of the block's input), ``act`` the inner activation, ``gate``
    the gate function, ``impl`` "linear" (nn.Linear, Paddle [in, out] weights) or "conv"
    (1x1 nn.Conv2D), ``names`` the two layers' names in weight files.
    Gates: (N, C) for "linear", (N, C, 1, 1) for "conv".
    """

    kind = "se"

    def __init__(self, channels: int, hidden: int, *, act: str = "relu", gate: Gate = SIGMOID,
                 impl: str = "conv", names: tuple[str, str] = ("fc1", "fc2")) -> None:
        super().__init__()
        check_se_impl(impl)
        if int(hidden) < 1:
            raise ValueError(f"SE hidden width must be >= 1, got {hidden!r}")
        self.channels, self.hidden, self.impl = int(channels), int(hidden), impl
        self.gate_spec, self.act_name, self.names = gate, act, tuple(names)
        self.pool = nn.AdaptiveAvgPool2D(1)
        layer = nn.Linear if impl == "linear" else (lambda a, b: nn.Conv2D(a, b, 1))
        self.add_sublayer(names[0], layer(self.channels, self.hidden))
        self.add_sublayer(names[1], layer(self.hidden, self.channels))
        self.act = act_layer(act)
        self.gate = gate_layer(gate)

    @property
    def reduce(self) -> nn.Layer:
        return getattr(self, self.names[0])

    @property
    def expand(self) -> nn.Layer:
        return getattr(self, self.names[1])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.pool(x)  # (N, C, 1, 1)
        if self.impl == "linear":  # reshape with 0 = "keep N": a constant shape when traced
            s = self.gate(self.expand(self.act(self.reduce(y.reshape([0, -1])))))
            return x * s.reshape([0, -1, 1, 1])
        return x * self.gate(self.expand(self.act(self.reduce(y))))


class EcaModule(nn.Layer):
    """Efficient Channel Attention: s = gate(conv1d_k(GAP(x)) across channels), x * s.

    No bottleneck and no r: one 1-D convolution of ``kernel`` taps (``conv``, no bias) over
    the channel axis. Gates (N, 1, C).
    """

    kind = "eca"

    def __init__(self, channels: int, kernel: int | None = None, gate: Gate = SIGMOID) -> None:
        super().__init__()
        self.channels = int(channels)
        self.kernel = int(kernel or eca_kernel(self.channels))
        self.hidden = None
        self.gate_spec = gate
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.conv = nn.Conv1D(1, 1, self.kernel, padding=(self.kernel - 1) // 2,
                              bias_attr=False)
        self.gate = gate_layer(gate)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.pool(x).reshape([0, 1, -1])  # (N, 1, C)
        return x * self.gate(self.conv(y)).reshape([0, -1, 1, 1])
