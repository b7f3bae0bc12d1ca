"""Statistics and comparisons on captured SE gates: pure numpy, no paddle.

Per-image gates are ``Mapping[str, (C,)]`` in forward order (the network's
`model.info.blocks`); gates over several images are ``Mapping[str, (N, C)]``. Every
function returns plain numpy values, so results can be cached, tested and plotted without
a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from .. import maths

LOW, HIGH = 0.1, 0.9
_TINY = maths.TINY


# --------------------------------------------------------------------------- per block


@dataclass(frozen=True)
class GateStats:
    """Summary of one block's gates (C,) for one image.

    ``entropy``: Shannon entropy of p = g / sum(g) divided by log(C), so 1 means all gates
    equal and values near 0 mean a few channels carry all the weight. ``frac_low`` /
    ``frac_high``: share of gates below 0.1 / above 0.9.
    """

    mean: float
    std: float
    entropy: float
    frac_low: float
    frac_high: float
    median: float


STAT_FIELDS = tuple(f.name for f in fields(GateStats))


def _vector(g: np.ndarray, what: str = "gates") -> np.ndarray:
    g = np.asarray(g, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array (C,), got shape {g.shape}")
    return g


def normalized_entropy(g: np.ndarray) -> float:
    """Entropy of p = g / sum(g) over log(C), in [0, 1]; 1 for C == 1 or all-zero gates."""
    return float(maths.normalized_entropy(_vector(g)))


def gate_stats(g: np.ndarray) -> GateStats:
    """Statistics of one block's gates g (C,) in [0, 1]."""
    g = _vector(g)
    return GateStats(mean=float(g.mean()), std=float(g.std()), entropy=normalized_entropy(g),
                     frac_low=float((g < LOW).mean()), frac_high=float((g > HIGH).mean()),
                     median=float(np.median(g)))


def stats_table(gates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Column table over blocks: "block" (B,) names plus every GateStats field as (B,) float64."""
    stats = [gate_stats(g) for g in gates.values()]
    table: dict[str, np.ndarray] = {"block": np.array(list(gates), dtype=str)}
    for name in STAT_FIELDS:
        table[name] = np.array([getattr(s, name) for s in stats], dtype=np.float64)
    return table


# --------------------------------------------------------------------------- ordering


def _descending(values: np.ndarray) -> np.ndarray:
    """Indices sorting ``values`` from largest to smallest; ties keep channel order."""
    return np.argsort(-values, kind="stable")


def channel_order(g: np.ndarray, mode: str = "natural",
                  reference: np.ndarray | None = None) -> np.ndarray:
    """Permutation (C,) int64 of the channels of g for display.

    "natural": 0..C-1; "sorted": by g descending; "reference": by ``reference`` descending
    (to lay one image's gates out in another image's order). Ties keep channel order.
    """
    g = _vector(g)
    if mode == "natural":
        return np.arange(g.size, dtype=np.int64)
    if mode == "sorted":
        return _descending(g).astype(np.int64)
    if mode == "reference":
        if reference is None:
            raise ValueError('channel_order(mode="reference") needs the reference gates')
        ref = _vector(reference, "reference")
        if ref.shape != g.shape:
            raise ValueError(f"reference has shape {ref.shape} but gates have {g.shape}")
        return _descending(ref).astype(np.int64)
    raise ValueError(f'unknown channel order {mode!r}; use "natural", "sorted" or "reference"')


def top_channels(g: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """Indices (min(k, C),) of the k largest (or smallest) gates; ties keep channel order."""
    return maths.top_k(_vector(g), k, largest)[0]


def pad_blocks(gates: Mapping[str, np.ndarray],
               orders: Mapping[str, np.ndarray] | None = None
               ) -> tuple[np.ndarray, list[str]]:
    """Stack ragged blocks into (B, Cmax) float32, NaN after each block's C; plus the names.

    Row b holds block b's gates, permuted by ``orders[name]`` when given (position j shows
    channel ``orders[name][j]``).
    """
    names = list(gates)
    if not names:
        raise ValueError("no blocks to stack: pass at least one block's gates")
    rows = [_vector(gates[n], f"gates of {n}") for n in names]
    out = np.full((len(rows), max(r.size for r in rows)), np.nan, dtype=np.float32)
    for b, (name, row) in enumerate(zip(names, rows)):
        if orders is not None and name in orders:
            perm = np.asarray(orders[name], dtype=np.int64)
            if not np.array_equal(np.sort(perm), np.arange(row.size)):
                raise ValueError(f"order for {name} is not a permutation of 0..{row.size - 1}")
            row = row[perm]
        out[b, :row.size] = row
    return out, names


# --------------------------------------------------------------------------- comparisons


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(a), _vector(b)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare gate vectors of shapes {a.shape} and {b.shape}")
    return a, b


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two (C,) vectors; 0.0 when either is all zeros."""
    a, b = _pair(a, b)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom <= _TINY:
        return 0.0
    return float(np.clip(a @ b / denom, -1.0, 1.0))


def _distribution(a: np.ndarray) -> np.ndarray:
    a = np.clip(a, 0.0, None)
    total = a.sum()
    return a / total if total > _TINY else np.full(a.size, 1.0 / a.size)


def js_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between a / sum(a) and b / sum(b).

    0 for proportional vectors, 1 for disjoint supports. Negative entries count as 0 and an
    all-zero vector as uniform, so the result is always finite.
    """
    p, q = (_distribution(x) for x in _pair(a, b))
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:  # KL(x || m); m > 0 wherever x > 0
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return float(np.sqrt(np.clip(0.5 * (kl(p) + kl(q)), 0.0, 1.0)))


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / k, in [0, 1] (k is clipped to C)."""
    a, b = _pair(a, b)
    k = min(int(k), a.size)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    common = np.intersect1d(top_channels(a, k), top_channels(b, k))
    return common.size / k


def compare_images(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                   k: int = 10) -> dict[str, np.ndarray]:
    """Per-block comparison of two images' gates (blocks in a's order).

    Returns "block" (B,) names and (B,) float64 "cosine", "js", "topk_overlap",
    "mean_abs_diff".
    """
    missing = [n for n in a if n not in b]
    if missing or len(a) != len(b):
        raise ValueError(f"the two gate sets have different blocks (e.g. {missing[:3]})")
    names = list(a)
    pairs = [_pair(a[n], b[n]) for n in names]
    return {
        "block": np.array(names, dtype=str),
        "cosine": np.array([cosine(x, y) for x, y in pairs]),
        "js": np.array([js_distance(x, y) for x, y in pairs]),
        "topk_overlap": np.array([topk_overlap(x, y, k) for x, y in pairs]),
        "mean_abs_diff": np.array([float(np.abs(x - y).mean()) for x, y in pairs]),
    }


def gate_histogram(g: np.ndarray, bins: int = 20) -> np.ndarray:
    """Counts (bins,) of gate values on [0, 1] (values outside are clipped into the end bins)."""
    g = np.clip(np.asarray(g, dtype=np.float64).ravel(), 0.0, 1.0)
    return np.histogram(g, bins=int(bins), range=(0.0, 1.0))[0].astype(np.float64)


def block_similarity(gates: Mapping[str, np.ndarray], bins: int = 20) -> np.ndarray:
    """(B, B) similarity = 1 - JS distance between blocks' gate-value histograms on [0, 1].

    Blocks have different C, so their value distributions (pooled over the N images of each
    (N, C) array) are compared rather than channels. Symmetric, 1 on the diagonal.
    """
    hists = [gate_histogram(g, bins) for g in gates.values()]
    n = len(hists)
    sim = np.ones((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            sim[i, j] = sim[j, i] = 1.0 - js_distance(hists[i], hists[j])
    return sim


def class_specificity(gates_by_image: Mapping[str, np.ndarray],
                      labels: Sequence | np.ndarray) -> np.ndarray:
    """(B,) share of gate variance explained by the class labels, averaged over channels
    (`se_viz.maths.explained_by_class` on each block's (N, C) gates). 0 = class-agnostic
    (or no variance at all), 1 = every image of a class has exactly its class's gates."""
    labels = np.asarray(labels)
    out = []
    for name, g in gates_by_image.items():
        g = np.asarray(g, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: gates {g.shape} do not match {labels.shape[0]} labels")
        classes = np.unique(labels)
        means = np.stack([g[labels == c].mean(axis=0) for c in classes])
        counts = np.array([(labels == c).sum() for c in classes])
        out.append(maths.explained_by_class(means, counts, g.var(axis=0)))
    return np.array(out, dtype=np.float64)


def squeeze_vs_gate(squeeze: np.ndarray, gates: np.ndarray, z: float = 1.0) -> dict:
    """Channels whose gate disagrees with their squeeze (mean activation) value.

    Rule, with s = squeeze (C,) and g = gates (C,):
    * "strong_suppressed": s > mean(s) + z * std(s)  and  g < median(g)
      (a strongly active channel that the block turns down);
    * "weak_boosted": s < median(s)  and  g > 0.9-quantile(g)
      (a below-median channel among the most amplified). The median, not mean - z*std, is
      used because post-ReLU squeeze values are skewed and mean - z*std is often below 0.
    Returns both index arrays (int64, ascending) and the thresholds used ("squeeze_high",
    "squeeze_median", "gate_median", "gate_q90").
    """
    s, g = _pair(squeeze, gates)
    thresholds = {"squeeze_high": float(s.mean() + z * s.std()),
                  "squeeze_median": float(np.median(s)),
                  "gate_median": float(np.median(g)),
                  "gate_q90": float(np.quantile(g, 0.9))}
    strong = (s > thresholds["squeeze_high"]) & (g < thresholds["gate_median"])
    weak = (s < thresholds["squeeze_median"]) & (g > thresholds["gate_q90"])
    return {"strong_suppressed": np.flatnonzero(strong).astype(np.int64),
            "weak_boosted": np.flatnonzero(weak).astype(np.int64), **thresholds}


def topk_change(before_probs: np.ndarray, after_probs: np.ndarray, k: int = 5) -> dict:
    """Top-k before and after an intervention, for one image's (K,) probabilities.

    Returns "before_idx", "after_idx" (k,) int64; "before_prob", "after_prob" (k,) float64;
    "before_prob_after" (k,) the new probabilities of the old top-k; "kept" (int) how many
    of the old top-k are still in the new top-k; "top1_changed" (bool).
    """
    before, after = _pair(before_probs, after_probs)
    bi, ai = top_channels(before, k), top_channels(after, k)
    return {"before_idx": bi, "before_prob": before[bi], "after_idx": ai,
            "after_prob": after[ai], "before_prob_after": after[bi],
            "kept": int(np.intersect1d(bi, ai).size), "top1_changed": bool(bi[0] != ai[0])}


