"""The SENet tutorial's two Paddle SE layers, in its own words, and its published bug.

The tutorial writes the SE block twice:

* `SELayer1`: ``avg_pool`` then ``fc`` = Linear(C, C // r) -> ReLU -> Linear(C // r, C)
  -> Sigmoid on the flattened (N, C) squeeze, reshaped back to (N, C, 1, 1): ``x * y``.
* `SELayer2`: ``squeeze`` (the pool) then ``excitation`` = 1x1 Conv2D -> ReLU -> 1x1 Conv2D
  -> Sigmoid on the (N, C, 1, 1) squeeze, no reshaping: ``x * y``.

As published, SELayer2's forward reads ``y=self.squeeze(x)`` then ``y=self.excitation(x)``:
the excitation runs on the full map ``x``, not on the squeezed ``y``. That computes a
different gate for every pixel from that pixel's channels alone, with no global context:
it is not SE. `SELayer2AsPublished` keeps that forward only to show the difference; the
intended line is ``y=self.excitation(y)``.

Linear weights are [in, out] in Paddle and 1x1 conv weights [out, in, 1, 1];
`load_se` / `se_of` convert between the layers and `se_viz.results.SEParameters` (the
Linear form se_viz keeps), so the network's trained weights run in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle
from paddle import nn

from ..results import SEParameters
from .weights import conv_from_linear, linear_from_conv

__all__ = ["SELayer1", "SELayer2", "SELayer2AsPublished", "load_se", "se_of",
           "conv_from_linear", "linear_from_conv", "LayerRun", "run_layers"]


class SELayer1(nn.Layer):
    """The tutorial's SE layer with fully connected layers (nn.Linear)."""

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Sequential(
            nn.Linear(in_channels, in_channels // reduction),
            nn.ReLU(),
            nn.Linear(in_channels // reduction, in_channels),
            nn.Sigmoid())

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b, c = x.shape[0], x.shape[1]
        y = self.avg_pool(x).reshape([b, c])
        y = self.fc(y).reshape([b, c, 1, 1])
        return x * y


class SELayer2(nn.Layer):
    """The tutorial's SE layer with 1x1 convolutions, with the intended forward."""

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool2D(1)
        self.excitation = nn.Sequential(
            nn.Conv2D(in_channels, in_channels // reduction, 1, 1, 0),
            nn.ReLU(),
            nn.Conv2D(in_channels // reduction, in_channels, 1, 1, 0),
            nn.Sigmoid())

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.squeeze(x)
        y = self.excitation(y)
        out = x * y
        return out


class SELayer2AsPublished(SELayer2):
    """SELayer2 with the tutorial's forward as published: the excitation sees ``x``."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.squeeze(x)  # computed, then not used: the bug
        y = self.excitation(x)
        out = x * y
        return out


def _fc_layers(layer: nn.Layer) -> tuple[nn.Layer, nn.Layer]:
    if isinstance(layer, SELayer1):
        return layer.fc[0], layer.fc[2]
    if isinstance(layer, SELayer2):
        return layer.excitation[0], layer.excitation[2]
    raise TypeError(f"expected SELayer1 or SELayer2, got {type(layer).__name__}")


def load_se(layer: nn.Layer, params: SEParameters) -> nn.Layer:
    """Put ``params`` (Linear form: w1 (C, h), b1, w2 (h, C), b2) into an SELayer1 (as they
    are) or SELayer2 (as 1x1 conv weights [out, in, 1, 1]); returns the layer, in eval mode."""
    first, second = _fc_layers(layer)
    convert = conv_from_linear if isinstance(layer, SELayer2) else np.asarray
    for fc, w, b in ((first, params.w1, params.b1), (second, params.w2, params.b2)):
        w = convert(np.asarray(w, np.float32))
        if tuple(fc.weight.shape) != w.shape:
            raise ValueError(f"{type(layer).__name__} expects {fc.weight.shape}, the "
                             f"parameters give {list(w.shape)}: build it with the block's "
                             "channels and reduction")
        fc.weight.set_value(w)
        fc.bias.set_value(np.asarray(b, np.float32))
    layer.eval()
    return layer


def se_of(layer: nn.Layer) -> SEParameters:
    """The weights of an SELayer1 or SELayer2 in the Linear form."""
    first, second = _fc_layers(layer)
    convert = linear_from_conv if isinstance(layer, SELayer2) else np.ascontiguousarray
    return SEParameters(convert(first.weight.numpy()), first.bias.numpy().copy(),
                        convert(second.weight.numpy()), second.bias.numpy().copy())


@dataclass(frozen=True)
class LayerRun:
    """The tutorial's layers run on one block input U (C, H, W) with that block's weights.

    out1, out2: SELayer1 and SELayer2 outputs (C, H, W); published: SELayer2AsPublished's
    output (C, H, W); published_gates: its per-pixel gates (C, H, W) (the sigmoid of the
    excitation applied to every pixel)."""

    out1: np.ndarray
    out2: np.ndarray
    published: np.ndarray
    published_gates: np.ndarray

    @property
    def largest_difference(self) -> float:
        """max |SELayer1 - SELayer2| over the block's output."""
        return float(np.abs(self.out1 - self.out2).max())


def run_layers(params: SEParameters, maps: np.ndarray) -> LayerRun:
    """Run SELayer1, SELayer2 and SELayer2AsPublished, all holding ``params``, on one
    block input ``maps`` (C, H, W) float32."""
    c, h = params.channels, params.hidden
    if c % h:  # the tutorial's C // r is only these widths when r divides C
        raise ValueError(f"the tutorial's layers need C / r to be whole; got C={c}, h={h}")
    r = c // h
    x = paddle.to_tensor(np.ascontiguousarray(maps, np.float32)[None])
    one, two = load_se(SELayer1(c, r), params), load_se(SELayer2(c, r), params)
    bug = load_se(SELayer2AsPublished(c, r), params)
    with paddle.no_grad():
        out1, out2, published = one(x).numpy()[0], two(x).numpy()[0], bug(x).numpy()[0]
        gates = bug.excitation(x).numpy()[0]
    return LayerRun(out1, out2, published, gates)
