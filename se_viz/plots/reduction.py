"""The reduction ratio r: costs beside the paper's Table 10, and gate changes per block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis import PAPER_CITATION, PAPER_REDUCTION_TABLE
from .style import f32


def reduction_figure(rows: Sequence[Any], paper: Sequence[Sequence] = PAPER_REDUCTION_TABLE,
                     stage_labels: Sequence[str] | None = None) -> go.Figure:
    """Costs vs reduction ratio r next to the paper's table (x axes log2(r)).

    ``rows``: objects with .reduction, .params_total, .params_se, .flops_total,
    .stage_se_params (e.g. costs.NetworkCosts); ``stage_labels``: one per entry of
    .stage_se_params (the network's own, `se_viz.blocks.stages`; "stage 1", ... when not
    given). Left: parameters of this implementation and
    the paper's, GMACs on a secondary axis; middle: SE parameters per stage (stacked);
    right: the paper's top-1 error per r against its ResNet-50 baseline.
    """
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.13,
                        specs=[[{"secondary_y": True}, {}, {}]],
                        subplot_titles=("parameters and multiply-adds",
                                        "SE parameters per stage", "paper: top-1 error"))
    r = np.array([float(x.reduction) for x in rows])
    numeric = [p for p in paper if not isinstance(p[0], str)]
    _reduction_costs(fig, rows, r, numeric, stage_labels)
    _reduction_accuracy(fig, paper, numeric)
    ticks = sorted({float(v) for v in r} | {float(p[0]) for p in numeric})
    for col in (1, 3):
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                         row=1, col=col)
    fig.update_xaxes(title_text="reduction ratio r")
    fig.update_xaxes(type="category", row=1, col=2)
    fig.update_layout(barmode="stack", title="Reduction ratio r: cost vs accuracy",
                      height=620, margin=dict(b=190),
                      legend=dict(orientation="h", y=-0.2, traceorder="normal"))
    fig.add_annotation(text=PAPER_CITATION.replace(" Table 10:", "<br>Table 10:"),
                       xref="paper", yref="paper", x=0, y=-0.46, xanchor="left",
                       yanchor="top", showarrow=False, align="left", font=dict(size=10))
    return fig


def _reduction_costs(fig: go.Figure, rows: Sequence[Any], r: np.ndarray,
                     numeric: Sequence[Sequence], stage_labels: Sequence[str] | None) -> None:
    """Left and middle panels of `reduction_figure`."""
    fig.add_trace(go.Scatter(x=r, y=np.array([x.params_total for x in rows]) / 1e6,
                             name="params (M), this implementation", mode="lines+markers",
                             hovertemplate="r = %{x}<br>%{y:.2f} M params<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=[p[0] for p in numeric], y=[p[3] for p in numeric],
                             name="params (M), paper", mode="markers",
                             marker=dict(symbol="x", size=10),
                             hovertemplate="r = %{x}<br>paper: %{y} M<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=r, y=np.array([x.flops_total for x in rows]) / 1e9,
                             name="GMACs (the paper's \"GFLOPs\")", mode="lines+markers",
                             line=dict(dash="dot"),
                             hovertemplate="r = %{x}<br>%{y:.3f} GMACs<extra></extra>"),
                  row=1, col=1, secondary_y=True)
    stages = np.array([x.stage_se_params for x in rows], dtype=np.float64).reshape(len(rows), -1)
    labels = list(stage_labels or [])
    if len(labels) != stages.shape[1]:
        labels = [f"stage {s + 1}" for s in range(stages.shape[1])]
    for s, label in enumerate(labels):
        fig.add_trace(go.Bar(x=[f"{v:g}" for v in r], y=stages[:, s] / 1e6,
                             name=f"SE params, {label}",
                             hovertemplate=f"r = %{{x}}<br>{label}: %{{y:.2f}} M"
                                           "<extra></extra>"), row=1, col=2)
    fig.update_yaxes(title_text="parameters (M)", row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text="GMACs", tickformat=".3f", row=1, col=1, secondary_y=True)
    fig.update_yaxes(title_text="SE parameters (M)", row=1, col=2)


def _reduction_accuracy(fig: go.Figure, paper: Sequence[Sequence],
                        numeric: Sequence[Sequence]) -> None:
    """Right panel of `reduction_figure`: top-1 error per r and the no-SE baseline."""
    xs = [p[0] for p in numeric]
    fig.add_trace(go.Scatter(x=xs, y=[p[1] for p in numeric], name="top-1 error (%), paper",
                             mode="lines+markers",
                             hovertemplate="r = %{x}<br>top-1 error %{y}%<extra></extra>"),
                  row=1, col=3)
    for p in paper:
        if isinstance(p[0], str) and xs:
            fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[p[1], p[1]], mode="lines",
                                     name=f"{p[0]} (no SE), paper",
                                     line=dict(dash="dash", color="grey"),
                                     hovertemplate=f"{p[0]}: {p[1]}% top-1<extra></extra>"),
                          row=1, col=3)
    fig.update_yaxes(title_text="top-1 error (%)", row=1, col=3)


def emulation_figure(gates_full: Mapping[str, np.ndarray],
                     gates_emulated: Mapping[str, np.ndarray]) -> go.Figure:
    """Per block mean and max |gate change| when a larger r is emulated by masking units."""
    if list(gates_full) != list(gates_emulated):
        raise ValueError("full and emulated gates must have the same blocks in the same order")
    blocks = list(gates_full)
    diffs = [np.abs(f32(gates_emulated[b]) - f32(gates_full[b])) for b in blocks]
    fig = go.Figure()
    for name, values in (("mean |Δ gate|", [d.mean() for d in diffs]),
                         ("max |Δ gate|", [d.max() for d in diffs])):
        fig.add_trace(go.Bar(x=blocks, y=f32(values), name=name,
                             hovertemplate=f"block %{{x}}<br>{name} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title="Reduction-ratio emulation: how much the gates move",
                      barmode="group", xaxis_title="SE block",
                      yaxis=dict(title="|emulated - full|", range=[0, 1]))
    return fig
