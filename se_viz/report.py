"""Dataset statistics of SE gates: the stats file, typicality against it, and the HTML report.

``stats.npz`` (written by ``se_viz.dataset``; read with `load_stats`, ``allow_pickle=False``):

=====================  ============  ======================================================
key                    shape, dtype  meaning
=====================  ============  ======================================================
format                 () str        ``"se_viz.dataset_stats/1"``
meta                   () str        JSON: arch, weights, weights_sha256, untrained, ...
classes                (K,) str      class names (ImageFolder sub-folder names, sorted)
counts                 (K,) int64    images used per class (skipped files not counted)
blocks                 (B,) str      block names in forward order (``SE_2_1`` ... ``SE_5_3``)
all_counts             () int64      images used in total
{block}_mean           (K, C) f64    per-class mean gate per channel (NaN row if count 0)
{block}_std            (K, C) f64    per-class standard deviation, population (ddof=0)
{block}_all_mean       (C,) f64      mean over all images
{block}_all_std        (C,) f64      standard deviation over all images (ddof=0)
=====================  ============  ======================================================

Sums are accumulated in float64; std = sqrt(max(E[g^2] - E[g]^2, 0)). Numpy and plotly only.
"""

from __future__ import annotations

import html
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import HIGH, PAPER_FIG6_BLOCKS, PAPER_FIG6_FINDING
from .errors import SEVizError

STATS_FORMAT = "se_viz.dataset_stats/1"
SATURATED_SHARE = 0.5  # a block saturates when more than half its class-mean gates exceed HIGH
MIN_STD = 1e-3  # floor for z-scores: gates live in [0, 1]
REPORT_CLASSES = 8  # classes drawn in the Fig. 6/7 views (largest first)
_TINY = 1e-12  # as analysis.class_specificity: channels without variance are left out


class StatsFileError(SEVizError, ValueError):
    """A stats file is missing, unreadable, or not a se_viz dataset stats file."""


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
    """(B,) between-class variance over total variance per channel, averaged over channels.

    Same rule as ``analysis.class_specificity`` on per-image gates, computed from the sums:
    between = sum_k n_k/N (mean_k - mean)^2, total = the all-image variance; channels with
    total variance <= 1e-12 are left out. 0 = class-agnostic, 1 = fully class-determined.
    """
    w = stats.counts / max(stats.all_count, 1)
    out = []
    for b in stats.blocks:
        used = stats.counts > 0
        diff = stats.means[b][used] - stats.all_mean[b]
        between = (w[used, None] * diff * diff).sum(axis=0)
        total = stats.all_std[b] ** 2
        keep = total > _TINY
        ratio = np.clip(between[keep] / total[keep], 0.0, 1.0)
        out.append(float(ratio.mean()) if ratio.size else 0.0)
    return np.array(out, dtype=np.float64)


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
                             f"({stats.meta.get('arch', '?')}, width {stats.meta.get('width', '?')})")
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
    from .labels import NUM_IMAGENET_CLASSES, imagenet_labels, imagenet_wnids

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


# --------------------------------------------------------------------------- figures


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf")
FIG6_TITLE = "Figure 6 view: mean gate per channel for each class"
FIG7_TITLE = "Figure 7 view: spread within a class (mean ± std per channel)"
SPEC_TITLE = "Class specificity per block (between-class variance / total variance)"
SAT_TITLE = f"Saturation per block (share of class-mean gates > {HIGH})"


def _fig6_blocks(stats: DatasetStats) -> list[str]:
    return [b for b in PAPER_FIG6_BLOCKS if b in stats.means] or stats.blocks[-6:]


def figure6(stats: DatasetStats, shown: Sequence[int]) -> Any:
    """One panel per paper block: per-class mean gate vs channel, plus all images (dashed)."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    blocks = _fig6_blocks(stats)
    fig = make_subplots(rows=(len(blocks) + 1) // 2, cols=2, subplot_titles=blocks,
                        vertical_spacing=0.08)
    for i, b in enumerate(blocks):
        cell = dict(row=i // 2 + 1, col=i % 2 + 1)
        for j, k in enumerate(shown):
            fig.add_trace(go.Scatter(y=stats.means[b][k].astype(np.float32), mode="lines",
                                     name=stats.classes[k], legendgroup=str(k), showlegend=i == 0,
                                     line=dict(width=1, color=PALETTE[j % len(PALETTE)])), **cell)
        fig.add_trace(go.Scatter(y=stats.all_mean[b].astype(np.float32), mode="lines",
                                 name="all images", legendgroup="all", showlegend=i == 0,
                                 line=dict(width=1, color="black", dash="dot")), **cell)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(title=FIG6_TITLE, height=300 * ((len(blocks) + 1) // 2),
                      hovermode="x unified")
    return fig


def figure7(stats: DatasetStats, shown: Sequence[int]) -> Any:
    """Mean ± std band per channel of one class per panel; a menu picks the class."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    blocks = _fig6_blocks(stats)
    fig = make_subplots(rows=(len(blocks) + 1) // 2, cols=2, subplot_titles=blocks,
                        vertical_spacing=0.08)
    owner = []
    for j, k in enumerate(shown):
        colour = PALETTE[j % len(PALETTE)]
        for i, b in enumerate(blocks):
            cell = dict(row=i // 2 + 1, col=i % 2 + 1)
            m, s = stats.means[b][k], stats.stds[b][k]
            edge = dict(width=0, color=colour)
            for y, style in ((np.clip(m - s, 0, 1), dict(line=edge)),
                             (np.clip(m + s, 0, 1), dict(line=edge, fill="tonexty")),
                             (m, dict(line=dict(width=1.5, color=colour)))):
                fig.add_trace(go.Scatter(y=y.astype(np.float32), mode="lines", visible=j == 0,
                                         showlegend=False, name=stats.classes[k], **style),
                              **cell)
                owner.append(j)
    buttons = [dict(label=stats.classes[k], method="update",
                    args=[{"visible": [o == j for o in owner]}]) for j, k in enumerate(shown)]
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(title=FIG7_TITLE, height=300 * ((len(blocks) + 1) // 2),
                      updatemenus=[dict(buttons=buttons, x=1.0, y=1.08, xanchor="right")])
    return fig


def specificity_figure(stats: DatasetStats) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=stats.blocks, y=class_specificity(stats), name="specificity"))
    fig.update_layout(title=SPEC_TITLE, yaxis=dict(range=[0, 1], title="share of variance"),
                      xaxis_title="SE block")
    return fig


def saturation_figure(stats: DatasetStats) -> Any:
    import plotly.graph_objects as go

    share = saturation(stats)
    colours = ["#d62728" if s > SATURATED_SHARE else "#1f77b4" for s in share]
    fig = go.Figure(go.Bar(x=stats.blocks, y=share, marker_color=colours, name="share > 0.9"))
    used = stats.counts > 0
    fig.add_trace(go.Scatter(x=stats.blocks, mode="lines+markers", name="mean class-mean gate",
                             y=[float(np.nanmean(stats.means[b][used])) if used.any() else 0.0
                                for b in stats.blocks]))
    fig.add_hline(y=SATURATED_SHARE, line_dash="dash", annotation_text="saturated above")
    fig.update_layout(title=SAT_TITLE, yaxis=dict(range=[0, 1.02]), xaxis_title="SE block")
    return fig


TYPICAL_TITLE = "How typical are this image's gates for {what}? (per block)"


def typicality_figure(t: Mapping[str, Any]) -> Any:
    """Bars of `typicality`'s mean |z| per block (left axis) and its cosine similarity to the
    baseline mean (right axis, line)."""
    import plotly.graph_objects as go

    blocks = list(t["mean_abs_z"])
    what = f"class '{t['class']}'" if t["baseline"] == "class" else "all images"
    fig = go.Figure(go.Bar(x=blocks, y=[t["mean_abs_z"][b] for b in blocks],
                           name="mean |z| (0 = typical)",
                           hovertemplate="%{x}: mean |z| %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=blocks, y=[t["cosine"][b] for b in blocks], yaxis="y2",
                             mode="lines+markers", name="cosine to the baseline mean",
                             hovertemplate="%{x}: cosine %{y:.3f}<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="1 std")
    fig.update_layout(title=TYPICAL_TITLE.format(what=f"{what} ({t['count']} images)"),
                      xaxis_title="SE block", yaxis=dict(title="mean |z| over channels",
                                                         rangemode="tozero"),
                      yaxis2=dict(title="cosine", overlaying="y", side="right",
                                  range=[0, 1.02]),
                      legend=dict(orientation="h", y=-0.25))
    return fig


# --------------------------------------------------------------------------- HTML


def report_html(stats: DatasetStats, skipped: Sequence[tuple[str, str]] = ()) -> str:
    """A standalone HTML page: summary, the four figures, plotly.js inlined exactly once."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    shown = report_classes(stats)
    figs = [figure6(stats, shown), figure7(stats, shown), specificity_figure(stats),
            saturation_figure(stats)]
    divs = "\n".join(pio.to_html(f, full_html=False, include_plotlyjs=False, div_id=f"fig{i}")
                     for i, f in enumerate(figs))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>SE gates over a "
            f"dataset</title>\n<script type=\"text/javascript\">{get_plotlyjs()}</script>\n"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}</style>"
            f"</head><body>\n{_summary_html(stats, shown, skipped)}\n{divs}\n"
            f"{_skipped_html(skipped)}</body></html>\n")


def _summary_html(stats: DatasetStats, shown: Sequence[int],
                  skipped: Sequence[tuple[str, str]]) -> str:
    meta, e = stats.meta, html.escape
    spec, sat = class_specificity(stats), saturation(stats)
    saturated = [b for b, s in zip(stats.blocks, sat) if s > SATURATED_SHARE] or ["none"]
    warn = ("<p><b>Untrained (seeded random) weights: these gates mean nothing.</b></p>"
            if meta.get("untrained") else "")
    return (f"<h1>SE gates over a dataset</h1>{warn}<p>{stats.all_count:,} images in "
            f"{int((stats.counts > 0).sum())} classes ({len(skipped)} files skipped). Model "
            f"{e(str(meta.get('arch', '?')))}, weights {e(str(meta.get('weights') or 'untrained'))}"
            f"; preprocessing {e(str(meta.get('preprocessing', '?')))}. Standard deviations are "
            "population (ddof=0), accumulated in float64.</p>"
            f"<p>Classes drawn in the Figure 6/7 views (the {len(shown)} largest): "
            f"{e(', '.join(stats.classes[k] for k in shown))}.</p>"
            f"<p>Most class-specific block: {e(stats.blocks[int(np.argmax(spec))])} "
            f"({spec.max():.2f}). Saturated blocks (more than {SATURATED_SHARE:.0%} of the "
            f"class-mean gates above {HIGH}): {e(', '.join(saturated))}.</p>"
            f"<p><i>The paper:</i> {e(PAPER_FIG6_FINDING)}</p>")


def _skipped_html(skipped: Sequence[tuple[str, str]], limit: int = 200) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li>{html.escape(f)}: {html.escape(r)}</li>" for f, r in skipped[:limit])
    more = f"<p>... and {len(skipped) - limit} more (see skipped.txt).</p>" \
        if len(skipped) > limit else ""
    return f"<h2>Skipped files ({len(skipped)})</h2><ul>{items}</ul>{more}"


def write_report(stats: DatasetStats, path: str | os.PathLike[str],
                 skipped: Sequence[tuple[str, str]] = ()) -> Path:
    """Write `report_html` to ``path`` atomically; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(report_html(stats, skipped), encoding="utf-8")
    os.replace(tmp, path)
    return path
