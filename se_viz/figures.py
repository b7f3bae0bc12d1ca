"""Plotly figure builders: numpy arrays in, ``go.Figure`` out (no streamlit, no paddle).

One look everywhere: gates on a fixed 0-1 "Viridis" scale, differences on "RdBu" centred at
0 with a symmetric range; every trace has a hover template naming block, channel and value.
Arrays go in as float32 numpy (not lists) so plotly serialises them as compact typed arrays.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import hex_to_rgb, sequential
from plotly.subplots import make_subplots

from .analysis import (HIGH, LOW, PAPER_CITATION, PAPER_FIG6_BLOCKS, PAPER_REDUCTION_TABLE,
                       pad_blocks)

GATE_SCALE = "Viridis"
DIFF_SCALE = "RdBu"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
STAT_LINES = ("mean", "std", "entropy", "frac_low", "frac_high")
_GRID_COLS = 4


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _stage(name: str) -> str:
    """"SE_3_4" -> "3"; the whole name when it does not follow the paper's scheme."""
    parts = name.split("_")
    return parts[1] if len(parts) == 3 and parts[0] == "SE" else name


def _stage_lines(names: Sequence[str]) -> list[dict]:
    """Horizontal white lines between stages of a heatmap whose rows are ``names``."""
    return [dict(type="line", xref="paper", x0=0, x1=1, yref="y", y0=b - 0.5, y1=b - 0.5,
                 line=dict(color="white", width=2))
            for b in range(1, len(names)) if _stage(names[b]) != _stage(names[b - 1])]


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
                   customdata: np.ndarray | None = None) -> go.Figure:
    """Blocks x channels as one single-row heatmap trace per block (row b = ``z[b, :widths[b]]``)
    on a numeric y axis labelled with the block names, all on one colour axis (``scale``).

    It looks like the NaN-padded (B, Cmax) matrix ``z`` but sends only the real values
    (15,104 instead of 32,768 for SE-ResNet-50), and each row's hover names its block
    (``%{y}`` in ``hovertemplate`` becomes the name). Several heatmaps on one categorical
    axis break plotly.js ("Cannot read properties of undefined"), hence the numeric axis.
    """
    fig = go.Figure()
    for b, (name, width) in enumerate(zip(names, widths)):
        extra = {} if customdata is None else {"customdata": customdata[b:b + 1, :width]}
        fig.add_trace(go.Heatmap(z=np.ascontiguousarray(z[b:b + 1, :width]), x0=0, dx=1,
                                 y0=b, dy=1, name=name, coloraxis="coloraxis",
                                 hoverongaps=False,
                                 hovertemplate=hovertemplate.replace("%{y}", name), **extra))
    fig.update_layout(title=title, shapes=_stage_lines(names), xaxis_title="channel position",
                      coloraxis=scale,
                      yaxis=dict(title="SE block", autorange="reversed", zeroline=False,
                                 showgrid=False, tickmode="array",
                                 tickvals=list(range(len(names))), ticktext=names),
                      margin=dict(l=70, r=20, t=50, b=40))
    return fig


def gate_heatmap(gates: Mapping[str, np.ndarray],
                 orders: Mapping[str, np.ndarray] | None = None, title: str = "") -> go.Figure:
    """All blocks' gates (C,) as one heatmap: rows = blocks (SE_2_1 on top), one trace per
    block (see `_block_heatmap`), a fixed 0-1 colour scale.

    With ``orders`` (block -> permutation) position j of a row shows channel orders[j], and
    the hover's channel comes from ``customdata``; without, the channel is the x position.
    """
    z, names = pad_blocks(gates, orders)
    ids = _channel_ids(gates, orders, z.shape) if orders else None
    channel = "%{customdata}" if orders else "%{x}"
    return _block_heatmap(
        z, names, [len(gates[n]) for n in names], title or "SE gates per block",
        dict(cmin=0.0, cmax=1.0, colorscale=GATE_SCALE, colorbar=dict(title="gate")),
        "block %{y}<br>channel " + channel + "<br>gate %{z:.3f}<extra></extra>", ids)


def difference_heatmap(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                       title: str = "") -> go.Figure:
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
        "block %{y}<br>channel %{x}<br>B - A %{z:+.3f}<extra></extra>")


def gate_histogram(g: np.ndarray, block: str) -> go.Figure:
    """Histogram of one block's gates (C,) in 20 bins of width 0.05 on [0, 1]."""
    g = _f32(g)
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
            x=blocks, y=_f32(table[stat]), mode="lines+markers", name=stat,
            hovertemplate=f"block %{{x}}<br>{stat} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title="Gate statistics by depth", xaxis_title="SE block",
                      yaxis=dict(title="value", range=[0, 1.02]), hovermode="x unified")
    return fig


def similarity_heatmap(matrix: np.ndarray, names: Sequence[str]) -> go.Figure:
    """(B, B) block-to-block similarity in [0, 1] (e.g. analysis.block_similarity)."""
    names = list(names)
    fig = go.Figure(go.Heatmap(
        z=_f32(matrix), x=names, y=names, zmin=0.0, zmax=1.0, colorscale=GATE_SCALE,
        colorbar=dict(title="similarity"),
        hovertemplate="block %{y} vs block %{x}<br>similarity %{z:.3f}<extra></extra>"))
    fig.update_layout(title="Similarity of gate distributions between blocks",
                      yaxis=dict(autorange="reversed", type="category"),
                      xaxis=dict(type="category"))
    return fig


def _grid(n: int, titles: Sequence[str], cols: int = _GRID_COLS, **kw: Any) -> go.Figure:
    cols = max(1, min(cols, n))
    return make_subplots(rows=max(1, math.ceil(n / cols)), cols=cols,
                         subplot_titles=list(titles), **kw)


def _cell(i: int, cols: int) -> dict[str, int]:
    return dict(row=i // cols + 1, col=i % cols + 1)


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
    fig = _grid(len(blocks), blocks, cols=cols, shared_yaxes=True)
    for i, block in enumerate(blocks):
        g = _f32(gates_by_image[block])
        if g.ndim != 2 or g.shape[0] != len(labels):
            raise ValueError(f"{block}: gates {g.shape} do not match {len(labels)} image labels")
        for n, label in enumerate(labels):
            fig.add_trace(go.Scatter(  # no x: plotly's default 0..C-1 halves the JSON
                y=g[n], mode="lines", name=label, legendgroup=str(n),
                showlegend=i == 0, line=dict(width=1, color=PALETTE[n % len(PALETTE)]),
                hovertemplate=(f"{label}<br>block {block}<br>channel %{{x}}"
                               "<br>gate %{y:.3f}<extra></extra>")), **_cell(i, cols))
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
        fig.add_trace(go.Bar(x=blocks, y=_f32(table[key]), name=label,
                             hovertemplate=f"block %{{x}}<br>{label} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title="How different are the two images' gates?", barmode="group",
                      xaxis_title="SE block", yaxis=dict(title="value", range=[0, 1]))
    return fig


def _map_grid(maps: np.ndarray, channels: Sequence[int], gates: Sequence[float]
              ) -> tuple[np.ndarray, list[str], go.Figure]:
    """Checked (k, h, w) float32 maps, their "ch 123 · gate 0.87" titles, an empty grid."""
    maps = _f32(maps)
    if maps.ndim != 3 or len(channels) != maps.shape[0] or len(gates) != maps.shape[0]:
        raise ValueError(f"maps {maps.shape} need one channel id and one gate per map")
    titles = [f"ch {int(c)} · gate {float(g):.2f}" for c, g in zip(channels, gates)]
    fig = _grid(len(titles), titles, horizontal_spacing=0.03, vertical_spacing=0.08)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return maps, titles, fig


def feature_grid(maps: np.ndarray, channels: Sequence[int], gates: Sequence[float],
                 title: str = "", shared_scale: bool = True) -> go.Figure:
    """Small multiples of k feature maps (k, H, W), each titled "ch 123 · gate 0.87"."""
    maps, titles, fig = _map_grid(maps, channels, gates)
    cols = min(_GRID_COLS, max(1, len(titles)))
    for i, (m, ch) in enumerate(zip(maps, channels)):
        scale = (dict(coloraxis="coloraxis") if shared_scale
                 else dict(colorscale=GATE_SCALE, showscale=False))
        fig.add_trace(go.Heatmap(z=m, hovertemplate=(f"ch {int(ch)}<br>x %{{x}}, y %{{y}}"
                                                     "<br>activation %{z:.3f}<extra></extra>"),
                                 **scale), **_cell(i, cols))
    if shared_scale and maps.size:
        fig.update_layout(coloraxis=dict(colorscale=GATE_SCALE, cmin=float(maps.min()),
                                         cmax=float(maps.max()),
                                         colorbar=dict(title="activation")))
    fig.update_yaxes(autorange="reversed")  # row 0 at the top, like the image
    fig.update_layout(title=title or "Feature maps")
    return fig


def _viridis_lut() -> np.ndarray:
    """(256, 3) uint8 colour table interpolated from plotly's Viridis stops."""
    stops = np.array([hex_to_rgb(c) for c in sequential.Viridis], dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(stops))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, pos, stops[:, k]) for k in range(3)], 1).round().astype(np.uint8)


VIRIDIS_LUT = _viridis_lut()


def overlay(image: np.ndarray, fmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a feature map (h, w) over an RGB image (H, W, 3) uint8; returns (H, W, 3) uint8.

    The map is resized bilinearly to (H, W), min-max normalised to [0, 1], coloured with
    Viridis (hottest = yellow) and mixed as (1 - alpha) * image + alpha * colour.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if np.ndim(fmap) != 2:
        raise ValueError(f"feature map must be (h, w), got shape {np.shape(fmap)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    big = Image.fromarray(_f32(fmap), mode="F").resize((width, height), Image.BILINEAR)
    m = np.nan_to_num(np.asarray(big, dtype=np.float64))
    span = m.max() - m.min()
    m = (m - m.min()) / span if span > 0 else np.zeros_like(m)
    colour = VIRIDIS_LUT[np.round(m * 255).astype(np.int64)].astype(np.float64)
    return np.round((1 - alpha) * image + alpha * colour).clip(0, 255).astype(np.uint8)


def _jpeg_uri(rgb: np.ndarray, quality: int = 85) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def overlay_grid(image: np.ndarray, maps: np.ndarray, channels: Sequence[int],
                 gates: Sequence[float], alpha: float = 0.5) -> go.Figure:
    """Feature maps (k, h, w) overlaid on the image the net saw, one go.Image per channel.

    Images travel as JPEG data URIs (small JSON); hover shows the pixel position only.
    """
    maps, titles, fig = _map_grid(maps, channels, gates)
    cols = min(_GRID_COLS, max(1, len(titles)))
    for i, m in enumerate(maps):
        fig.add_trace(go.Image(source=_jpeg_uri(overlay(image, m, alpha)), name=titles[i],
                               hovertemplate=f"{titles[i]}<br>x %{{x}}, y %{{y}}<extra></extra>"),
                      **_cell(i, cols))
    fig.update_layout(title="Where the channels fire (overlay on the 224x224 input)")
    return fig


def squeeze_gate_scatter(squeeze: np.ndarray, gates: np.ndarray, block: str,
                         highlight: Mapping[str, Any] | None = None) -> go.Figure:
    """Gate vs squeeze value, one point per channel; ``highlight`` groups (name -> channel
    indices, e.g. analysis.squeeze_vs_gate's output; non-index entries are ignored) are
    drawn on top in their own colours."""
    s, g = _f32(squeeze), _f32(gates)
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


def _bars(fig: go.Figure, labels: Sequence[str], probs: Sequence[float], name: str,
          **cell: int) -> None:
    """Horizontal probability bars, top-1 on top; y positions are numbers so repeated class
    names (ImageNet has two "crane"s) stay separate bars."""
    pos = np.arange(len(labels), dtype=np.int32)
    fig.add_trace(go.Bar(x=_f32(probs), y=pos, orientation="h", name=name,
                         customdata=list(labels), text=[f"{p:.1%}" for p in probs],
                         textposition="auto",
                         hovertemplate="%{customdata}<br>p = %{x:.2%}<extra></extra>"), **cell)
    fig.update_yaxes(tickvals=pos, ticktext=list(labels), autorange="reversed", **cell)
    fig.update_xaxes(range=[0, 1], title_text="probability", **cell)


def topk_bar(labels: Sequence[str], probs: Sequence[float], title: str = "") -> go.Figure:
    """Top-k predictions as horizontal bars (probabilities in [0, 1])."""
    fig = go.Figure()
    _bars(fig, labels, probs, "probability")
    fig.update_layout(title=title or "Top predictions", showlegend=False)
    return fig


def topk_compare(labels_before: Sequence[str], probs_before: Sequence[float],
                 labels_after: Sequence[str], probs_after: Sequence[float]) -> go.Figure:
    """Top-k before and after an intervention, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("before", "after"),
                        horizontal_spacing=0.25)
    _bars(fig, labels_before, probs_before, "before", row=1, col=1)
    _bars(fig, labels_after, probs_after, "after", row=1, col=2)
    fig.update_layout(title="Predictions before and after the intervention", showlegend=False)
    return fig


def reduction_figure(rows: Sequence[Any], paper: Sequence[Sequence] = PAPER_REDUCTION_TABLE
                     ) -> go.Figure:
    """Costs vs reduction ratio r next to the paper's table (x axes log2(r)).

    ``rows``: objects with .reduction, .params_total, .params_se, .flops_total,
    .stage_se_params (e.g. costs.NetworkCosts). Left: parameters of this implementation and
    the paper's, GMACs on a secondary axis; middle: SE parameters per stage (stacked);
    right: the paper's top-1 error per r against its ResNet-50 baseline.
    """
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.13,
                        specs=[[{"secondary_y": True}, {}, {}]],
                        subplot_titles=("parameters and multiply-adds",
                                        "SE parameters per stage", "paper: top-1 error"))
    r = np.array([float(x.reduction) for x in rows])
    numeric = [p for p in paper if not isinstance(p[0], str)]
    _reduction_costs(fig, rows, r, numeric)
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
                     numeric: Sequence[Sequence]) -> None:
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
    for s in range(stages.shape[1]):
        fig.add_trace(go.Bar(x=[f"{v:g}" for v in r], y=stages[:, s] / 1e6,
                             name=f"SE params, stage {s + 2}",
                             hovertemplate=f"r = %{{x}}<br>stage {s + 2}: %{{y:.2f}} M"
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


def gate_curve() -> go.Figure:
    """The SE gate as a function of the excitation output z: sigmoid(z) in (0, 1), with the
    0.1 and 0.9 lines the block statistics count against (a primer for the welcome page)."""
    z = np.linspace(-6, 6, 121, dtype=np.float32)
    fig = go.Figure(go.Scatter(x=z, y=1 / (1 + np.exp(-z)), mode="lines", name="gate",
                               hovertemplate="z %{x:.2f}<br>gate %{y:.3f}<extra></extra>"))
    for y, text in ((LOW, "mostly switched off"), (HIGH, "kept almost unchanged")):
        fig.add_hline(y=y, line_dash="dot", annotation_text=f"{y:g}: {text}")
    fig.update_layout(title="gate = sigmoid(FC2(ReLU(FC1(squeeze))))",
                      xaxis_title="excitation output z", yaxis=dict(title="gate", range=[0, 1]),
                      showlegend=False, margin=dict(l=60, r=20, t=50, b=40))
    return fig


def emulation_figure(gates_full: Mapping[str, np.ndarray],
                     gates_emulated: Mapping[str, np.ndarray]) -> go.Figure:
    """Per block mean and max |gate change| when a larger r is emulated by masking units."""
    if list(gates_full) != list(gates_emulated):
        raise ValueError("full and emulated gates must have the same blocks in the same order")
    blocks = list(gates_full)
    diffs = [np.abs(_f32(gates_emulated[b]) - _f32(gates_full[b])) for b in blocks]
    fig = go.Figure()
    for name, values in (("mean |Δ gate|", [d.mean() for d in diffs]),
                         ("max |Δ gate|", [d.max() for d in diffs])):
        fig.add_trace(go.Bar(x=blocks, y=_f32(values), name=name,
                             hovertemplate=f"block %{{x}}<br>{name} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title="Reduction-ratio emulation: how much the gates move",
                      barmode="group", xaxis_title="SE block",
                      yaxis=dict(title="|emulated - full|", range=[0, 1]))
    return fig


def to_html(fig: go.Figure) -> str:
    """A standalone HTML page (plotly.js inlined) for download/export."""
    return fig.to_html(include_plotlyjs=True, full_html=True)
