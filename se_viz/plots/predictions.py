"""Predictions: top-k bars, before and after an intervention."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import f32


def _bars(fig: go.Figure, labels: Sequence[str], probs: Sequence[float], name: str,
          **cell: int) -> None:
    """Horizontal probability bars, top-1 on top; y positions are numbers so repeated class
    names (ImageNet has two "crane"s) stay separate bars."""
    pos = np.arange(len(labels), dtype=np.int32)
    fig.add_trace(go.Bar(x=f32(probs), y=pos, orientation="h", name=name,
                         customdata=list(labels), text=[f"{p:.1%}" for p in probs],
                         textposition="auto",
                         hovertemplate="%{customdata}<br>p = %{x:.2%}<extra></extra>"), **cell)
    fig.update_yaxes(tickvals=pos, ticktext=list(labels), autorange="reversed", **cell)
    fig.update_xaxes(range=[0, 1], title_text="probability", **cell)


def topk_compare(labels_before: Sequence[str], probs_before: Sequence[float],
                 labels_after: Sequence[str], probs_after: Sequence[float]) -> go.Figure:
    """Top-k before and after an intervention, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("before", "after"),
                        horizontal_spacing=0.25)
    _bars(fig, labels_before, probs_before, "before", row=1, col=1)
    _bars(fig, labels_after, probs_after, "after", row=1, col=2)
    fig.update_layout(title="Predictions before and after the intervention", showlegend=False)
    return fig
