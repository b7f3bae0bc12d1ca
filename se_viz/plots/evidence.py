"""Class evidence (`se_viz.explain`, `se_viz.deletion`): an `Evidence` or `DeletionCurve`s in,
``go.Figure`` out; and the class activation map over the crop as pixels (`cam_overlay`, for
PNG files). numpy, Pillow and plotly only.

    ev = se_viz.explain(model, photos)           # target None: each image's top-1 class
    se_viz.plots.cam(ev, 0, "SE_5_3", image=crop)  # Grad-CAM over the (H, W, 3) uint8 crop
    se_viz.plots.attribution(ev, 0, "SE_5_3")     # gate vs gate x d logit / d gate
    se_viz.plots.attribution_heatmap(ev, 0)       # every block, coloured by attribution
    se_viz.plots.deletion_figure([se_viz.deletion(model, photo, "SE_5_3", o)
                                  for o in ("attribution", "gate", "random")])
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import sequential

from ..analysis import channel_order, top_channels
from ..blocks import AttentionBlock
from ..labels import label_for
from ..results import DeletionCurve, Evidence
from .gates import gate_heatmap
from .maps import colour_table
from .style import CAM_SCALE, PALETTE, f32

KINDS = {"gradcam": ("cam", "Grad-CAM"), "layercam": ("layercam", "LayerCAM")}
CAM_LUT = colour_table(sequential.Inferno)  # the PNG twin of CAM_SCALE
ORDER_COLOURS = {"attribution": PALETTE[3], "gate": PALETTE[0], "random": PALETTE[7]}


def upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a map (h, w) to ``size`` = (H, W) float32, pixel centres aligned
    (half-pixel sampling, edges clamped: Pillow's BILINEAR and torch's align_corners=False
    for enlargement). A constant map stays exactly constant."""
    m = f32(m)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"map must be a non-empty (h, w) array, got shape {m.shape}")

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)

    y0, y1, wy = axis(m.shape[0], int(size[0]))
    x0, x1, wx = axis(m.shape[1], int(size[1]))
    rows = m[y0] + (m[y1] - m[y0]) * wy[:, None]
    return (rows[:, x0] + (rows[:, x1] - rows[:, x0]) * wx).astype(np.float32)


def cam_overlay(image: np.ndarray, cam_map: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """A class activation map (h, w) over an RGB crop (H, W, 3) uint8 -> (H, W, 3) uint8:
    upsampled (`upsample`), coloured on Inferno from 0 to the map's max (as `cam`), mixed as
    (1 - opacity) * image + opacity * colour."""
    image = _crop(image)
    _opacity(opacity)
    m = upsample(cam_map, image.shape[:2])
    t = np.clip(m / _top(m), 0.0, 1.0)
    colour = CAM_LUT[np.round(t * 255).astype(np.int64)].astype(np.float64)
    return np.round((1 - opacity) * image + opacity * colour).clip(0, 255).astype(np.uint8)


def cam(evidence: Evidence, i: int = 0, block: str | None = None,
        image: np.ndarray | None = None, opacity: float = 0.5, kind: str = "gradcam",
        labels: Sequence[str] | None = None) -> go.Figure:
    """Image ``i``'s class activation map at ``block`` (default: the deepest block held):
    ``kind`` "gradcam" (`Evidence.cam`) or "layercam". Given ``image``, the (H, W, 3) uint8
    crop the network saw, the map is upsampled bilinearly to (H, W) and drawn over it at
    ``opacity``; else the (h, w) map alone. Colour scale from 0 to the map's max; hover shows
    the value. ``labels``: class names (default ImageNet's for 1000 classes)."""
    i = _index(evidence, i)
    _opacity(opacity)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    field, label = KINDS[kind]
    held = getattr(evidence, field)
    block = _block(evidence, block, held, label)
    m = f32(held[block][i])
    fig = go.Figure()
    if image is not None:
        image = _crop(image)
        fig.add_trace(go.Image(source=_png_uri(image), name="crop", hoverinfo="skip"))
        m = upsample(m, image.shape[:2])
    fig.add_trace(go.Heatmap(
        z=m, zmin=0.0, zmax=_top(m), colorscale=CAM_SCALE, name=label,
        opacity=opacity if image is not None else 1.0, colorbar=dict(title=label),
        hovertemplate=f"x %{{x}}, y %{{y}}<br>{label} %{{z:.3g}}<extra></extra>"))
    fig.update_layout(title=f"{label} at {block}: {evidence.image_name(i)}, "
                            f"{_target(evidence, i, labels)}",
                      xaxis=dict(visible=False, constrain="domain"),
                      yaxis=dict(visible=False, autorange="reversed", scaleanchor="x",
                                 constrain="domain"),
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def attribution(evidence: Evidence, i: int = 0, block: str | None = None, top: int = 10,
                labels: Sequence[str] | None = None) -> go.Figure:
    """Gate (x) vs attribution = gate x d logit[target] / d gate (y) of ``block``'s channels
    for image ``i`` (default block: the deepest); hover names channel, gate, gradient and
    attribution; the ``top`` channels by |attribution| are drawn on top and labelled."""
    i = _index(evidence, i)
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
        raise ValueError(f"top (how many channels to label) must be an integer >= 0, got {top!r}")
    block = _block(evidence, block, evidence.gates, "gates")
    g, d = f32(evidence.gates[block][i]), f32(evidence.gate_grad[block][i])
    a = f32(evidence.attribution(block)[i])
    data = np.stack([np.arange(g.size), g, d, a], 1).astype(np.float32)
    hover = (f"block {block}<br>channel %{{customdata[0]:d}}<br>gate %{{customdata[1]:.3f}}"
             "<br>gradient %{customdata[2]:+.3g}<br>attribution %{customdata[3]:+.3g}"
             "<extra>%{fullData.name}</extra>")
    fig = go.Figure(go.Scatter(x=g, y=a, mode="markers", name="all channels", customdata=data,
                               hovertemplate=hover,
                               marker=dict(color="#9aa0a6", size=5, opacity=0.6)))
    idx = top_channels(np.abs(a), int(top)) if top else np.zeros(0, np.int64)
    if idx.size:
        fig.add_trace(go.Scatter(
            x=g[idx], y=a[idx], mode="markers+text", name=f"top {idx.size} by |attribution|",
            customdata=data[idx], hovertemplate=hover, text=[f"ch {c}" for c in idx],
            textposition="top center", marker=dict(color=PALETTE[3], size=8)))
    fig.add_hline(y=0.0, line=dict(color="#9aa0a6", width=1, dash="dot"))
    fig.update_layout(title=f"{block}: gate vs attribution, {evidence.image_name(i)}, "
                            f"{_target(evidence, i, labels)}",
                      xaxis=dict(title="gate", range=[0, 1.02]),
                      yaxis_title="attribution (gate x d logit / d gate)")
    return fig


def attribution_heatmap(evidence: Evidence, i: int = 0, order: str = "natural",
                        blocks: tuple[AttentionBlock, ...] | None = None,
                        labels: Sequence[str] | None = None) -> go.Figure:
    """Every block's gate attribution of image ``i`` as one heatmap (the overview's
    `gate_heatmap`, diverging colours centred on 0); ``order`` "sorted" lays each row out by
    attribution, largest first; ``blocks`` (`model.info.blocks`) adds paths and stages."""
    i = _index(evidence, i)
    if order not in ("natural", "sorted"):
        raise ValueError(f"order must be natural or sorted, got {order!r}")
    rows = {b: a[i] for b, a in evidence.attributions.items()}
    orders = None if order == "natural" else {b: channel_order(a, "sorted")
                                              for b, a in rows.items()}
    return gate_heatmap(rows, orders, blocks=blocks, value="attribution", signed=True,
                        title=f"Gate attribution of {evidence.image_name(i)}, "
                              f"{_target(evidence, i, labels)}")


def deletion_figure(curves: Sequence[DeletionCurve]) -> go.Figure:
    """Target probability vs fraction of gates set to 0 (most important first), one line
    per curve (order), its area in the legend: the lower, the sooner that order found the
    gates the class depends on."""
    curves = list(curves)
    if not curves:
        raise ValueError("no deletion curves to draw: pass se_viz.deletion(...) results")
    several = len({c.block for c in curves}) > 1
    fig = go.Figure()
    for n, c in enumerate(curves):
        name = f"{c.order} (area {c.area:.3f})"
        name = f"{c.block} {name}" if several else name
        fig.add_trace(go.Scatter(
            x=f32(c.fraction), y=f32(c.prob), mode="lines+markers", name=name,
            customdata=np.asarray(c.k, np.int32),
            line=dict(color=ORDER_COLOURS.get(c.order, PALETTE[n % len(PALETTE)])),
            hovertemplate=(f"{c.block}, order {c.order}<br>%{{customdata}} gates removed "
                           "(%{x:.0%})<br>probability %{y:.3f}<extra></extra>")))
    blocks = ", ".join(dict.fromkeys(c.block for c in curves))
    targets = ", ".join(dict.fromkeys(f"class {c.target}" for c in curves))
    fig.update_layout(title=f"Deletion of {blocks}'s gates: {targets}",
                      xaxis=dict(title="fraction of gates set to 0", range=[0, 1]),
                      yaxis=dict(title="probability of the class", rangemode="tozero"),
                      hovermode="closest")
    return fig


def _index(evidence: Evidence, i: int) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"image index must be an integer, got {i!r}")
    if not 0 <= i < len(evidence):
        raise IndexError(f"image index {i} is outside 0..{len(evidence) - 1}")
    return int(i)


def _block(evidence: Evidence, block: str | None, held: dict, what: str) -> str:
    """``block``, or the deepest block ``held`` has; a clear error when it is missing."""
    if block is None and held:
        return list(held)[-1]
    if block in held:
        return block
    if block is not None and block not in evidence.gates:
        raise ValueError(f"no attention block {block!r}; this evidence has "
                         f"{', '.join(evidence.gates)}")
    raise ValueError(f"this evidence holds no {what} of {block or 'any block'} (it has: "
                     f"{', '.join(held) or 'none'}); explain with blocks=[{block!r}]")


def _target(evidence: Evidence, i: int, labels: Sequence[str] | None) -> str:
    t = int(evidence.target[i])
    name = label_for(t, evidence.logits.shape[1], labels)
    return f"target {name} (p = {float(evidence.probabilities[i, t]):.1%})"


def _top(m: np.ndarray) -> float:
    """The colour scale's top: the map's max, 1 for an all-zero (or empty) map."""
    top = float(np.max(m)) if m.size else 0.0
    return top if top > 0 else 1.0


def _opacity(opacity: float) -> None:
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")


def _crop(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be the (H, W, 3) uint8 crop, got {image.shape} "
                         f"{image.dtype}")
    return image


def _png_uri(image: np.ndarray) -> str:
    """(H, W, 3) uint8 as a PNG data URI: a tenth of the JSON of plotly's pixel list."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
