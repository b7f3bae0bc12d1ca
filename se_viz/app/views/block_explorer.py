"""Block explorer: one block's gates for one image: statistics, histogram, squeeze vs gate,
and the top-k / bottom-k channels' maps before and after reweighting."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from ...analysis import gate_stats, squeeze_vs_gate, top_channels
from ...plots import gate_histogram, maps_mosaic, overlay, squeeze_gate_scatter
from ...runs import net_key
from ..common import block_ui, chart, ids_text
from ..state import Page, shared_figure
from .channel_atlas import jump_ui

LABEL = "Block explorer"
THUMB = 160  # pixels, overlay thumbnails


def pick_ui(names: list[str], blocks) -> tuple[str, str, int]:
    a, b, c = st.columns(3)
    block = block_ui(a, "Attention block", blocks, "block")
    name = b.selectbox("Image", names, key="explore_image")
    k = c.slider("k (top and bottom channels)", 1, 16, 6, key="k")
    return block, name, k


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    block, name, k = pick_ui(loaded.names, model.info.blocks)
    res = loaded.result(name)
    g, s = res.gates[block], res.squeeze[block]
    key = (loaded.key[loaded.names.index(name)], net_key(model), block)
    stats = gate_stats(g)
    for col, (label, value) in zip(st.columns(5), (
            ("mean gate", f"{stats.mean:.3f}"), ("std", f"{stats.std:.3f}"),
            ("entropy (0-1)", f"{stats.entropy:.3f}"), ("gates < 0.1", f"{stats.frac_low:.1%}"),
            ("gates > 0.9", f"{stats.frac_high:.1%}"))):
        col.metric(label, value)
    left, right = st.columns(2)
    split = squeeze_vs_gate(s, g)
    with left:
        chart(shared_figure("hist", key, lambda: gate_histogram(g, block)), "hist", height=340)
    with right:
        chart(shared_figure("scatter", key, lambda: squeeze_gate_scatter(s, g, block, split)),
              "scatter", height=340)
        st.caption(f"Strong channels suppressed: {ids_text(split['strong_suppressed'])}  \n"
                   f"Weak channels boosted: {ids_text(split['weak_boosted'])}")
    jump_ui(model.info.blocks, "explorer_jump", block, int(top_channels(g, 1)[0]))
    show = st.radio("Show maps as", ("before and after SE", "overlay on the image"),
                    horizontal=True, key="maps_as")
    maps = res.maps[block]
    for title, idx in (("Most amplified (top-k gates)", top_channels(g, k)),
                       ("Most suppressed (bottom-k gates)", top_channels(g, k, False))):
        st.markdown(f"**{title}** of {block}")
        render_maps(res.crop, maps[idx].astype(np.float32), idx, g[idx], show, title,
                    key + (title, k))


def render_maps(crop: np.ndarray, before: np.ndarray, idx: np.ndarray, gates: np.ndarray,
                show: str, title: str, key: tuple) -> None:
    """k maps (k, H, W): before SE and after (x * gate) on one colour scale, or overlays.
    ``key`` determines the maps (image, network, block, title, k) for the figure cache."""
    if show == "overlay on the image":
        small = np.asarray(Image.fromarray(crop).resize((THUMB, THUMB), Image.BILINEAR))
        st.image([overlay(small, m) for m in before], width=THUMB, output_format="JPEG",
                 caption=[f"ch {int(i)} · gate {float(g):.2f}" for i, g in zip(idx, gates)])
        return
    rows = [("before SE", before), ("after SE (x * gate)", before * gates[:, None, None])]
    height = 80 + 2 * 700 // max(3, len(idx))
    chart(shared_figure("maps", key, lambda: maps_mosaic(rows, idx, gates)), f"maps_{title}",
          height=height)
