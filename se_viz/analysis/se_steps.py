"""One SE block step by step, in numpy: squeeze, FC1 + act, FC2 + gate, reweight.

``steps(params, squeeze, gates, gate, act)`` recomputes the block from its squeeze values
with the block's own weights, gate and activation (float64; `se_viz.analysis.excitation`)
and keeps the network's gates beside the recomputation, so a view can show every
intermediate value and prove it is the block's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..blocks import SIGMOID, Gate
from ..results import SEParameters
from .excitation import excitation
from .stats import top_channels


@dataclass(frozen=True)
class SESteps:
    """One image through one SE block, C channels and h hidden units.

    squeeze z (C,): GAP of the block input U; hidden (h,): act(z @ w1 + b1); logits (C,):
    hidden @ w2 + b2 (the gate's input); gates (C,): the network's gates s; recomputed (C,):
    gate(logits).
    """

    squeeze: np.ndarray
    hidden: np.ndarray
    logits: np.ndarray
    gates: np.ndarray
    recomputed: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.squeeze.size)

    @property
    def zero_hidden(self) -> int:
        """Hidden units at or below 0 after the activation (a ReLU switched them off)."""
        return int((self.hidden <= 0).sum())

    @property
    def mismatch(self) -> float:
        """max |recomputed - network gates|: float noise only, or the steps are wrong."""
        return float(np.abs(self.recomputed - self.gates).max())

    def extremes(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Channels with the k largest and the k smallest gates."""
        return top_channels(self.gates, k), top_channels(self.gates, k, largest=False)


def steps(params: SEParameters, squeeze: np.ndarray, gates: np.ndarray, gate: Gate = SIGMOID,
          act: str = "relu") -> SESteps:
    """The SE block's steps for one image: squeeze (C,) and the network's gates (C,);
    ``gate`` and ``act`` are the block's own (``AttentionBlock.gate``, ``.act``)."""
    z = np.asarray(squeeze, np.float64).reshape(-1)
    s = np.asarray(gates, np.float64).reshape(-1)
    if z.shape != (params.channels,) or s.shape != z.shape:
        raise ValueError(f"squeeze {z.shape} and gates {s.shape} must both be "
                         f"({params.channels},) for this block")
    e = excitation(params, z, gate, act)
    return SESteps(z, e.hidden[0], e.pre[0], s, e.gates[0])


def published_gate_spread(gate_maps: np.ndarray) -> np.ndarray:
    """(C,) max - min over the H x W positions of per-pixel gates (C, H, W): 0 for a real
    SE gate, which is one number per channel."""
    g = np.asarray(gate_maps, np.float64)
    return g.reshape(g.shape[0], -1).max(axis=1) - g.reshape(g.shape[0], -1).min(axis=1)
