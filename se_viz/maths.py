"""The formulas se_viz uses in more than one place, each written once (numpy only).

softmax, log-softmax and top-k (predictions, distillation), the sigmoid (the SE gate),
the normalised entropy of a gate vector (block statistics, dataset tables) and the share
of variance explained by the class (class specificity, from per-image gates or from
per-class sums). The SE bottleneck width is `se_viz.arch.hidden_width`.
"""

from __future__ import annotations

import numpy as np

TINY = 1e-12  # variances at or below this carry no information


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, float32, computed stably (max subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The SE gate function 1 / (1 + exp(-z)), computed without overflow (float64 in,
    float64 out; float32 in, float32 out)."""
    z = np.asarray(z)
    out = np.empty_like(z, dtype=np.result_type(z.dtype, np.float32))
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(logits)) along ``axis`` in float64, computed stably."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def kl_divergence(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """(N,) KL(softmax(ref) || softmax(logits)) in nats, float64, from (N, K) logits
    (rounding below 0 clipped)."""
    lp, lq = log_softmax(ref_logits, axis=1), log_softmax(logits, axis=1)
    return np.clip((np.exp(lp) * (lp - lq)).sum(axis=1), 0.0, None)


def top_k(values: np.ndarray, k: int, largest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices (..., k) int64 and values of the k largest (or smallest) entries along the
    last axis, sorted; ties keep index order. k is clipped to the axis length."""
    v = np.asarray(values)
    k = max(0, min(int(k), v.shape[-1]))
    order = np.argsort(-v if largest else v, axis=-1, kind="stable")[..., :k].astype(np.int64)
    return order, np.take_along_axis(v, order, axis=-1)


def normalized_entropy(gates: np.ndarray) -> np.ndarray | float:
    """Entropy of p = g / sum(g) over log(C), in [0, 1], along the last axis.

    Negative values count as 0; 1.0 for C == 1 and for all-zero rows. A 1-D input gives a
    float, an (N, C) input an (N,) float64 array.
    """
    g = np.clip(np.asarray(gates, dtype=np.float64), 0.0, None)
    if g.ndim == 0 or g.shape[-1] == 0:
        raise ValueError(f"gates must be a non-empty array (..., C), got shape {g.shape}")
    total = g.sum(axis=-1, keepdims=True)
    p = np.divide(g, total, out=np.zeros_like(g), where=total > 0)
    h = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)
    c = g.shape[-1]
    out = np.ones(h.shape) if c == 1 else np.clip(h / np.log(c), 0.0, 1.0)
    out = np.where(total[..., 0] > 0, out, 1.0)
    return float(out) if out.ndim == 0 else out


def explained_by_class(class_means: np.ndarray, counts: np.ndarray, total_var: np.ndarray
                       ) -> float:
    """Share of the variance explained by the class, averaged over channels.

    class_means (K, C), counts (K,) images per class, total_var (C,) the variance over all
    images. Per channel: sum_k n_k/N (mean_k - mean)^2 / total variance; channels whose
    total variance is <= TINY carry no information and are left out. 0 when none is left.
    """
    counts = np.asarray(counts, dtype=np.float64)
    used = counts > 0
    if not used.any():
        return 0.0
    means = np.asarray(class_means, dtype=np.float64)[used]
    w = counts[used] / counts[used].sum()
    grand = (w[:, None] * means).sum(axis=0)
    between = (w[:, None] * (means - grand) ** 2).sum(axis=0)
    total = np.asarray(total_var, dtype=np.float64)
    keep = total > TINY
    ratio = np.clip(between[keep] / total[keep], 0.0, 1.0)
    return float(ratio.mean()) if ratio.size else 0.0
