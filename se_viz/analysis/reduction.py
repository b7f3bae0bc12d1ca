"""The reduction ratio r on a trained network: which SE hidden units matter, and masks that
emulate a narrower bottleneck with the loaded weights (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..arch import hidden_width
from ..results import SEParameters


def hidden_unit_importance(p: SEParameters, squeeze: np.ndarray) -> np.ndarray:
    """(h,) mean over images of relu(y @ w1 + b1)_j * ||w2[j, :]||_2 for y = squeeze (N, C).

    ``p`` is any object with w1 (C, h), b1 (h,), w2 (h, C) (e.g. model.SEParameters).
    """
    w1, b1, w2 = (np.asarray(x, dtype=np.float64) for x in (p.w1, p.b1, p.w2))
    y = np.asarray(squeeze, dtype=np.float64)
    if y.ndim == 1:
        y = y[None]
    if y.ndim != 2 or y.shape[1] != w1.shape[0]:
        raise ValueError(f"squeeze must be (N, {w1.shape[0]}), got {np.shape(squeeze)}")
    hidden = np.maximum(y @ w1 + b1, 0.0)
    return hidden.mean(axis=0) * np.linalg.norm(w2, axis=1)


def emulation_masks(params: Mapping[str, SEParameters], squeeze: Mapping[str, np.ndarray],
                    reduction_from: float, reduction_to: float) -> dict[str, np.ndarray]:
    """Block -> (h,) float32 0/1 mask keeping the max(1, int(C / reduction_to)) most
    important hidden units (all of them when that is >= h), to emulate a larger r.

    ``reduction_from`` is the model's own r; each block's h must equal max(1, int(C / r)).
    Importance is `hidden_unit_importance` on these images' squeeze values; ties keep unit order.
    """
    if not reduction_from >= 1 or not reduction_to >= 1:
        raise ValueError(f"reduction ratios must be >= 1, got {reduction_from}, {reduction_to}")
    masks = {}
    for name, p in params.items():
        channels, hidden = np.shape(p.w1)
        if hidden != hidden_width(channels, reduction_from):
            raise ValueError(f"{name} has {hidden} hidden units, which does not match "
                             f"r={reduction_from:g} for C={channels}; pass the model's own r")
        if name not in squeeze:
            raise ValueError(f"no squeeze values for {name}: capture them first")
        keep = hidden_width(channels, reduction_to)
        mask = np.ones(hidden, dtype=np.float32)
        if keep < hidden:
            mask[:] = 0.0
            mask[np.argsort(-hidden_unit_importance(p, squeeze[name]), kind="stable")[:keep]] = 1.0
        masks[name] = mask
    return masks


