"""Compare blocks: one image's statistics across depth, block-to-block similarity over the
loaded images, and the paper's Figure 6 view."""

from __future__ import annotations

import streamlit as st

from ...analysis import PAPER_FIG6_FINDING, block_similarity, figure6_blocks, stats_table
from ...analysis.paper import PAPER_ARCHS
from ...plots import figure6, similarity_heatmap, stats_profile
from ...runs import net_key
from ..common import chart
from ..state import Page, shared_figure

LABEL = "Compare blocks"


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    name = st.selectbox("Image for the depth profile", loaded.names, key="profile_image")
    chart(stats_profile(stats_table(loaded.result(name).gates)), "profile", height=380)
    stacked = loaded.stacked()
    chart(similarity_heatmap(block_similarity(stacked), list(stacked)), "similarity",
          height=520)
    st.caption(f"Similarity of gate-value distributions, pooled over {len(loaded.names)} "
               "image(s).")
    shown = figure6_blocks(model.info.blocks, model.info.arch)
    fig6 = shared_figure("fig6", (loaded.key, net_key(model)),
                         lambda: figure6(stacked, loaded.names, shown))
    chart(fig6, "fig6", height=560)
    if model.info.arch in PAPER_ARCHS:
        st.info(f"**The paper's finding.** {PAPER_FIG6_FINDING}")
    else:
        st.info(f"**The paper's finding** (on SE-ResNet-50; shown here for "
                f"`{model.info.arch}`: {', '.join(shown)}). {PAPER_FIG6_FINDING}")
