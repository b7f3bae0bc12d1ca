"""The reduction ratio r on a trained network: which SE hidden units matter, and masks that
emulate a narrower bottleneck with the loaded weights (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..arch import hidden_width
from ..results import SEParameters
from .excitation import excitation


def hidden_unit_importance(p: SEParameters, squeeze: np.ndarray, act: str = "relu"
                           ) -> np.ndarray:
    """(h,) mean over images of |act(y @ w1 + b1)_j| * ||w2[j, :]||_2 for y = squeeze (N, C).

    ``p``: an SE block's weights (`se_viz.results.SEParameters`); ``act`` its inner
    activation (``AttentionBlock.act``).
    """
    hidden = excitation(p, squeeze, act=act).hidden
    return np.abs(hidden).mean(axis=0) * np.linalg.norm(np.asarray(p.w2, np.float64), axis=1)


def emulation_masks(params: Mapping[str, SEParameters], squeeze: Mapping[str, np.ndarray],
                    reduction_from: float | None, reduction_to: float,
                    acts: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Block -> (h,) float32 0/1 mask keeping the max(1, int(C / reduction_to)) most
    important hidden units (all of them when that is >= h), to emulate a larger r.

    ``params``: the reducible SE blocks only (ECA blocks have no hidden units).
    ``reduction_from``: the model's own r, when its blocks follow h = max(1, int(C / r))
    (checked); None for blocks whose widths follow another rule (each keeps its own h).
    Importance is `hidden_unit_importance` on these images' squeeze values, with each
    block's activation (``acts``: name -> act, ReLU when absent); ties keep unit order.
    """
    if (reduction_from is not None and not reduction_from >= 1) or not reduction_to >= 1:
        raise ValueError(f"reduction ratios must be >= 1, got {reduction_from}, {reduction_to}")
    masks = {}
    for name, p in params.items():
        channels, hidden = np.shape(p.w1)
        if reduction_from is not None and hidden != hidden_width(channels, reduction_from):
            raise ValueError(f"{name} has {hidden} hidden units, which does not match "
                             f"r={reduction_from:g} for C={channels}; pass the model's own r")
        if name not in squeeze:
            raise ValueError(f"no squeeze values for {name}: capture them first")
        keep = hidden_width(channels, reduction_to)
        mask = np.ones(hidden, dtype=np.float32)
        if keep < hidden:
            mask[:] = 0.0
            act = (acts or {}).get(name, "relu")
            order = np.argsort(-hidden_unit_importance(p, squeeze[name], act), kind="stable")
            mask[order[:keep]] = 1.0
        masks[name] = mask
    return masks


