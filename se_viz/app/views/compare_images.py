"""Compare images: the chosen images' gates side by side, their difference, and per-block
distances (cosine, Jensen-Shannon, top-k overlap)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from ...analysis import compare_images
from ...plots import difference_heatmap, distance_bars, figure6
from ...runs import net_key
from ..common import block_ui, chart
from ..state import Page, shared_figure

LABEL = "Compare images"


def pick_ui(names: list[str], blocks) -> tuple[list[str], str, str, str] | None:
    if len(names) < 2:
        st.info("Load two or more images (sidebar) to compare them.")
        return None
    chosen = st.multiselect("Images", names, default=names[:2], key="cmp_images")
    if len(chosen) < 2:
        st.info("Choose at least two images.")
        return None
    a, b, c = st.columns(3)
    block = block_ui(a, "Block for the side-by-side view", blocks, "cmp_block")
    first = b.selectbox("Image A", chosen, index=0, key="cmp_a")
    second = c.selectbox("Image B", chosen, index=1, key="cmp_b")
    return chosen, block, first, second


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    picked = pick_ui(loaded.names, model.info.blocks)
    if picked is None:
        return
    chosen, block, first, second = picked
    for col, n in zip(st.columns(len(chosen)), chosen):
        col.image(loaded.result(n).crop, caption=n)
    side = {block: np.stack([loaded.result(n).gates[block] for n in chosen])}
    chart(shared_figure("side", (loaded.key, tuple(chosen), block, net_key(model)),
                        lambda: figure6(side, chosen, [block])), "side", height=360)
    ga, gb = loaded.result(first).gates, loaded.result(second).gates
    chart(difference_heatmap(ga, gb, f"{second} - {first}", model.info.blocks), "diff",
          height=430)
    k = st.slider("k for the top-k overlap", 1, 64, 10, key="cmp_k")
    table = compare_images(ga, gb, k)
    chart(distance_bars(table), "distances", height=380)
    order = np.argsort(-table["js"], kind="stable")[:3]
    st.markdown("**Blocks that separate these images most** (largest Jensen-Shannon distance): "
                + ", ".join(f"{table['block'][i]} ({table['js'][i]:.3f})" for i in order))
    st.dataframe({k2: list(v) for k2, v in table.items()}, hide_index=True)
