"""Overview: per image, the crop the network saw, its top-5 and the gate heatmap (one row
per attention block of the network), coloured by gate or by attribution for the top-1 class."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from ...analysis import channel_order
from ...errors import SEVizError
from ...plots import gate_heatmap
from ...runs import ImageResult, Photo, net_key
from ..common import chart, class_name, top_table
from ..evidence import top1_evidence
from ..state import Page, shared_figure
from .channel_atlas import jump_ui

LABEL = "Overview"
ORDERS = ("natural", "sorted by gate", "sorted by another image")
COLOURS = ("gate", "attribution for the top-1 class")


def order_ui(names: list[str]) -> tuple[str, str | None, str]:
    left, mid, right = st.columns([2, 1, 1])
    mode = left.radio("Channel order", ORDERS, horizontal=True, key="order",
                      help="Sorting by another image lays every image out in that image's order.")
    ref = mid.selectbox("Reference image", names, key="order_ref") if mode == ORDERS[2] else None
    colour = right.radio("Colour by", COLOURS, key="overview_colour", help=(
        "Attribution: gate x d logit / d gate for the image's top-1 class (one backward pass "
        "per image, computed when first asked for): which gates the prediction depends on."))
    return mode, ref, colour


def channel_orders(gates: dict, mode: str, ref: dict | None) -> dict | None:
    if mode == ORDERS[0]:
        return None
    if mode == ORDERS[1] or ref is None:
        return {b: channel_order(g, "sorted") for b, g in gates.items()}
    return {b: channel_order(g, "reference", ref[b]) for b, g in gates.items()}


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    mode, ref, colour = order_ui(loaded.names)
    jump_ui(model.info.blocks, "overview_jump")  # a heatmap cell -> the Channel atlas
    ref_gates = loaded.result(ref).gates if ref else None
    ref_key = loaded.key[loaded.names.index(ref)] if ref else None
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        with st.container(border=True):
            st.subheader(photo.name)
            left, right = st.columns([1, 2])
            side = res.crop.shape[0]
            left.image(res.crop, caption=f"The {side} x {side} crop the network saw")
            with right:
                st.markdown("**Top-5 classes**")
                st.table(top_table(res.probs, model))
            orders = partial(channel_orders, res.gates, mode, ref_gates)  # on a figure miss
            draw = gate_figure if colour == COLOURS[0] else attribution_figure
            fig = draw(photo, res, model, orders, (mode, ref_key))
            if fig is not None:
                chart(fig, f"heatmap_{i}", height=430)


def gate_figure(photo: Photo, res: ImageResult, model: Any, orders: Callable,
                order_key: tuple) -> go.Figure:
    """The heatmap coloured by gate (0-1)."""
    blocks = model.info.blocks
    return shared_figure(
        "heatmap", (photo.name, photo.digest, net_key(model), *order_key),
        lambda: gate_heatmap(res.gates, orders(), title=f"SE gates of {photo.name} "
                             f"({len(blocks)} blocks x channels)", blocks=blocks))


def attribution_figure(photo: Photo, res: ImageResult, model: Any, orders: Callable,
                       order_key: tuple) -> go.Figure | None:
    """The heatmap coloured by gate attribution for the top-1 class (computed on demand,
    then shared); None after showing an expected error."""
    try:
        ev = top1_evidence(photo, res, model)
    except (SEVizError, ValueError) as exc:
        st.error(str(exc))
        return None
    target = int(ev.target[0])
    blocks = model.info.blocks
    return shared_figure(
        "attribution heatmap", (photo.name, photo.digest, net_key(model),
                                model.info.class_names, target, *order_key),
        lambda: gate_heatmap({b: a[0] for b, a in ev.attributions.items()}, orders(),
                             title=f"Gate attribution for '{class_name(model, target)}' "
                                   f"(top-1) of {photo.name}", blocks=blocks,
                             value="attribution", signed=True))
