"""Parameter and multiply-add counts of a built network, per stage, at any reduction ratio.

Counted from the model itself: its parameters, and one forward pass at the input size with
a `ShapeRecorder` noting how many output positions every Conv2D and Linear computes.
Conventions:

* "flops" are multiply-adds (MACs) of convolutions and linear layers only, batch 1, biases
  excluded: weight size x output positions, the convention of the paper's "3.87 GFLOPs" and
  of ``paddle.flops`` for these layer types. BatchNorm, ReLU, pooling, the residual add and
  the SE block's x * s rescaling are not counted; SE flops are its two layers, 2 * C * h.
* Parameters are the numel of trainable parameters (BN running statistics excluded).

Stages are the four bottleneck stages (paper conv2_x .. conv5_x); the stem and the
classifier head are in the totals only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import paddle

from paddle import nn

from ..arch import REDUCTION_RATIOS
from .hooks import ShapeRecorder, eval_mode, model_lock
from .model import attention_layers, count_parameters
from .networks import build


@dataclass(frozen=True)
class NetworkCosts:
    """Parameters and multiply-adds of one network at one input size (batch 1).

    stage_* tuples have one entry per stage of the network's attention blocks (``stages``,
    e.g. "stage 2" .. "stage 5" for SE-ResNet-50), summed over the network blocks that hold
    an attention block (stem, head and blocks without attention are in the totals only).
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
    stages: tuple[str, ...] = ()

    @property
    def gflops(self) -> float:
        """Total multiply-adds in units of 1e9 (the paper's "GFLOPs")."""
        return self.flops_total / 1e9

    @property
    def params_m(self) -> float:
        """Total parameters in millions."""
        return self.params_total / 1e6


def layer_positions(model: nn.Layer, input_size: int) -> dict[str, int]:
    """Sublayer path -> output positions per image of every Conv2D / Linear, from one
    forward pass of a (1, 3, input_size, input_size) zero image."""
    if int(input_size) < 1:
        raise ValueError(f"input_size must be a positive number of pixels, got {input_size!r}")
    x = paddle.zeros([1, 3, int(input_size), int(input_size)], dtype="float32")
    with model_lock(model), eval_mode(model), paddle.no_grad(), ShapeRecorder(model) as rec:
        model(x)
    return rec.positions


def model_costs(model: nn.Layer, input_size: int = 224, *,
                stride_in_1x1: bool = False) -> NetworkCosts:
    """Costs of a built se_viz network at a square ``input_size``.

    ``stride_in_1x1`` counts the network as if each downsampling bottleneck carried its
    stride on the first 1x1 conv instead of the 3x3 (the original ResNet / Caffe layout the
    SENet paper's 3.87 GFLOPs refer to; same parameters, 0.23 G fewer multiply-adds;
    SE-ResNet-50 only).
    """
    attention = attention_layers(model)  # TypeError for a layer that is no se_viz network
    if stride_in_1x1 and model.info.arch not in ("se_resnet50_vd", "se_resnet50"):
        raise ValueError("stride_in_1x1 describes SE-ResNet-50's bottleneck; "
                         f"{model.info.arch} has no such variant")
    positions = layer_positions(model, input_size)
    if stride_in_1x1:
        for _, path, _ in model.blocks:  # conv0 then computes at conv1's output size
            conv0, conv1 = f"{path}.conv0._conv", f"{path}.conv1._conv"
            positions[conv0] = min(positions[conv0], positions[conv1])
    macs = {path: int(np.prod(layer.weight.shape)) * positions[path]
            for path, layer in model.named_sublayers() if path in positions}
    labels = list(dict.fromkeys(b.stage_label for b, _ in attention))
    stage = {k: [0] * len(labels) for k in ("params", "se_params", "flops", "se_flops")}
    subs = dict(model.named_sublayers())
    for b, se in attention:
        s = labels.index(b.stage_label)
        stage["params"][s] += count_parameters(subs[b.block_path])
        stage["se_params"][s] += count_parameters(se)
        stage["flops"][s] += sum(v for p, v in macs.items() if p.startswith(b.block_path + "."))
        stage["se_flops"][s] += sum(v for p, v in macs.items() if p.startswith(b.path + "."))
    return NetworkCosts(
        arch=model.info.arch, reduction=float(model.info.reduction), input_size=int(input_size),
        params_total=count_parameters(model), params_se=sum(stage["se_params"]),
        flops_total=sum(macs.values()), flops_se=sum(stage["se_flops"]),
        stage_params=tuple(stage["params"]), stage_se_params=tuple(stage["se_params"]),
        stage_flops=tuple(stage["flops"]), stage_se_flops=tuple(stage["se_flops"]),
        width=model.info.width, stride_in_1x1=stride_in_1x1, stages=tuple(labels))


@lru_cache(maxsize=64)
def network_costs(arch: str, reduction: float | None = 16, input_size: int = 224,
                  width: int | None = None, *,
                  stride_in_1x1: bool = False) -> NetworkCosts:
    """Costs of ``arch`` (1000 classes) at reduction ``reduction`` (SE-ResNet-50; other
    networks have their own widths and take None), from a model built for it.

    Results are cached per argument set (`NetworkCosts` is frozen, so sharing is safe).
    """
    resnet50 = arch in ("se_resnet50_vd", "se_resnet50")
    options = {"reduction": reduction, **({"width": width} if width else {})}
    model = build(arch, **(options if resnet50 else {}))
    return model_costs(model, input_size, stride_in_1x1=stride_in_1x1)


def reduction_table(arch: str = "se_resnet50_vd",
                    ratios: Iterable[float] = REDUCTION_RATIOS,
                    input_size: int = 224) -> list[NetworkCosts]:
    """`network_costs` for each r in ``ratios`` (results cached per argument set)."""
    return list(_reduction_table(arch, tuple(ratios), int(input_size)))


@lru_cache(maxsize=16)
def _reduction_table(arch: str, ratios: tuple, input_size: int) -> tuple[NetworkCosts, ...]:
    return tuple(network_costs(arch, r, input_size) for r in ratios)
