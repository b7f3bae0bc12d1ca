"""Overview: per image, the crop the network saw, its top-5 and the gate heatmap (one row
per attention block of the network)."""

from __future__ import annotations

import streamlit as st

from ...analysis import channel_order
from ...plots import gate_heatmap
from ...runs import net_key
from ..common import chart, top_table
from ..state import Page, shared_figure

LABEL = "Overview"
ORDERS = ("natural", "sorted by gate", "sorted by another image")


def order_ui(names: list[str]) -> tuple[str, str | None]:
    left, right = st.columns([2, 1])
    mode = left.radio("Channel order", ORDERS, horizontal=True, key="order",
                      help="Sorting by another image lays every image out in that image's order.")
    ref = right.selectbox("Reference image", names, key="order_ref") if mode == ORDERS[2] else None
    return mode, ref


def channel_orders(gates: dict, mode: str, ref: dict | None) -> dict | None:
    if mode == ORDERS[0]:
        return None
    if mode == ORDERS[1] or ref is None:
        return {b: channel_order(g, "sorted") for b, g in gates.items()}
    return {b: channel_order(g, "reference", ref[b]) for b, g in gates.items()}


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    mode, ref = order_ui(loaded.names)
    ref_gates = loaded.result(ref).gates if ref else None
    ref_key = loaded.key[loaded.names.index(ref)] if ref else None
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        name = photo.name
        with st.container(border=True):
            st.subheader(name)
            left, right = st.columns([1, 2])
            side = res.crop.shape[0]
            left.image(res.crop, caption=f"The {side} x {side} crop the network saw")
            with right:
                st.markdown("**Top-5 classes**")
                st.table(top_table(res.probs, model))
            blocks = model.info.blocks
            fig = shared_figure(
                "heatmap", (name, photo.digest, net_key(model), mode, ref_key),
                lambda: gate_heatmap(res.gates, channel_orders(res.gates, mode, ref_gates),
                                     title=f"SE gates of {name} ({len(blocks)} blocks x "
                                           "channels)", blocks=blocks))
            chart(fig, f"heatmap_{i}", height=430)
