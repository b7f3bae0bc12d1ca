"""The one look of every se_viz figure: colour scales, palette, small helpers, HTML export.

Gates on a fixed 0-1 "Viridis" scale, differences and attributions on "RdBu" centred at 0
with a symmetric range, class activation maps on "Inferno" from 0 to the map's max; every
trace has a hover template naming block, channel and value. Arrays go in as float32 numpy
(not lists) so plotly serialises them as compact typed arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

GATE_SCALE = "Viridis"
DIFF_SCALE = "RdBu"
CAM_SCALE = "Inferno"  # class activation maps (Grad-CAM, LayerCAM), 0 to the map's max
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
GRID_COLS = 4


def f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def grid(n: int, titles: Sequence[str], cols: int = GRID_COLS, **kw: Any) -> go.Figure:
    """An empty grid of subplots for ``n`` panels titled ``titles``."""
    cols = max(1, min(cols, n))
    return make_subplots(rows=max(1, math.ceil(n / cols)), cols=cols,
                         subplot_titles=list(titles), **kw)


def cell(i: int, cols: int) -> dict[str, int]:
    """row/col of panel ``i`` in a grid of ``cols`` columns."""
    return dict(row=i // cols + 1, col=i % cols + 1)


def to_html(fig: go.Figure) -> str:
    """A standalone HTML page (plotly.js inlined) for download/export."""
    return fig.to_html(include_plotlyjs=True, full_html=True)
