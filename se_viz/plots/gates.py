"""Figures of one image's or several images' gates: arrays in, ``go.Figure`` out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sequential

from ..analysis import HIGH, LOW, PAPER_FIG6_BLOCKS, pad_blocks
from ..blocks import SIGMOID, AttentionBlock, Gate
from .style import DIFF_SCALE, GATE_SCALE, PALETTE, cell, f32, grid

STAT_LINES = ("mean", "std", "entropy", "frac_low", "frac_high")
Blocks = Sequence[AttentionBlock] | None  # a network's `model.info.blocks`, when known


def _stage_lines(names: Sequence[str], blocks: Blocks) -> list[dict]:
    """Horizontal white lines between stages (``AttentionBlock.stage``) of a heatmap whose
    rows are ``names``; none when the blocks are not given."""
    stage = {b.name: b.stage for b in blocks or ()}
    return [dict(type="line", xref="paper", x0=0, x1=1, yref="y", y0=b - 0.5, y1=b - 0.5,
                 line=dict(color="white", width=2))
            for b in range(1, len(names))
            if names[b] in stage and names[b - 1] in stage
            and stage[names[b]] != stage[names[b - 1]]]


def _where(name: str, blocks: Blocks) -> str:
    """Hover text naming a block: ``SE_3_4 (layer2.3.se, stage 3)`` when its description
    is known, else the name."""
    found = {b.name: b for b in blocks or ()}.get(name)
    return f"{name} ({found.path}, {found.stage_label})" if found else name


def _channel_ids(gates: Mapping[str, np.ndarray], orders: Mapping[str, np.ndarray],
                 shape: tuple[int, int]) -> np.ndarray:
    """(B, Cmax) real channel index shown at each position; 0 in the (never hovered) padding.

    int16 and a 0 fill keep the JSON small: -1 would serialise as escaped "/" characters.
    """
    dtype = np.int16 if shape[1] < 2 ** 15 else np.int32
    ids = np.zeros(shape, dtype=dtype)
    for b, (name, g) in enumerate(gates.items()):
        ids[b, :len(g)] = orders[name] if name in orders else np.arange(len(g))
    return ids


def _block_heatmap(z: np.ndarray, names: list[str], widths: Sequence[int], title: str,
                   scale: dict[str, Any], hovertemplate: str,
                   customdata: np.ndarray | None = None, blocks: Blocks = None) -> go.Figure:
    """Blocks x channels as one single-row heatmap trace per block (row b = ``z[b, :widths[b]]``)
    on a numeric y axis labelled with the block names, all on one colour axis (``scale``).

    It looks like the NaN-padded (B, Cmax) matrix ``z`` but sends only the real values
    (15,104 instead of 32,768 for SE-ResNet-50), and each row's hover names its block
    (``%{y}`` in ``hovertemplate`` becomes the name, with its module path and stage when
    ``blocks`` describes it; stage boundaries are drawn from it). Several heatmaps on one
    categorical axis break plotly.js ("Cannot read properties of undefined"), hence the
    numeric axis.
    """
    fig = go.Figure()
    for b, (name, width) in enumerate(zip(names, widths)):
        extra = {} if customdata is None else {"customdata": customdata[b:b + 1, :width]}
        fig.add_trace(go.Heatmap(z=np.ascontiguousarray(z[b:b + 1, :width]), x0=0, dx=1,
                                 y0=b, dy=1, name=name, coloraxis="coloraxis",
                                 hoverongaps=False,
                                 hovertemplate=hovertemplate.replace("%{y}",
                                                                     _where(name, blocks)),
                                 **extra))
    fig.update_layout(title=title, shapes=_stage_lines(names, blocks),
                      xaxis_title="channel position",
                      coloraxis=scale,
                      yaxis=dict(title="attention block", autorange="reversed", zeroline=False,
                                 showgrid=False, tickmode="array",
                                 tickvals=list(range(len(names))), ticktext=names),
                      margin=dict(l=70, r=20, t=50, b=40))
    return fig


def gate_heatmap(gates: Mapping[str, np.ndarray],
                 orders: Mapping[str, np.ndarray] | None = None, title: str = "",
                 blocks: Blocks = None, *, value: str = "gate",
                 signed: bool = False) -> go.Figure:
    """All blocks' gates (C,) as one heatmap: rows = blocks in forward order (the first on
    top), one trace per block (see `_block_heatmap`), a fixed 0-1 colour scale; ``blocks``
    (the network's `model.info.blocks`) adds stage boundaries and module paths.

    With ``orders`` (block -> permutation) position j of a row shows channel orders[j], and
    the hover's channel comes from ``customdata``; without, the channel is the x position.
    ``signed`` draws any real per-channel values instead (e.g. ``value="attribution"``,
    `Evidence.attributions`): the diverging scale centred on 0, range +/- the largest |value|.
    """
    z, names = pad_blocks(gates, orders)
    ids = _channel_ids(gates, orders, z.shape) if orders else None
    channel = "%{customdata}" if orders else "%{x}"
    if signed:
        top = float(np.nanmax(np.abs(z))) or 1.0
        scale = dict(cmid=0.0, cmin=-top, cmax=top, colorscale=DIFF_SCALE)
        shown = "%{z:+.3g}"
    else:
        scale, shown = dict(cmin=0.0, cmax=1.0, colorscale=GATE_SCALE), "%{z:.3f}"
    return _block_heatmap(
        z, names, [len(gates[n]) for n in names],
        title or ("SE gates per block" if value == "gate" else f"{value} per block"),
        {**scale, "colorbar": dict(title=value)},
        f"block %{{y}}<br>channel {channel}<br>{value} {shown}<extra></extra>", ids, blocks)


def difference_heatmap(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                       title: str = "", blocks: Blocks = None) -> go.Figure:
    """Heatmap of b - a per block and channel, one row per block, RdBu centred on 0, [-1, 1]."""
    if list(a) != list(b):
        raise ValueError("the two gate sets must have the same blocks in the same order")
    za, names = pad_blocks(a)
    zb, _ = pad_blocks(b)
    if np.any(np.isnan(za) != np.isnan(zb)):
        raise ValueError("the two gate sets have different channel counts; compare like with like")
    return _block_heatmap(
        zb - za, names, [len(a[n]) for n in names], title or "Gate difference (B - A)",
        dict(cmid=0.0, cmin=-1.0, cmax=1.0, colorscale=DIFF_SCALE, colorbar=dict(title="B - A")),
        "block %{y}<br>channel %{x}<br>B - A %{z:+.3f}<extra></extra>", blocks=blocks)


def gate_histogram(g: np.ndarray, block: str) -> go.Figure:
    """Histogram of one block's gates (C,) in 20 bins of width 0.05 on [0, 1]."""
    g = f32(g)
    fig = go.Figure(go.Histogram(
        x=g, xbins=dict(start=0.0, end=1.0, size=0.05), autobinx=False,
        marker_color=sequential.Viridis[4], name=block,
        hovertemplate=f"block {block}<br>gate %{{x}}<br>%{{y}} channels<extra></extra>"))
    fig.update_layout(title=f"{block}: distribution of {g.size} gates", bargap=0.05,
                      xaxis=dict(title="gate", range=[0, 1]), yaxis_title="channels")
    return fig


def stats_profile(table: Mapping[str, np.ndarray]) -> go.Figure:
    """Depth profile: one line per statistic (mean, std, entropy, frac_low, frac_high)."""
    blocks = list(table["block"])
    fig = go.Figure()
    for stat in STAT_LINES:
        fig.add_trace(go.Scatter(
            x=blocks, y=f32(table[stat]), mode="lines+markers", name=stat,
            hovertemplate=f"block %{{x}}<br>{stat} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title="Gate statistics by depth", xaxis_title="SE block",
                      yaxis=dict(title="value", range=[0, 1.02]), hovermode="x unified")
    return fig


def similarity_heatmap(matrix: np.ndarray, names: Sequence[str]) -> go.Figure:
    """(B, B) block-to-block similarity in [0, 1] (e.g. analysis.block_similarity)."""
    names = list(names)
    fig = go.Figure(go.Heatmap(
        z=f32(matrix), x=names, y=names, zmin=0.0, zmax=1.0, colorscale=GATE_SCALE,
        colorbar=dict(title="similarity"),
        hovertemplate="block %{y} vs block %{x}<br>similarity %{z:.3f}<extra></extra>"))
    fig.update_layout(title="Similarity of gate distributions between blocks",
                      yaxis=dict(autorange="reversed", type="category"),
                      xaxis=dict(type="category"))
    return fig


def figure6(gates_by_image: Mapping[str, np.ndarray], image_labels: Sequence[str],
            blocks: Sequence[str] = PAPER_FIG6_BLOCKS) -> go.Figure:
    """The paper's Fig. 6 view: one subplot per block, gate vs channel, one line per image.

    ``gates_by_image``: block -> (N, C); ``image_labels``: N legend names (shared legend).
    """
    missing = [b for b in blocks if b not in gates_by_image]
    if missing:
        raise ValueError(f"no gates for {', '.join(missing)}; capture these blocks first")
    labels = list(image_labels)
    cols = 3
    fig = grid(len(blocks), blocks, cols=cols, shared_yaxes=True)
    for i, block in enumerate(blocks):
        g = f32(gates_by_image[block])
        if g.ndim != 2 or g.shape[0] != len(labels):
            raise ValueError(f"{block}: gates {g.shape} do not match {len(labels)} image labels")
        for n, label in enumerate(labels):
            fig.add_trace(go.Scatter(  # no x: plotly's default 0..C-1 halves the JSON
                y=g[n], mode="lines", name=label, legendgroup=str(n),
                showlegend=i == 0, line=dict(width=1, color=PALETTE[n % len(PALETTE)]),
                hovertemplate=(f"{label}<br>block {block}<br>channel %{{x}}"
                               "<br>gate %{y:.3f}<extra></extra>")), **cell(i, cols))
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(title_text="channel index", row=math.ceil(len(blocks) / cols))
    fig.update_layout(title="Gates per channel (the paper's Fig. 6 view)",
                      legend=dict(orientation="h", y=-0.15))
    return fig


def distance_bars(table: Mapping[str, np.ndarray]) -> go.Figure:
    """Grouped bars per block of cosine, JS distance and top-k overlap (analysis.compare_images)."""
    blocks = list(table["block"])
    fig = go.Figure()
    for key, label in (("cosine", "cosine similarity"), ("js", "JS distance"),
                       ("topk_overlap", "top-k overlap")):
        fig.add_trace(go.Bar(x=blocks, y=f32(table[key]), name=label,
                             hovertemplate=f"block %{{x}}<br>{label} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title="How different are the two images' gates?", barmode="group",
                      xaxis_title="SE block", yaxis=dict(title="value", range=[0, 1]))
    return fig


def squeeze_gate_scatter(squeeze: np.ndarray, gates: np.ndarray, block: str,
                         highlight: Mapping[str, Any] | None = None) -> go.Figure:
    """Gate vs squeeze value, one point per channel; ``highlight`` groups (name -> channel
    indices, e.g. analysis.squeeze_vs_gate's output; non-index entries are ignored) are
    drawn on top in their own colours."""
    s, g = f32(squeeze), f32(gates)
    if s.shape != g.shape or s.ndim != 1:
        raise ValueError(f"squeeze {s.shape} and gates {g.shape} must both be (C,)")
    hover = (f"block {block}<br>channel %{{customdata}}<br>squeeze %{{x:.3f}}"
             "<br>gate %{y:.3f}<extra>%{fullData.name}</extra>")
    fig = go.Figure(go.Scatter(x=s, y=g, mode="markers", name="all channels",
                               customdata=np.arange(s.size, dtype=np.int32), hovertemplate=hover,
                               marker=dict(color="#9aa0a6", size=5, opacity=0.6)))
    groups = [(k, np.asarray(v)) for k, v in (highlight or {}).items()
              if np.ndim(v) == 1 and np.issubdtype(np.asarray(v).dtype, np.integer)]
    for n, (key, idx) in enumerate(groups):
        fig.add_trace(go.Scatter(
            x=s[idx], y=g[idx], mode="markers", name=key.replace("_", " "),
            customdata=idx.astype(np.int32), hovertemplate=hover,
            marker=dict(color=PALETTE[(n + 3) % len(PALETTE)], size=8)))
    fig.update_layout(title=f"{block}: squeeze (channel mean) vs gate",
                      xaxis_title="squeeze value (mean activation)",
                      yaxis=dict(title="gate", range=[0, 1.02]))
    return fig


def gate_curve(gate: Gate = SIGMOID) -> go.Figure:
    """The SE gate as a function of the excitation output z: ``gate(z)`` in [0, 1] (a
    network's `AttentionBlock.gate`), with the 0.1 and 0.9 lines the block statistics count
    against (a primer for the welcome page)."""
    z = np.linspace(-6, 6, 121, dtype=np.float32)
    fig = go.Figure(go.Scatter(x=z, y=gate(z).astype(np.float32), mode="lines", name="gate",
                               hovertemplate="z %{x:.2f}<br>gate %{y:.3f}<extra></extra>"))
    for y, text in ((LOW, "mostly switched off"), (HIGH, "kept almost unchanged")):
        fig.add_hline(y=y, line_dash="dot", annotation_text=f"{y:g}: {text}")
    fig.update_layout(title=f"gate s = {gate.label} of z = FC2(act(FC1(squeeze)))",
                      xaxis_title="excitation output z", yaxis=dict(title="gate", range=[0, 1]),
                      showlegend=False, margin=dict(l=60, r=20, t=50, b=40))
    return fig
