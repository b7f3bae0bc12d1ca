"""Plotly figures of SE gates, for notebooks, the app and the HTML reports alike.

From a `se_viz.Capture` (``index`` picks the image)::

    block = se_viz.blocks.pick(model.info.blocks)  # a default block to look at
    cap = se_viz.capture(model, images, features=[block])
    se_viz.plots.heatmap(cap, 0, blocks=model.info.blocks)  # blocks x channels, 0-1 scale
    se_viz.plots.block_profile(cap, 0)    # mean, std, entropy, share < 0.1 / > 0.9 by depth
    se_viz.plots.feature_maps(cap, 0, block, k=6)  # top/bottom channels before/after SE
    se_viz.plots.compare(cap, 0, 1)       # gate difference, image 1 - image 0

From a `se_viz.Evidence` (``se_viz.explain``) and `se_viz.deletion` curves::

    ev = se_viz.explain(model, images)
    se_viz.plots.cam(ev, 0, block, image=crop)  # Grad-CAM (or kind="layercam") over the crop
    se_viz.plots.attribution(ev, 0, block)      # gate vs gate x gradient, top channels named
    se_viz.plots.attribution_heatmap(ev, 0)     # the heatmap coloured by attribution
    se_viz.plots.deletion_figure(curves)        # probability as gates are removed

Every function returns a ``plotly.graph_objects.Figure`` whose traces hold the capture's
numbers (hover shows block, channel and value; given ``blocks=model.info.blocks`` also the
module path, and stage boundaries). The builders underneath take plain arrays:
`gates` (heatmaps, histograms, profiles, the paper's Fig. 6 view), `maps` (feature maps),
`predictions`, `reduction`, `dataset` (stats.npz figures), `refit_figures`
(se-viz refit), `evidence` (class evidence); `style` is the one look.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..analysis import channel_order, stats_table, top_channels
from ..blocks import AttentionBlock
from ..results import Capture
from .gates import (
    difference_heatmap,
    distance_bars,
    figure6,
    gate_curve,
    gate_heatmap,
    gate_histogram,
    similarity_heatmap,
    squeeze_gate_scatter,
    stats_profile,
)
from .evidence import (attribution, attribution_heatmap, cam, cam_overlay, deletion_figure,
                       upsample)
from .maps import maps_mosaic, overlay
from .style import to_html

ORDERS = ("natural", "sorted")


def _gates(cap: Capture, index: int) -> dict[str, np.ndarray]:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"image index must be an integer, got {index!r}")
    if not 0 <= index < len(cap):
        raise IndexError(f"image index {index} is outside 0..{len(cap) - 1}")
    return {b: g[index] for b, g in cap.gates.items()}


def heatmap(cap: Capture, index: int = 0, order: str = "natural",
            blocks: tuple[AttentionBlock, ...] | None = None) -> go.Figure:
    """Every block's gates of image ``index`` as one heatmap (one row per block, forward
    order); ``order`` "sorted" lays each row out by gate, largest first (hover keeps the
    channel); ``blocks`` (the network's `model.info.blocks`) adds module paths and stages."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    gates = _gates(cap, index)
    orders = None if order == "natural" else {b: channel_order(g, "sorted")
                                              for b, g in gates.items()}
    return gate_heatmap(gates, orders, title=f"SE gates of {cap.image_name(index)}",
                        blocks=blocks)


def block_profile(cap: Capture, index: int = 0) -> go.Figure:
    """Per-block statistics of image ``index`` across depth (mean, std, normalised entropy,
    share of gates below 0.1 and above 0.9)."""
    fig = stats_profile(stats_table(_gates(cap, index)))
    fig.update_layout(title=f"Gate statistics by depth: {cap.image_name(index)}")
    return fig


def feature_maps(cap: Capture, index: int = 0, block: str | None = None, k: int = 6,
                 largest: bool = True) -> go.Figure:
    """The ``k`` channels of ``block`` with the largest (or smallest) gates for image
    ``index``: their maps before SE and after (x * gate) on one colour scale. The capture
    must hold that block's maps (``se_viz.capture(..., features=[block])``)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (how many channels to show) must be an integer >= 1, got {k!r}")
    if block is None:
        if not cap.features:
            raise ValueError("this capture holds no feature maps; capture with "
                             "features=[block names] (model.info.blocks) first")
        block = next(iter(cap.features))
    if block not in cap.features:
        held = ", ".join(cap.features) or "none"
        raise ValueError(f"this capture holds no maps of {block} (it has: {held}); capture "
                         f"with features=[{block!r}]")
    g = _gates(cap, index)[block]
    idx = top_channels(g, k, largest)
    before = cap.features[block].before[index][idx].astype(np.float32)
    after = cap.features[block].after[index][idx].astype(np.float32)
    fig = maps_mosaic([("before SE", before), ("after SE (x * gate)", after)], idx, g[idx])
    which = "largest" if largest else "smallest"
    fig.update_layout(title=f"{block} of {cap.image_name(index)}: the {len(idx)} channels "
                            f"with the {which} gates")
    return fig


def compare(cap: Capture, a: int = 0, b: int = 1,
            blocks: tuple[AttentionBlock, ...] | None = None) -> go.Figure:
    """The gate difference image ``b`` - image ``a``, per block and channel."""
    ga, gb = _gates(cap, a), _gates(cap, b)
    return difference_heatmap(ga, gb, f"Gate difference: {cap.image_name(b)} - "
                                      f"{cap.image_name(a)}", blocks)


__all__ = ["heatmap", "block_profile", "feature_maps", "compare", "gate_heatmap",
           "difference_heatmap", "gate_histogram", "stats_profile", "similarity_heatmap",
           "figure6", "distance_bars", "squeeze_gate_scatter", "gate_curve", "maps_mosaic",
           "overlay", "to_html", "cam", "attribution", "attribution_heatmap",
           "deletion_figure", "cam_overlay", "upsample"]
