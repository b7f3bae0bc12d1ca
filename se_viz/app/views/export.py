"""Export: gates, predictions and metadata as CSV, NPZ and JSON; figures as standalone HTML."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import streamlit as st

from ... import export
from ...analysis import figure6_blocks, stats_table
from ...plots import figure6, gate_heatmap, stats_profile, to_html
from ..common import class_names
from ..state import Loaded, Page

LABEL = "Export"
MIMES = {"CSV": "text/csv", "NPZ": "application/octet-stream", "JSON": "application/json"}


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    files, meta = loaded.names, export.metadata(model)
    logits = np.stack([r.logits for r in loaded.results])
    gates = loaded.stacked()
    st.markdown(f"Gates of all {len(gates)} attention blocks, predictions and metadata for "
                f"{len(files)} image(s). "
                "CSV: one row per value (file, array, index, value); NPZ: one (N, C) array per "
                "block; JSON: the same plus each image's top-5.")
    makers: dict[str, Callable[[], bytes]] = {
        "CSV": lambda: export.to_csv(files, logits, gates, meta),
        "NPZ": lambda: export.to_npz(files, logits, gates, meta),
        "JSON": lambda: export.to_json(files, logits, gates, meta, class_names(model)),
    }
    for col, (fmt, make) in zip(st.columns(3), makers.items()):
        with col:
            st.download_button(f"Download {fmt}", make, file_name=f"se_gates.{fmt.lower()}",
                               mime=MIMES[fmt], key=f"export_{fmt}", on_click="ignore")
    st.markdown("**Figures as standalone HTML** (plotly.js inlined, works offline)")
    options = [f"Gate heatmap: {n}" for n in files] + ["Depth profile", "Figure 6 view"]
    which = st.selectbox("Figure", options, key="export_figure")
    st.download_button("Download figure (HTML)", lambda: to_html(
        export_figure(loaded, model, which)).encode("utf-8"), file_name="se_viz_figure.html",
        mime="text/html", key="export_html", on_click="ignore")


def export_figure(loaded: Loaded, model, which: str):
    blocks = model.info.blocks
    if which.startswith("Gate heatmap: "):
        name = which.removeprefix("Gate heatmap: ")
        return gate_heatmap(loaded.result(name).gates, title=f"SE gates of {name}",
                            blocks=blocks)
    if which == "Depth profile":
        return stats_profile(stats_table(loaded.results[0].gates))
    return figure6(loaded.stacked(), loaded.names, figure6_blocks(blocks, model.info.arch))
