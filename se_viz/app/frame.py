"""The app's frame: page config, the sidebar, and the table of views as tabs.

    streamlit run app.py          (in a checkout; app.py calls `main`)
    se-viz app [--port P]         (from an installed package; runs this file)
    SE_VIZ_WIDTH=8 ...            a narrow, fast demo model (the tests use it)

Every number comes from se_viz: images run once per (image, weights, settings) and are
shared by every session (`se_viz.runs`), in the order they arrive; switching tabs,
blocks, channel order or k only redraws cached arrays.
"""

from __future__ import annotations

import time

import streamlit as st

from ..plots import gate_curve
from ..runs import Photo
from . import sidebar
from .common import chart, guard, log, queue_notice
from .state import (FULL_WIDTH, Loaded, Page, env_int, keep_paddle_eager, results,
                    shared_figure, warm_imports)
from .views import LABELS, VIEWS

TITLE = "SE gates of SE-ResNet-50"


def sidebar_ui(width: int) -> tuple[list[Photo], object, object]:
    """Photos, the model (with its status) and the dataset statistics chosen in the sidebar."""
    with st.sidebar:
        photos = sidebar.photos_ui()
        st.subheader("Model")
        status = st.container()
        choice = sidebar.network_ui(width)
        baseline = sidebar.baseline_ui()
    with status:
        model = sidebar.get_model(choice)
        sidebar.render_weights_status(model, width)
    return photos, model, baseline


def analyse_all(photos: list[Photo], model) -> Loaded:
    """Run every photo (cached; in turn with other users'); a bad one shows its error and
    is left out."""
    kept, done = [], []
    with st.spinner(f"Running {len(photos)} image(s) through the network ..."):
        for photo in photos:
            with guard(f"analysing '{photo.name}'"), queue_notice() as on_wait:
                done.append(results().image(photo, model, on_wait))
                kept.append(photo)
    return Loaded(tuple(kept), tuple(done))


def render_welcome() -> None:
    st.info("Drop one or more photos into the sidebar, or pick a sample photo, to see the "
            "gates of all 16 SE blocks.")
    st.markdown(
        "Every SE block squeezes each channel to its mean, passes the vector through a small "
        "bottleneck (C -> C/r -> C) and a sigmoid, and multiplies each channel by the result: "
        "the **gate**, between 0 (channel switched off) and 1 (kept). Blocks are named as in "
        "the paper: SE_2_1 (first block of stage 2) to SE_5_3.")
    # Also loads the browser's Plotly bundle now, not when the first photo's heatmap arrives.
    chart(shared_figure("gate_curve", (), gate_curve), "gate_curve", height=320)


def app() -> None:
    width = env_int("SE_VIZ_WIDTH", FULL_WIDTH, "64 (SE-ResNet-50) or 8 (fast demo)")
    photos, model, baseline = sidebar_ui(width)
    if model.info.untrained:
        st.warning("**Untrained weights: the attention shown means nothing.** Download the "
                   "pretrained file or choose a weights file in the sidebar.")
    if not photos:
        render_welcome()
        return
    loaded = analyse_all(photos, model)
    if not loaded.results:
        return
    page = Page(loaded, model, baseline)
    for tab, view in zip(st.tabs(LABELS, key="view", on_change="rerun"), VIEWS):
        if tab.open is False:
            continue
        with tab, guard(f"drawing the {view.label} view"):
            view.render(page)


def main() -> None:
    st.set_page_config(page_title=TITLE, page_icon=":eye:", layout="wide")
    st.title(TITLE)
    st.caption("What every Squeeze-and-Excitation block attends to, for your photos.")
    start = time.perf_counter()
    with guard("building the page"):
        keep_paddle_eager()
        warm_imports()
        app()
    log.debug("page script ran in %.1f ms", 1000 * (time.perf_counter() - start))


if __name__ == "__main__":  # `se-viz app` runs this file with streamlit
    main()
