"""Figures of `se-viz refit` (`se_viz.refit`): from refit.json (a dict) or from gate
arrays, go.Figure out.

* `block_error_figure`: held-out gate error per block against r (each block given the
  base network's own input), the refit against pruning the base units without a refit;
* `agreement_figure`: every block replaced, top-1 agreement with the base network and the
  mean KL against r, beside the paper's Table 10 top-1 errors;
* `se_params_figure`: SE parameters per r;
* `refit_gates_figure`: one image's gates of one block at the base r and at each refit r,
  and their differences (the app).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis import PAPER_CITATION, PAPER_REDUCTION_TABLE
from ..blocks import AttentionBlock
from .style import PALETTE, f32

ERROR_TITLE = "Gate error per block against r (held-out images, base input to each block)"
AGREEMENT_TITLE = "Every block replaced: agreement with the base network against r"
PARAMS_TITLE = "SE parameters against r"


def _ratios(doc: Mapping) -> list[str]:
    return sorted(doc["fits"], key=float)


def _log_axis(fig: go.Figure, ratios: Sequence[float], **where) -> None:
    ticks = sorted(set(ratios))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                     title_text="reduction ratio r", **where)


def block_error_figure(doc: Mapping, blocks: Sequence[AttentionBlock] = ()) -> go.Figure:
    """Left: RMSE of every block's gates against r (one line per block, coloured and grouped
    by stage when ``blocks``, the base network's `model.info.blocks`, describes them);
    right: the mean over blocks, refit against the base's most important units kept
    without a refit ("pruned")."""
    keys = _ratios(doc)
    r = [float(k) for k in keys]
    names = list(doc["fits"][keys[0]]["blocks"]) if keys else []
    known = {b.name: b for b in blocks}
    order = list(dict.fromkeys(b.stage for b in blocks))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=("RMSE per block", "mean over blocks"))
    for i, b in enumerate(names):
        group = known[b].stage_label if b in known else "blocks"
        at = order.index(known[b].stage) if b in known else i
        colour = PALETTE[at % len(PALETTE)]
        y = f32([doc["fits"][k]["blocks"][b]["rmse"] for k in keys])
        mx = f32([doc["fits"][k]["blocks"][b]["max"] for k in keys])
        fig.add_trace(go.Scatter(x=r, y=y, customdata=mx, mode="lines+markers", name=b,
                                 legendgroup=group,
                                 legendgrouptitle_text=group, line=dict(color=colour),
                                 hovertemplate=f"{_where(b, known)}<br>r = %{{x}}<br>"
                                               "RMSE %{y:.4f}<br>"
                                               "max %{customdata:.4f}<extra></extra>"),
                      row=1, col=1)
    for what, dash, name in (("rmse", "solid", "refit"), ("pruned_rmse", "dot",
                                                           "pruned, no refit")):
        y = f32([np.mean([v[what] for v in doc["fits"][k]["blocks"].values()]) for k in keys])
        fig.add_trace(go.Scatter(x=r, y=y, mode="lines+markers", name=f"mean: {name}",
                                 line=dict(color="black", dash=dash),
                                 hovertemplate=f"{name}<br>r = %{{x}}<br>mean RMSE %{{y:.4f}}"
                                               "<extra></extra>"), row=1, col=2)
    _log_axis(fig, r, row=1, col=1)
    _log_axis(fig, r, row=1, col=2)
    fig.update_yaxes(title_text="gate RMSE", rangemode="tozero")
    fig.update_layout(title=ERROR_TITLE, height=620, legend=dict(tracegroupgap=4,
                                                                 font=dict(size=10)))
    return fig


def _where(name: str, known: Mapping[str, AttentionBlock]) -> str:
    return f"{name} ({known[name].path})" if name in known else name


def agreement_figure(doc: Mapping, paper: Sequence[Sequence] = PAPER_REDUCTION_TABLE
                     ) -> go.Figure:
    """Every block replaced, against r: top-1 agreement (%) with the base network and the
    mean KL of its predictions to the base's (and the blockwise fit alone, after
    --finetune); right: the paper's top-1 error of SE-ResNet-50 trained at each r, and
    ResNet-50 without SE."""
    keys = _ratios(doc)
    r = [float(k) for k in keys]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09,
                        subplot_titles=("refit: top-1 agreement with the base",
                                        "refit: mean KL to the base",
                                        "paper: top-1 error (trained at r)"))
    stages = [("end_to_end", "", "solid")]
    if keys and "blockwise" in doc["fits"][keys[0]]:
        stages.append(("blockwise", " (blockwise fit only)", "dot"))
    for where, label, dash in stages:
        e2e = [(doc["fits"][k] if where == "end_to_end" else doc["fits"][k]["blockwise"])
               ["end_to_end"] for k in keys]
        fig.add_trace(go.Scatter(x=r, y=f32([100 * e["top1_agreement"] for e in e2e]),
                                 mode="lines+markers", name=f"top-1 agreement (%){label}",
                                 line=dict(color=PALETTE[0], dash=dash),
                                 hovertemplate="r = %{x}<br>%{y:.1f}% agree<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=r, y=f32([e["mean_kl"] for e in e2e]), mode="lines+markers",
                                 name=f"mean KL (nats){label}",
                                 line=dict(color=PALETTE[1], dash=dash),
                                 hovertemplate="r = %{x}<br>KL %{y:.3g}<extra></extra>"),
                      row=1, col=2)
    numeric = [p for p in paper if not isinstance(p[0], str)]
    fig.add_trace(go.Scatter(x=[p[0] for p in numeric], y=[p[1] for p in numeric],
                             mode="lines+markers", name="paper top-1 error (%)",
                             line=dict(color=PALETTE[3]),
                             hovertemplate="r = %{x}<br>paper: %{y}% error<extra></extra>"),
                  row=1, col=3)
    for p in paper:
        if isinstance(p[0], str) and numeric:
            xs = [numeric[0][0], numeric[-1][0]]
            fig.add_trace(go.Scatter(x=xs, y=[p[1], p[1]], mode="lines",
                                     name=f"paper: {p[0]} (no SE)",
                                     line=dict(color="grey", dash="dash"),
                                     hovertemplate=f"{p[0]}: {p[1]}%<extra></extra>"),
                          row=1, col=3)
    for col in (1, 2):
        _log_axis(fig, r, row=1, col=col)
    _log_axis(fig, [p[0] for p in numeric], row=1, col=3)
    fig.update_yaxes(title_text="top-1 agreement (%)", range=[0, 101], row=1, col=1)
    fig.update_yaxes(title_text="mean KL (nats)", rangemode="tozero", row=1, col=2)
    fig.update_yaxes(title_text="top-1 error (%)", row=1, col=3)
    fig.update_layout(title=AGREEMENT_TITLE, height=600, margin=dict(b=190),
                      legend=dict(orientation="h", y=-0.22))
    fig.add_annotation(text=PAPER_CITATION.replace(" Table 10:", "<br>Table 10:"),
                       xref="paper", yref="paper", x=0, y=-0.42, xanchor="left",
                       yanchor="top", showarrow=False, align="left", font=dict(size=10))
    return fig


def se_params_figure(doc: Mapping) -> go.Figure:
    """SE parameters (millions) of the refit network at each r."""
    keys = _ratios(doc)
    fig = go.Figure(go.Bar(x=[f"r = {k}" for k in keys],
                           y=f32([doc["fits"][k]["se_params"] / 1e6 for k in keys]),
                           hovertemplate="%{x}<br>%{y:.3f} M SE parameters<extra></extra>",
                           name="SE parameters"))
    fig.update_layout(title=PARAMS_TITLE, yaxis_title="SE parameters (M)", height=360)
    return fig


def refit_gates_figure(block: str, base: np.ndarray, refits: Mapping[str, np.ndarray],
                       base_label: str = "base") -> go.Figure:
    """Top: ``block``'s gates (C,) at the base r and at each refit r (``refits``: label ->
    (C,)), channels sorted by the base gate (largest first; hover names the channel);
    bottom: each refit minus the base."""
    base = f32(base)
    order = np.argsort(-base, kind="stable")
    x = np.arange(base.size)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.6, 0.4],
                        subplot_titles=(f"{block}: gates, channels by base gate",
                                        "refit - base"))
    fig.add_trace(go.Scatter(x=x, y=base[order], customdata=order, name=base_label,
                             mode="lines", line=dict(color="black", width=2),
                             hovertemplate="channel %{customdata}<br>gate %{y:.3f}"
                                           "<extra>" + base_label + "</extra>"), row=1, col=1)
    for i, (label, gates) in enumerate(refits.items()):
        g = f32(gates)
        colour = PALETTE[(i + 1) % len(PALETTE)]
        fig.add_trace(go.Scatter(x=x, y=g[order], customdata=order, name=label, mode="lines",
                                 line=dict(color=colour, width=1),
                                 hovertemplate="channel %{customdata}<br>gate %{y:.3f}"
                                               f"<extra>{label}</extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=(g - base)[order], customdata=order, mode="lines",
                                 name=f"{label} - {base_label}", line=dict(color=colour),
                                 showlegend=False,
                                 hovertemplate="channel %{customdata}<br>difference %{y:+.3f}"
                                               f"<extra>{label}</extra>"), row=2, col=1)
    fig.update_yaxes(title_text="gate", range=[0, 1], row=1, col=1)
    span = max([float(np.abs(f32(g) - base).max()) for g in refits.values()] + [0.01])
    fig.update_yaxes(title_text="difference", range=[-span, span], zeroline=True, row=2, col=1)
    fig.update_xaxes(title_text="channel rank (by base gate)", row=2, col=1)
    fig.update_layout(height=520, legend=dict(orientation="h", y=-0.18))
    return fig
