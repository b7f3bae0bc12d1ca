"""Feature maps: tiled into one heatmap (before / after SE), or blended over the image."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import hex_to_rgb, sequential

from .style import GATE_SCALE, f32


def colour_table(stops: list[str]) -> np.ndarray:
    """(256, 3) uint8 colour table interpolated from a plotly scale's hex stops (e.g.
    ``plotly.colors.sequential.Viridis``): row round(255 * t) colours the value t in [0, 1]."""
    rgb = np.array([hex_to_rgb(c) for c in stops], dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(rgb))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, pos, rgb[:, k]) for k in range(3)], 1).round().astype(np.uint8)


VIRIDIS_LUT = colour_table(sequential.Viridis)


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
    big = Image.fromarray(f32(fmap), mode="F").resize((width, height), Image.BILINEAR)
    m = np.nan_to_num(np.asarray(big, dtype=np.float64))
    span = m.max() - m.min()
    m = (m - m.min()) / span if span > 0 else np.zeros_like(m)
    colour = VIRIDIS_LUT[np.round(m * 255).astype(np.int64)].astype(np.float64)
    return np.round((1 - alpha) * image + alpha * colour).clip(0, 255).astype(np.uint8)


def maps_mosaic(rows: list[tuple[str, np.ndarray]], channels: np.ndarray,
                gates: np.ndarray, value: str = "activation",
                zrange: tuple[float, float] | None = None) -> go.Figure:
    """Rows of k maps (title, (k, H, W)) tiled into ONE heatmap with NaN gaps and one colour
    scale (``zrange`` fixes it, e.g. (0, 1) for gates); channels (k,) ints and gates (k,)
    floats label the columns; ``value`` names what the maps hold (colour bar, hover)."""
    k, h, w = rows[0][1].shape
    gap = max(1, h // 10)
    z = np.full((len(rows) * (h + gap) - gap, k * (w + gap) - gap), np.nan, np.float32)
    notes = []
    for r, (_, maps) in enumerate(rows):
        for j in range(k):
            y0, x0 = r * (h + gap), j * (w + gap)
            z[y0:y0 + h, x0:x0 + w] = maps[j]
            if r == 0:
                notes.append(dict(x=x0 + w / 2, y=-0.5, yanchor="bottom", showarrow=False,
                                  text=f"ch {int(channels[j])} · gate {float(gates[j]):.2f}"))
    scale = {} if zrange is None else dict(zmin=zrange[0], zmax=zrange[1])
    fig = go.Figure(go.Heatmap(z=z, colorscale=GATE_SCALE, hoverongaps=False, **scale,
                               colorbar=dict(title=value),
                               hovertemplate=f"{value} %{{z:.3f}}<extra></extra>"))
    fig.update_layout(annotations=notes, margin=dict(l=130, r=10, t=30, b=10),
                      xaxis=dict(visible=False),
                      yaxis=dict(autorange="reversed", scaleanchor="x", showgrid=False,
                                 zeroline=False, ticktext=[r[0] for r in rows],
                                 tickvals=[r * (h + gap) + h / 2 for r in range(len(rows))]))
    return fig
