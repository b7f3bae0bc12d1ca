"""SE block, step by step: one image through one SE block (squeeze, FC1 + act, FC2 +
gate, reweight) with the shapes on every step; the tutorial's SELayer1 and SELayer2
side by side, shown equal on this image; its published SELayer2 and what it computes;
and where the gate sits in the network."""

from __future__ import annotations

import inspect

import numpy as np
import streamlit as st

from ...blocks import by_name
from ...plots import maps_mosaic
from ...plots.diagram import bottleneck_diagram
from ...plots.steps import vector_figure
from ...runs import ImageResult, Walkthrough, net_key, walkthrough
from ..common import block_ui, chart
from ..state import Page

LABEL = "SE block, step by step"
PUBLISHED = "y=self.excitation(x)"
FIXED = "y=self.excitation(y)"


@st.cache_resource(max_entries=32, show_spinner="Running the block step by step ...")
def cached_walkthrough(key: tuple, _model, _res: ImageResult, block: str) -> Walkthrough:
    """One walkthrough per (image, network, block), shared read-only by every session."""
    return walkthrough(_model, _res, block)


def pick_ui(names: list[str], blocks) -> tuple[str, str, int]:
    a, b, c = st.columns(3)
    name = a.selectbox("Image", names, key="steps_image")
    block = block_ui(b, "SE block", blocks, "steps_block", se_only=True)
    k = c.slider("channels shown", 2, 8, 4, key="steps_k")
    return name, block, k


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    if not any(b.reducible for b in model.info.blocks):
        st.info(f"`{model.info.arch}` has no SE block with fully connected layers to step "
                "through (its attention blocks are ECA: one 1-D convolution across channels, "
                "no bottleneck). The other views show its gates.")
        return
    name, block, k = pick_ui(loaded.names, model.info.blocks)
    res = loaded.result(name)
    photo = loaded.photo(name)
    walk = cached_walkthrough((photo.digest, net_key(model), block), model, res, block)
    left, right = st.columns([3, 2])
    with left:
        render_steps(walk, k)
    with right:
        render_code(walk)
    render_published(walk, k)
    st.subheader("Where the gate sits")
    chart(bottleneck_diagram(by_name(model.info.blocks)[block]), "steps_diagram", height=520)


def render_steps(walk: Walkthrough, k: int) -> None:
    s, maps = walk.steps, walk.maps
    c, (h, w) = s.channels, maps.shape[1:]
    top, bottom = s.extremes(max(1, k // 2))
    shown = np.concatenate([top, bottom])
    st.markdown(f"**1. The block's input U** `(1, {c}, {h}, {w})`: {len(shown)} of its {c} "
                "channels (the largest and the smallest gates).")
    chart(maps_mosaic([("U", maps[shown])], shown, s.gates[shown]), "steps_u", height=220)
    st.markdown(f"**2. Squeeze** z = GAP(U) `(1, {c})`: the mean of each channel's map.")
    chart(vector_figure(s.squeeze, f"{walk.block}: squeeze z", "squeeze"), "steps_z",
          height=260)
    hidden = s.hidden.size
    act, gate = walk.about.act, walk.about.gate.label
    st.markdown(f"**3. FC1 + {act}** `(1, {c}) -> (1, {hidden})`: **{s.zero_hidden} of "
                f"{hidden}** hidden units are at or below zero for this image.")
    chart(vector_figure(s.hidden, f"{walk.block}: {act}(z W1 + b1)", "hidden value"),
          "steps_hidden", height=240)
    st.markdown(f"**4. FC2 + {gate}** `(1, {hidden}) -> (1, {c})`: the gates s, one per "
                f"channel. Recomputed here from z with this block's weights, they match the "
                f"network's gates to **{s.mismatch:.1e}**.")
    chart(vector_figure(s.gates, f"{walk.block}: gates s", "gate", (0, 1), shown),
          "steps_gates", height=260)
    st.table({"channel": [int(i) for i in shown],
              "squeeze z": [f"{s.squeeze[i]:.4f}" for i in shown],
              "gate s": [f"{s.gates[i]:.4f}" for i in shown]})
    st.markdown(f"**5. Reweight** U * s `(1, {c}, {h}, {w})`: each channel's map times its "
                "gate, the largest and the smallest gates.")
    rows = [("before (U)", maps[shown]),
            ("after (U * s)", maps[shown] * s.gates[shown, None, None])]
    chart(maps_mosaic(rows, shown, s.gates[shown]), "steps_reweight", height=320)


def render_code(walk: Walkthrough) -> None:
    from ...engine import tutorial

    st.markdown("**The tutorial's two implementations** (se_viz/engine/tutorial.py)")
    st.code(inspect.getsource(tutorial.SELayer1), language="python", wrap_lines=True)
    st.code(inspect.getsource(tutorial.SELayer2), language="python", wrap_lines=True)
    st.markdown("What differs: SELayer1 flattens the squeeze to (N, C) for `nn.Linear` and "
                "reshapes the gates back to (N, C, 1, 1); SELayer2 keeps (N, C, 1, 1) and uses "
                "1x1 convolutions, whose weights are the Linear weights transposed, "
                "`[out, in, 1, 1]`.")
    st.code("- y = self.avg_pool(x).reshape([b, c])  # SELayer1: (N, C) for nn.Linear\n"
            "- y = self.fc(y).reshape([b, c, 1, 1])\n"
            "+ y = self.squeeze(x)                   # SELayer2: stays (N, C, 1, 1)\n"
            "+ y = self.excitation(y)                #   for the 1x1 convolutions",
            language="diff")
    st.success(f"On this image, with {walk.block}'s own weights, SELayer1 and SELayer2 give the "
               f"same output: largest difference **{walk.layers.largest_difference:.1e}** "
               f"over all {walk.maps.size:,} values.")


def render_published(walk: Walkthrough, k: int) -> None:
    from ...analysis.se_steps import published_gate_spread

    s, run = walk.steps, walk.layers
    st.subheader("The published SELayer2")
    st.markdown(f"As published, its forward reads `{PUBLISHED}`: the excitation runs on the "
                "full map x, not on the squeezed y, so every pixel gets its own gate from its "
                "own channels only, with no global context. That is not SE. The fix is one "
                f"line: `{FIXED}`.")
    st.code(f"y=self.squeeze(x)\n{PUBLISHED}   # as published: per-pixel gates\n"
            f"# fix:\n{FIXED}", language="python")
    top, bottom = s.extremes(max(1, k // 2))
    shown = np.concatenate([top, bottom])
    maps = run.published_gates[shown]
    full = np.broadcast_to(s.gates[shown, None, None], maps.shape)
    chart(maps_mosaic([("published: a gate per pixel", maps),
                       ("SE: one gate per channel", full)], shown, s.gates[shown],
                      value="gate", zrange=(0, 1)), "steps_published", height=320)
    spread = published_gate_spread(run.published_gates)
    se_out = run.out2
    gap = np.abs(run.published - se_out)
    scale = float(np.abs(se_out).mean()) or 1.0
    st.markdown(f"Its per-pixel gates vary over the {walk.maps.shape[1]} x "
                f"{walk.maps.shape[2]} positions by up to **{spread.max():.3f}** (median "
                f"{np.median(spread):.3f} per channel); the real gate is one number per "
                f"channel. Its output differs from the SE output by **{gap.mean():.4f}** on "
                f"average ({gap.mean() / scale:.0%} of the mean |SE output|), at most "
                f"{gap.max():.3f}.")
