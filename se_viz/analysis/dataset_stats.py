"""Dataset statistics of SE gates: the stats file and typicality against it (numpy only).

``stats.npz`` (written by ``se_viz.dataset``; read with `load_stats`, ``allow_pickle=False``):

=====================  ============  ======================================================
key                    shape, dtype  meaning
=====================  ============  ======================================================
format                 () str        ``"se_viz.dataset_stats/1"``
meta                   () str        JSON: arch, weights, weights_sha256, untrained, ...
classes                (K,) str      class names (ImageFolder sub-folder names, sorted)
counts                 (K,) int64    images used per class (skipped files not counted)
blocks                 (B,) str      block names in forward order (the network's own)
all_counts             () int64      images used in total
{block}_mean           (K, C) f64    per-class mean gate per channel (NaN row if count 0)
{block}_std            (K, C) f64    per-class standard deviation, population (ddof=0)
{block}_all_mean       (C,) f64      mean over all images
{block}_all_std        (C,) f64      standard deviation over all images (ddof=0)
=====================  ============  ======================================================

Sums are accumulated in float64; std = sqrt(max(E[g^2] - E[g]^2, 0)).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import maths
from ..errors import StatsFileError
from .stats import HIGH

STATS_FORMAT = "se_viz.dataset_stats/1"
SATURATED_SHARE = 0.5  # a block saturates when more than half its class-mean gates exceed HIGH
MIN_STD = 1e-3  # floor for z-scores: gates live in [0, 1]
REPORT_CLASSES = 8  # classes drawn in the Fig. 6/7 views (largest first)


@dataclass(frozen=True)
class DatasetStats:
    """Per-class and all-image gate statistics of one dataset run (see the module docstring).

    means/stds: block -> (K, C) float64; all_mean/all_std: block -> (C,) float64.
    """

    classes: tuple[str, ...]
    counts: np.ndarray
    means: dict[str, np.ndarray]
    stds: dict[str, np.ndarray]
    all_mean: dict[str, np.ndarray]
    all_std: dict[str, np.ndarray]
    all_count: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> list[str]:
        return list(self.means)

    def class_index(self, cls: str | int | None) -> int | None:
        """Index of a class given by index, exact name or loose name (case, '_', '-'); else None."""
        if cls is None:
            return None
        if isinstance(cls, (int, np.integer)):
            return int(cls) if 0 <= int(cls) < len(self.classes) else None
        if cls in self.classes:
            return self.classes.index(cls)
        loose = [_loose(c) for c in self.classes]
        return loose.index(_loose(cls)) if _loose(cls) in loose else None


def _loose(name: str) -> str:
    return " ".join(str(name).replace("_", " ").replace("-", " ").lower().split())


# --------------------------------------------------------------------------- file format


def stats_from_sums(classes: Sequence[str], counts: np.ndarray, blocks: Sequence[str],
                    channels: Sequence[int], sums: np.ndarray, sumsq: np.ndarray,
                    meta: Mapping[str, Any] | None = None) -> DatasetStats:
    """DatasetStats from float64 sums (K, sum(channels)) of g and g*g per class."""
    counts = np.asarray(counts, np.int64)
    n = counts.astype(np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / n
        std = np.sqrt(np.maximum(sumsq / n - mean * mean, 0.0))
    total = int(counts.sum())
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN when no image was used
        all_mean = sums.sum(axis=0) / total
        all_std = np.sqrt(np.maximum(sumsq.sum(axis=0) / total - all_mean ** 2, 0.0))
    edges = np.cumsum([0, *channels])
    cut = {b: slice(int(edges[i]), int(edges[i + 1])) for i, b in enumerate(blocks)}
    return DatasetStats(tuple(classes), counts, {b: mean[:, s] for b, s in cut.items()},
                        {b: std[:, s] for b, s in cut.items()},
                        {b: all_mean[s] for b, s in cut.items()},
                        {b: all_std[s] for b, s in cut.items()}, total, dict(meta or {}))


def stats_arrays(stats: DatasetStats) -> dict[str, np.ndarray]:
    """The arrays of ``stats.npz`` (module docstring) for ``np.savez``."""
    arrays = {"format": np.array(STATS_FORMAT), "meta": np.array(json.dumps(stats.meta)),
              "classes": np.array(stats.classes, dtype=str).reshape(-1),
              "counts": stats.counts, "blocks": np.array(stats.blocks, dtype=str),
              "all_counts": np.array(stats.all_count, np.int64)}
    for b in stats.blocks:
        arrays.update({f"{b}_mean": stats.means[b], f"{b}_std": stats.stds[b],
                       f"{b}_all_mean": stats.all_mean[b], f"{b}_all_std": stats.all_std[b]})
    return arrays


def load_stats(path: str | os.PathLike[str] | bytes, name: str | None = None) -> DatasetStats:
    """Read and validate a ``stats.npz`` written by ``se_viz.dataset`` (never unpickles).

    ``path`` may also be the file's bytes (an upload); ``name`` then names it in errors.
    """
    data_bytes = path if isinstance(path, (bytes, bytearray)) else None
    where = name or ("uploaded stats file" if data_bytes is not None else os.fspath(path))
    try:
        source = io.BytesIO(data_bytes) if data_bytes is not None else where
        with np.load(source, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except FileNotFoundError as exc:
        raise StatsFileError(f"'{where}' does not exist. Give the stats.npz that "
                             "'se-viz analyze DIR --out OUT' wrote into OUT.") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise StatsFileError(f"'{where}' is not a readable stats file ({exc}). Give the "
                             "stats.npz written by 'se-viz analyze'.") from exc
    if str(data.get("format", "")) != STATS_FORMAT:
        raise StatsFileError(f"'{where}' is not a se_viz dataset stats file (no format "
                             f"'{STATS_FORMAT}'). Give the stats.npz written by 'se-viz analyze'.")
    try:
        return _validated(data)
    except (KeyError, ValueError, TypeError) as exc:
        raise StatsFileError(f"'{where}' is damaged or incomplete ({exc}). Re-run "
                             "'se-viz analyze ... --merge-only' to rewrite it.") from exc


def _validated(data: dict[str, np.ndarray]) -> DatasetStats:
    classes = tuple(str(c) for c in data["classes"].reshape(-1))
    counts = np.asarray(data["counts"]).astype(np.int64, casting="safe").reshape(-1)
    blocks = [str(b) for b in data["blocks"].reshape(-1)]
    if len(counts) != len(classes) or (counts < 0).any() or not blocks:
        raise ValueError("classes, counts and blocks do not fit together")
    parts: dict[str, dict[str, np.ndarray]] = {"mean": {}, "std": {}, "all_mean": {},
                                               "all_std": {}}
    for b in blocks:
        for part, store in parts.items():
            arr = np.asarray(data[f"{b}_{part}"], dtype=np.float64)
            want = (len(classes),) if not part.startswith("all") else ()
            if arr.ndim != len(want) + 1 or arr.shape[:-1] != want:
                raise ValueError(f"{b}_{part} has shape {arr.shape}")
            store[b] = arr
        if parts["mean"][b].shape != parts["std"][b].shape or \
                parts["all_mean"][b].shape[-1] != parts["mean"][b].shape[-1]:
            raise ValueError(f"{b}: mean and std shapes differ")
    meta = json.loads(str(data.get("meta", "{}")))
    return DatasetStats(classes, counts, parts["mean"], parts["std"], parts["all_mean"],
                        parts["all_std"], int(data["all_counts"]), meta)


# --------------------------------------------------------------------------- numbers


def class_specificity(stats: DatasetStats) -> np.ndarray:
    """(B,) share of the gate variance explained by the class, averaged over channels,
    from the per-class means and the all-image variance (`se_viz.maths.explained_by_class`,
    the same rule as `se_viz.analysis.class_specificity` on per-image gates)."""
    return np.array([maths.explained_by_class(stats.means[b], stats.counts, stats.all_std[b] ** 2)
                     for b in stats.blocks], dtype=np.float64)


def saturation(stats: DatasetStats, threshold: float = HIGH) -> np.ndarray:
    """(B,) share of per-class mean gates (classes with images, all channels) above threshold."""
    used = stats.counts > 0
    return np.array([float((stats.means[b][used] > threshold).mean()) if used.any() else 0.0
                     for b in stats.blocks], dtype=np.float64)


def typicality(stats: DatasetStats, gates: Mapping[str, np.ndarray],
               cls: str | int | None = None, *, min_std: float = MIN_STD) -> dict[str, Any]:
    """How typical one image's gates (block -> (C,)) are for class ``cls``, block by block.

    ``cls``: an index into ``stats.classes``, a class name (exact, or ignoring case, '_' and
    '-'), or None. Unknown classes and classes without images fall back to all images.
    Returns {"class": name or None, "baseline": "class" | "all images", "count": images in
    the baseline, "mean_abs_z": {block: mean over channels of |g - mean| / max(std, min_std)},
    "cosine": {block: cosine similarity of g and the baseline mean}}.
    """
    k = stats.class_index(cls)
    if k is not None and stats.counts[k] == 0:
        k = None
    z, cos = {}, {}
    for b, g in gates.items():
        if b not in stats.means:
            raise ValueError(f"block {b} is not in this stats file (it has {stats.blocks[0]} ... "
                             f"{stats.blocks[-1]}); use stats made with the same model")
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        mean = stats.means[b][k] if k is not None else stats.all_mean[b]
        std = stats.stds[b][k] if k is not None else stats.all_std[b]
        if g.shape != mean.shape:
            raise ValueError(f"{b}: the image has {g.size} channels but the stats have "
                             f"{mean.size}; the stats were made with another model "
                             f"({stats.meta.get('arch', '?')}, width "
                             f"{stats.meta.get('width', '?')})")
        z[b] = float(np.mean(np.abs(g - mean) / np.maximum(std, min_std)))
        norm = float(np.linalg.norm(g) * np.linalg.norm(mean))
        cos[b] = float(g @ mean / norm) if norm > 0 else 0.0
    return {"class": stats.classes[k] if k is not None else None,
            "baseline": "class" if k is not None else "all images",
            "count": int(stats.counts[k]) if k is not None else stats.all_count,
            "mean_abs_z": z, "cosine": cos}


def match_class(stats: DatasetStats, index: int, num_classes: int = 1000) -> int | None:
    """The stats class for a predicted class ``index``: a folder named by its ImageNet
    WordNet id (``n01443537``), its name (``goldfish``; case, '_' and '-' ignored) or its
    index (``1``). None when no class matches (then compare with all images)."""
    from ..labels import NUM_IMAGENET_CLASSES, imagenet_labels, imagenet_wnids

    names = [str(index)]
    if num_classes == NUM_IMAGENET_CLASSES and 0 <= index < NUM_IMAGENET_CLASSES:
        names = [imagenet_wnids()[index], imagenet_labels()[index]] + names
    for name in names:
        k = stats.class_index(name)
        if k is not None:
            return k
    return None


def report_classes(stats: DatasetStats, limit: int = REPORT_CLASSES) -> list[int]:
    """Indices of the classes drawn: the ``limit`` largest (ties by name), in class order."""
    order = sorted((k for k in range(len(stats.classes)) if stats.counts[k] > 0),
                   key=lambda k: (-int(stats.counts[k]), stats.classes[k]))
    return sorted(order[:limit])
