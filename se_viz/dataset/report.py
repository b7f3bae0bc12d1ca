"""The standalone HTML report of a dataset run: summary, the four figures, skipped files."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..analysis import HIGH, PAPER_FIG6_FINDING
from ..analysis.dataset_stats import (SATURATED_SHARE, DatasetStats, class_specificity,
                                      report_classes, saturation)
from ..paths import atomic_write


def report_html(stats: DatasetStats, skipped: Sequence[tuple[str, str]] = ()) -> str:
    """A standalone HTML page: summary, the four figures, plotly.js inlined exactly once."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from ..plots.dataset import (class_means_figure, class_spread_figure, saturation_figure,
                                 specificity_figure)

    shown = report_classes(stats)
    figs = [class_means_figure(stats, shown), class_spread_figure(stats, shown),
            specificity_figure(stats),
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
    return atomic_write(path, report_html(stats, skipped))
