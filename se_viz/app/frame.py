"""The app's frame: page config, the sidebar, and the table of views as tabs.

    streamlit run app.py          (in a checkout; app.py calls `main`)
    se-viz app [--port P]         (from an installed package: streamlit runs
                                   se_viz/app/script.py, which calls `main`)
    SE_VIZ_WIDTH=8 ...            a narrow, fast demo model (the tests use it)

Every number comes from se_viz: images run once per (image, weights, settings) and are
shared by every session (`se_viz.runs`), in the order they arrive; switching tabs,
blocks, channel order or k only redraws cached arrays.
"""

from __future__ import annotations

import os
import time

import streamlit as st

from ..plots import gate_curve
from ..runs import Photo
from . import sidebar
from .common import chart, freeze_startup_heap, guard, log, queue_notice, server_log
from .atlas_folder import atlas_ui
from .refit_folder import refit_ui
from .state import (Loaded, Page, env_int, keep_paddle_eager, results, shared_figure,
                    warm_imports)
from .views import LABELS, VIEWS

TITLE = "SE gates: what channel attention attends to"


def sidebar_ui(width: int | None) -> tuple[list[Photo], object, object, object, object]:
    """Photos, the model (with its status), the dataset statistics, the refit folder and
    the atlas's results folder chosen in the sidebar."""
    with st.sidebar:
        photos = sidebar.photos_ui()
        st.subheader("Model")
        status = st.container()
        choice = sidebar.network_ui(width)
        baseline = sidebar.baseline_ui()
        refit = refit_ui()
        atlas = atlas_ui()
    with status:
        model = sidebar.get_model(choice)
        sidebar.render_weights_status(model, width)
    return photos, model, baseline, refit, atlas


def analyse_all(photos: list[Photo], model) -> Loaded:
    """Run every photo (cached; in turn with other users': a waiting user sees their place
    in the line, then a spinner while their photo runs); a bad one shows its error and is
    left out."""
    kept, done = [], []
    for i, photo in enumerate(photos):
        label = f"Running '{photo.name}' ({i + 1} of {len(photos)}) through the network ..."
        with guard(f"analysing '{photo.name}'"), queue_notice(label) as notice:
            done.append(results().image(photo, model, notice, notice.running))
            kept.append(photo)
    return Loaded(tuple(kept), tuple(done))


def render_welcome(model) -> None:
    blocks = model.info.blocks
    first, last = blocks[0], blocks[-1]
    gate = first.gate
    st.info("Drop one or more photos into the sidebar, or pick a sample photo, to see the "
            f"gates of all {len(blocks)} attention blocks of `{model.info.arch}`.")
    st.markdown(
        "Every SE block squeezes each channel to its mean, passes the vector through a small "
        f"bottleneck (C -> h -> C) and a {gate.label}, and multiplies each channel by the "
        "result: the **gate**, between 0 (channel switched off) and 1 (kept); an ECA block "
        "replaces the bottleneck by a 1-D convolution across channels. Blocks are named "
        f"SE_stage_block, stages as the network counts them: {first.name} (first block of "
        f"{first.stage_label}) to {last.name}.")
    # Also loads the browser's Plotly bundle now, not when the first photo's heatmap arrives.
    chart(shared_figure("gate_curve", (gate.kind, gate.slope, gate.offset),
                        lambda: gate_curve(gate)), "gate_curve", height=320)


def app() -> None:
    width = env_int("SE_VIZ_WIDTH", None, "8 (a fast narrow demo model; unset: full size)")
    photos, model, baseline, refit, atlas = sidebar_ui(width)
    freeze_startup_heap()  # after the first model is built
    if model.info.untrained:
        st.warning("**Untrained weights: the attention shown means nothing.** Download the "
                   "pretrained file or choose a weights file in the sidebar.")
    if not photos:
        render_welcome(model)
        return
    loaded = analyse_all(photos, model)
    if not loaded.results:
        return
    page = Page(loaded, model, baseline, refit, atlas)
    for tab, view in zip(st.tabs(LABELS, key="view", on_change="rerun"), VIEWS):
        if tab.open is False:
            continue
        with tab, guard(f"drawing the {view.label} view"):
            view.render(page)


def main() -> None:
    # One server, many sessions: ONNX Runtime workers sleep instead of spinning, so that
    # other sessions' pages and the websocket get the cores (benchmarks/capture_contention.py).
    os.environ.setdefault("SE_VIZ_SPIN", "0")
    st.set_page_config(page_title=TITLE, page_icon=":eye:", layout="wide")
    st.title(TITLE)
    st.caption("What every Squeeze-and-Excitation block attends to, for your photos.")
    start = time.perf_counter()
    with guard("building the page"):
        server_log()
        keep_paddle_eager()
        warm_imports()
        app()
    log.debug("page script ran in %.1f ms (%s)", 1000 * (time.perf_counter() - start),
              st.session_state.get("view", "no view"))
