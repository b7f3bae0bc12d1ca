"""The SE block's excitation in numpy, written once: squeeze z (N, C) -> FC1 -> act -> FC2
-> gate -> s (N, C).

Every numpy recomputation of an SE block uses this module: the step-by-step view
(`se_viz.analysis.se_steps`), the hidden-unit importance (`se_viz.analysis.reduction`) and
the refit (`se_viz.analysis.se_fit`). The gate (`se_viz.blocks.Gate`: sigmoid or hard
sigmoid) and the inner activation are the block's own (``AttentionBlock.gate``, ``.act``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..blocks import SIGMOID, Gate
from ..results import SEParameters


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def _relu_grad(a: np.ndarray) -> np.ndarray:
    return (a > 0).astype(a.dtype)


def _relu6(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0.0, 6.0)


def _relu6_grad(a: np.ndarray) -> np.ndarray:
    return ((a > 0) & (a < 6)).astype(a.dtype)


def _silu(a: np.ndarray) -> np.ndarray:
    return a * SIGMOID(a)


def _silu_grad(a: np.ndarray) -> np.ndarray:
    s = SIGMOID(a)
    return s * (1.0 + a * (1.0 - s))


# name -> (function, derivative); the names of se_viz.engine.attention's activations
ACTS = {"relu": (_relu, _relu_grad), "relu6": (_relu6, _relu6_grad),
        "silu": (_silu, _silu_grad)}


def activation(name: str):
    """(function, derivative) of the excitation's inner activation ``name``."""
    if name not in ACTS:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTS)}")
    return ACTS[name]


@dataclass(frozen=True)
class Excitation:
    """One SE MLP on N squeeze vectors, float64: ``pre_hidden`` (N, h) = z @ w1 + b1,
    ``hidden`` (N, h) = act(pre_hidden), ``pre`` (N, C) = hidden @ w2 + b2 (the gate's
    input), ``gates`` (N, C) = gate(pre)."""

    pre_hidden: np.ndarray
    hidden: np.ndarray
    pre: np.ndarray
    gates: np.ndarray


def f64(p: SEParameters) -> list[np.ndarray]:
    """[w1 (C, h), b1 (h,), w2 (h, C), b2 (C,)] as float64 arrays."""
    return [np.asarray(x, dtype=np.float64) for x in (p.w1, p.b1, p.w2, p.b2)]


def mlp(theta: list[np.ndarray], z: np.ndarray, act: str = "relu"
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pre_hidden (N, h), hidden (N, h), pre (N, C)) of theta = [w1, b1, w2, b2] on z (N, C)."""
    w1, b1, w2, b2 = theta
    a = z @ w1
    a += b1
    h = activation(act)[0](a)
    x = h @ w2
    x += b2
    return a, h, x


def excitation(p: SEParameters, squeeze: np.ndarray, gate: Gate = SIGMOID,
               act: str = "relu") -> Excitation:
    """The SE MLP ``p`` on ``squeeze`` (N, C) or (C,) (then N = 1), every step kept."""
    z = np.asarray(squeeze, dtype=np.float64)
    z = z[None] if z.ndim == 1 else z
    channels = np.shape(p.w1)[0]
    if z.ndim != 2 or z.shape[1] != channels:
        raise ValueError(f"squeeze must be (N, {channels}), got {np.shape(squeeze)}")
    a, h, x = mlp(f64(p), z, act)
    return Excitation(a, h, x, gate(x))


def se_forward(p: SEParameters, squeeze: np.ndarray, gate: Gate = SIGMOID,
               act: str = "relu") -> np.ndarray:
    """(N, C) float64 gates gate(act(z @ w1 + b1) @ w2 + b2) for squeeze values z (N, C)."""
    return excitation(p, squeeze, gate, act).gates
