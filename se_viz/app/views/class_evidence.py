"""Class evidence: for one image, class and block, where the evidence for the class lies
(Grad-CAM, LayerCAM), which gates the class depends on (gate attribution), those channels'
maps, and whether removing them in that order hurts the class most (deletion curves)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from ...analysis import top_channels
from ...errors import SEVizError
from ...plots import attribution, cam, deletion_figure
from ...results import Evidence
from ...runs import net_key
from ..common import block_ui, chart, class_name, class_names
from ..evidence import DELETION_STEPS, ORDERS, class_evidence, deletion_curves, deletion_key
from ..state import Page, shared_figure
from .block_explorer import render_maps

LABEL = "Class evidence"
SOURCES = ("the image's top-5", "search all classes")
SCOPES = ("{block} (the chosen block)", "every block, ranked together")  # deletion
INTRO = ("A gate says how strongly SE scaled a channel, not whether the class depends on it. "
         "One backward pass from the class's logit gives both: **Grad-CAM** shows where in the "
         "image the evidence lies, and a channel's **attribution** (gate x d logit / d gate) "
         "is how much the logit would drop, to first order, if its gate were set to 0.")


def class_ui(probs: np.ndarray, model) -> int:
    """The class to explain: one of the image's top-5 (the top-1 first) or any class."""
    left, right = st.columns([1, 2])
    source = left.radio("Class from", SOURCES, key="ev_source")
    if source == SOURCES[0]:
        top = [int(i) for i in top_channels(probs, 5)]
        return right.selectbox("Class (the image's top-5)", top, key="ev_top",
                               format_func=lambda i: f"{class_name(model, i)} "
                                                     f"({probs[i]:.1%})")
    names = class_names(model)
    return right.selectbox("Class (type to search)", range(len(names)), key="ev_class",
                           index=int(np.argmax(probs)),
                           format_func=lambda i: f"{names[i]} (#{i})")


def pick_ui(page: Page) -> tuple[str, str, int]:
    """The image, the block and the class chosen."""
    loaded, model = page.loaded, page.model
    a, b = st.columns(2)
    name = a.selectbox("Image", loaded.names, key="ev_image")
    block = block_ui(b, "Attention block", model.info.blocks, "ev_block")
    return name, block, class_ui(loaded.result(name).probs, model)


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    st.markdown(INTRO)
    name, block, target = pick_ui(page)
    photo, res = loaded.photo(name), loaded.result(name)
    try:
        ev = class_evidence(photo, res, model, target)
    except (SEVizError, ValueError) as exc:  # e.g. a class the network does not have
        st.error(str(exc))
        return
    names = model.info.class_names  # the figures' titles name the class
    key = (photo.digest, net_key(model), names, block, target)
    st.markdown(f"**Evidence for '{class_name(model, target)}'** (class {target}, "
                f"p = {ev.probabilities[0, target]:.1%}) at **{block}**")
    render_cams(ev, res.crop, block, names, key)
    attr = ev.attribution(block)[0]
    render_attribution(ev, block, attr, names, key)
    k = st.slider("Top channels by attribution", 1, 16, 6, key="ev_k")
    idx = top_channels(attr, k)
    st.markdown(f"**Top-{len(idx)} channels by attribution** of {block}: their maps before "
                "and after SE")
    st.caption(" · ".join(f"ch {int(i)}: attribution {attr[i]:+.3g}" for i in idx))
    gates = res.gates[block]
    render_maps(res.crop, res.maps[block][idx].astype(np.float32), idx, gates[idx],
                "before and after SE", "ev_maps", key + ("attribution maps", k))
    render_deletion(page, name, block, target)


def render_cams(ev: Evidence, crop: np.ndarray, block: str, names, key: tuple) -> None:
    """Grad-CAM and LayerCAM over the crop, with one opacity slider for both."""
    opacity = st.slider("CAM opacity", 0.0, 1.0, 0.5, 0.05, key="ev_opacity")
    left, right = st.columns(2)
    for col, kind in ((left, "gradcam"), (right, "layercam")):
        with col:
            fig = shared_figure("cam", key + (kind, opacity), lambda kind=kind: cam(
                ev, 0, block, image=crop, opacity=opacity, kind=kind, labels=names))
            chart(fig, f"ev_{kind}", height=420)
    st.caption("Grad-CAM weights each channel by its mean gradient: coarse in the early "
               "blocks, whose maps are large and whose channels mean little on their own. "
               "LayerCAM weights each position by its own positive gradient, so it stays "
               "fine there; in the last blocks the two agree.")


def render_attribution(ev: Evidence, block: str, attr: np.ndarray, names, key: tuple
                       ) -> None:
    """Gate vs attribution per channel (hover: channel, gate, gradient, attribution)."""
    fig = shared_figure("attribution", key,
                        lambda: attribution(ev, 0, block, top=10, labels=names))
    chart(fig, "ev_attribution", height=400)
    helps, hurts = int((attr > 0).sum()), int((attr < 0).sum())
    st.caption(f"{helps} channels support the class (attribution > 0), {hurts} speak "
               "against it. A large gate need not mean a large attribution: the gradient "
               "decides.")


def render_deletion(page: Page, name: str, block: str, target: int) -> None:
    """Deletion curves behind a button: they cost about 3 x steps forward passes."""
    photo, res, model = page.loaded.photo(name), page.loaded.result(name), page.model
    st.markdown("**Deletion: does the class depend on these gates?**")
    scope = st.radio("Set to 0 the gates of", SCOPES, horizontal=True, key="ev_scope",
                     format_func=lambda s: s.format(block=block))
    where = block if scope == SCOPES[0] else "all"
    st.caption(f"Sets the gates to 0, the most important first by attribution, by gate "
               f"value or in a seeded random order, in {DELETION_STEPS} steps, and follows "
               "the class's probability. A faithful attribution drops it soonest (smallest "
               f"area). Costs about {len(ORDERS) * DELETION_STEPS} forward passes.")
    spec = deletion_key(photo, model, where, target)
    if st.button("Run deletion", key="ev_delete"):
        st.session_state["ev_deletion"] = spec
    if st.session_state.get("ev_deletion") != spec:
        return
    try:
        curves = deletion_curves(photo, res, model, where, target)
    except (SEVizError, ValueError) as exc:
        st.error(str(exc))
        return
    chart(shared_figure("deletion", spec, lambda: deletion_figure(curves)), "ev_deletion",
          height=380)
    st.table({"order": [c.order for c in curves],
              "area under the curve": [f"{c.area:.4f}" for c in curves]})
    best = min(curves, key=lambda c: c.area)
    st.caption(f"Deletion areas: the {best.order} order drops the class soonest "
               f"(area {best.area:.4f}).")
