"""Parameter and multiply-add counts of SE-ResNet-50 at any reduction ratio r.

Counted analytically from a built (never run) `SEResNet`: each layer is walked with the
spatial size it sees, no hooks and no forward pass. Conventions:

* "flops" are multiply-adds (MACs) of convolutions and linear layers only, batch 1, biases
  excluded - the convention of the paper's "3.87 GFLOPs" and of ``paddle.flops`` for these
  two layer types. BatchNorm, ReLU, pooling, the residual add and the SE block's own
  x * s rescaling (C*H*W multiplies per block) are not counted.
* SE flops per block are therefore its two linear layers: C*h + h*C = 2*C*h.
* Parameters are the numel of trainable parameters (BN running statistics excluded), so
  ``params_total == model.count_parameters(model)``.

Stages are the four bottleneck stages (paper conv2_x .. conv5_x); the stem and the
classifier head are in the totals only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from paddle import nn

from .model import DEPTHS, Bottleneck, ConvBN, SEBlock, SEResNet

STAGES = len(DEPTHS)


@dataclass(frozen=True)
class NetworkCosts:
    """Parameters and multiply-adds of one network at one input size (batch 1).

    stage_* tuples have one entry per bottleneck stage (SE_2_x .. SE_5_x).
    """

    arch: str
    reduction: float
    input_size: int
    params_total: int
    params_se: int
    flops_total: int
    flops_se: int
    stage_params: tuple[int, ...]
    stage_se_params: tuple[int, ...]
    stage_flops: tuple[int, ...]
    stage_se_flops: tuple[int, ...]
    width: int = 64
    stride_in_1x1: bool = False

    @property
    def gflops(self) -> float:
        """Total multiply-adds in units of 1e9 (the paper's "GFLOPs")."""
        return self.flops_total / 1e9

    @property
    def params_m(self) -> float:
        """Total parameters in millions."""
        return self.params_total / 1e6


def _numel(layer: nn.Layer) -> int:
    return int(sum(int(np.prod(p.shape)) for p in layer.parameters() if p.trainable))


def _window_out(size: int, kernel: int, stride: int, padding: int, ceil: bool = False) -> int:
    """Output length of a conv/pool window along one axis."""
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    if out < 1:
        raise ValueError(f"a feature map of size {size} is too small for a {kernel}x{kernel} "
                         "window; use a larger input_size")
    return out


def _first(value: int | Iterable[int]) -> int:
    return int(value) if isinstance(value, int) else int(list(value)[0])


def _conv_bn(layer: ConvBN, size: int, stride: int | None = None) -> tuple[int, int]:
    """(multiply-adds, output size) of a ConvBN (with its optional 2x2 avg-pool) at ``size``;
    ``stride`` overrides the conv's own stride."""
    pool = layer._pool2d_avg
    if pool is not None:
        size = _window_out(size, _first(pool.ksize), _first(pool.stride),
                           _first(pool.padding), bool(pool.ceil_mode))
    conv = layer._conv
    kernel = _first(conv._kernel_size)
    stride = _first(conv._stride) if stride is None else stride
    out = _window_out(size, kernel, stride, _first(conv._updated_padding))
    return int(np.prod(conv.weight.shape)) * out * out, out


def _se_flops(se: SEBlock) -> int:
    """Multiply-adds of the SE block's two linear layers: 2 * C * h."""
    return int(np.prod(se.squeeze.weight.shape) + np.prod(se.excitation.weight.shape))


def _bottleneck(block: Bottleneck, size: int, stride_in_1x1: bool) -> tuple[int, int, int]:
    """(block multiply-adds, of which SE, output size)."""
    stride = _first(block.conv1._conv._stride)
    moved = stride_in_1x1 and stride > 1
    f0, s0 = _conv_bn(block.conv0, size, stride if moved else None)
    f1, s1 = _conv_bn(block.conv1, s0, 1 if moved else None)
    f2, s2 = _conv_bn(block.conv2, s1)
    se = _se_flops(block.scale)
    short = _conv_bn(block.short, size)[0] if block.short is not None else 0
    return f0 + f1 + f2 + se + short, se, s2


def model_costs(model: SEResNet, input_size: int = 224, *,
                stride_in_1x1: bool = False) -> NetworkCosts:
    """Costs of an already built `SEResNet` at a square ``input_size`` (no forward pass).

    ``stride_in_1x1`` counts the network as if each downsampling bottleneck carried its
    stride on the first 1x1 conv instead of the 3x3 (the original ResNet / Caffe layout the
    SENet paper's 3.87 GFLOPs refer to; same parameters, 0.23 G fewer multiply-adds).
    """
    if not isinstance(model, SEResNet):
        raise TypeError(f"expected an se_viz SEResNet, got {type(model).__name__}")
    if int(input_size) < 1:
        raise ValueError(f"input_size must be a positive number of pixels, got {input_size!r}")
    size, flops = int(input_size), 0
    for layer in model._stem:
        f, size = _conv_bn(layer, size)
        flops += f
    pool = model.pool2d_max
    size = _window_out(size, _first(pool.ksize), _first(pool.stride), _first(pool.padding),
                       bool(pool.ceil_mode))
    stage = {k: [0] * STAGES for k in ("params", "se_params", "flops", "se_flops")}
    for _, path, block in model.blocks:
        s = int(path.split("_")[1])
        f, f_se, size = _bottleneck(block, size, stride_in_1x1)
        stage["flops"][s] += f
        stage["se_flops"][s] += f_se
        stage["params"][s] += _numel(block)
        stage["se_params"][s] += _numel(block.scale)
    flops += sum(stage["flops"]) + int(np.prod(model.out.weight.shape))
    return NetworkCosts(
        arch=model.arch, reduction=float(model.info.reduction), input_size=int(input_size),
        params_total=_numel(model), params_se=sum(stage["se_params"]), flops_total=flops,
        flops_se=sum(stage["se_flops"]), stage_params=tuple(stage["params"]),
        stage_se_params=tuple(stage["se_params"]), stage_flops=tuple(stage["flops"]),
        stage_se_flops=tuple(stage["se_flops"]), width=model.info.width,
        stride_in_1x1=stride_in_1x1)


@lru_cache(maxsize=64)
def network_costs(arch: str, reduction: float, input_size: int = 224, width: int = 64, *,
                  stride_in_1x1: bool = False) -> NetworkCosts:
    """Costs of ``arch`` (1000 classes) at reduction ``reduction``; builds the net, never runs it.

    Results are cached per argument set (`NetworkCosts` is frozen, so sharing is safe).
    """
    model = SEResNet(arch, reduction=reduction, width=width)
    return model_costs(model, input_size, stride_in_1x1=stride_in_1x1)


def reduction_table(arch: str = "se_resnet50_vd",
                    ratios: Iterable[float] = (1, 2, 4, 8, 16, 32, 64),
                    input_size: int = 224) -> list[NetworkCosts]:
    """`network_costs` for each r in ``ratios`` (results cached per argument set)."""
    return list(_reduction_table(arch, tuple(ratios), int(input_size)))


@lru_cache(maxsize=16)
def _reduction_table(arch: str, ratios: tuple, input_size: int) -> tuple[NetworkCosts, ...]:
    return tuple(network_costs(arch, r, input_size) for r in ratios)
