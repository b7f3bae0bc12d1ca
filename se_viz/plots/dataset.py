"""Figures of a data set's gate statistics (stats.npz of ``se-viz analyze``): the paper's
Figures 6 and 7 per class, class specificity, saturation, and one image's typicality."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis import HIGH, PAPER_FIG6_BLOCKS
from ..analysis.paper import PAPER_ARCHS
from ..analysis.dataset_stats import (
    SATURATED_SHARE,
    DatasetStats,
    class_specificity,
    saturation,
)
from .style import PALETTE

FIG6_TITLE = "Figure 6 view: mean gate per channel for each class"
FIG7_TITLE = "Figure 7 view: spread within a class (mean ± std per channel)"
SPEC_TITLE = "Class specificity per block (between-class variance / total variance)"
SAT_TITLE = f"Saturation per block (share of class-mean gates > {HIGH})"


def _fig6_blocks(stats: DatasetStats) -> list[str]:
    """The paper's six blocks for the paper's network (stats.npz without an arch: an older
    SE-ResNet-50 file), else the network's last six."""
    paper = stats.meta.get("arch", PAPER_ARCHS[0]) in PAPER_ARCHS
    return [b for b in PAPER_FIG6_BLOCKS if paper and b in stats.means] or stats.blocks[-6:]


def class_means_figure(stats: DatasetStats, shown: Sequence[int]) -> go.Figure:
    """One panel per paper block: per-class mean gate vs channel, plus all images (dashed)."""
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


def class_spread_figure(stats: DatasetStats, shown: Sequence[int]) -> go.Figure:
    """Mean ± std band per channel of one class per panel; a menu picks the class."""
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


def specificity_figure(stats: DatasetStats) -> go.Figure:
    fig = go.Figure(go.Bar(x=stats.blocks, y=class_specificity(stats), name="specificity"))
    fig.update_layout(title=SPEC_TITLE, yaxis=dict(range=[0, 1], title="share of variance"),
                      xaxis_title="SE block")
    return fig


def saturation_figure(stats: DatasetStats) -> go.Figure:
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


def typicality_figure(t: Mapping[str, Any]) -> go.Figure:
    """Bars of `typicality`'s mean |z| per block (left axis) and its cosine similarity to the
    baseline mean (right axis, line)."""
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


def class_box_figure(summaries: Sequence[Any], block: str, channel: int) -> go.Figure:
    """One box per class with images (min, quartiles, median, max; mean and std as the
    dashed line), sorted by median, highest first; ``summaries``: the channel atlas's
    per-class summaries (``se_viz.dataset.atlas.ClassSummary``)."""
    rows = sorted((s for s in summaries if s.count), key=lambda s: -s.median)
    fig = go.Figure(go.Box(
        x=[s.class_name for s in rows], q1=[s.q25 for s in rows],
        median=[s.median for s in rows], q3=[s.q75 for s in rows],
        lowerfence=[s.min for s in rows], upperfence=[s.max for s in rows],
        mean=[s.mean for s in rows], sd=[s.std for s in rows], boxmean="sd",
        customdata=[[s.count] for s in rows], name="gate", marker_color="#2b6cb0",
        hovertemplate="%{x}<br>%{customdata[0]} images<extra></extra>"))
    fig.update_layout(title=f"Gate of channel {channel} of {block} per class",
                      yaxis_title="gate", xaxis_title="class", showlegend=False,
                      margin=dict(t=50, b=40, l=50, r=20))
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig
