"""Figures of one SE block step by step: the squeeze vector, the hidden units, the gates."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .style import PALETTE, f32


def vector_figure(values: np.ndarray, title: str, name: str,
                  yrange: tuple[float, float] | None = None,
                  marked: np.ndarray | None = None) -> go.Figure:
    """One value per channel (or hidden unit) as bars; ``marked`` indices drawn in red."""
    v = f32(values).reshape(-1)
    colours = np.full(v.size, PALETTE[0], dtype=object)
    if marked is not None:
        colours[np.asarray(marked, np.int64)] = PALETTE[3]
    fig = go.Figure(go.Bar(y=v, marker_color=list(colours), name=name,
                           hovertemplate=f"%{{x}}<br>{name} %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title=title, bargap=0, showlegend=False,
                      xaxis_title="channel" if "hidden" not in name else "hidden unit",
                      yaxis=dict(title=name, range=list(yrange) if yrange else None),
                      margin=dict(l=60, r=10, t=40, b=40))
    return fig
