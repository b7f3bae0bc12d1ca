"""Class baseline: how typical each image's gates are for its class, block by block, against
the dataset statistics (stats.npz of ``se-viz analyze``) opened in the sidebar."""

from __future__ import annotations

import numpy as np
import streamlit as st

from ...analysis.dataset_stats import DatasetStats, match_class, typicality
from ...plots.dataset import typicality_figure
from ...runs import ImageResult
from ..common import chart, class_name
from ..state import Page

LABEL = "Class baseline"
ALL_IMAGES = "(all images of the dataset)"


def class_ui(res: ImageResult, model, stats: DatasetStats, i: int) -> str | None:
    """The baseline class for one image: its predicted class when the dataset has it."""
    top = int(np.argmax(res.probs))
    matched = match_class(stats, top, model.info.num_classes)
    options = [ALL_IMAGES, *stats.classes]
    index = options.index(stats.classes[matched]) if matched is not None else 0
    choice = st.selectbox("Compare with", options, index=index, key=f"baseline_class_{i}",
                          help="Defaults to the predicted class when the dataset has a "
                               "folder named like it (WordNet id, name or index).")
    predicted = class_name(model, top)
    st.caption(f"Predicted: **{predicted}** ({res.probs[top]:.1%})."
               + ("" if matched is not None else " No dataset class matches it."))
    return None if choice == ALL_IMAGES else choice


def render(page: Page) -> None:
    loaded, model, stats = page.loaded, page.model, page.baseline
    if stats is None:
        st.info("Open a dataset's statistics in the sidebar (**Class baseline**) to see how "
                "typical each image's gates are for its class, block by block.")
        st.code("se-viz analyze photos/ --out results/   # then open results/stats.npz",
                language="bash")
        return
    st.markdown(f"Baseline: **{len(stats.classes)} classes, {stats.all_count} images** "
                f"({stats.meta.get('arch', '?')}). Per block: the mean over channels of "
                "|gate - class mean| / class std (0 = exactly typical, about 0.8 for a typical "
                "member of a normal class), and the cosine between the gates and the class mean.")
    sha = stats.meta.get("weights_sha256")
    if sha and model.info.sha256 and sha != model.info.sha256:
        st.warning(f"These statistics were made with other weights (sha256 `{sha[:12]}`, "
                   f"the model here has `{model.info.sha256[:12]}`): compare with care.")
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        with st.container(border=True):
            st.subheader(photo.name)
            cls = class_ui(res, model, stats, i)
            try:
                t = typicality(stats, res.gates, cls)
            except ValueError as exc:
                st.error(f"{exc}.")
                return
            z = t["mean_abs_z"]
            worst = max(z, key=z.get)
            st.markdown(f"Least typical block: **{worst}** (mean |z| {z[worst]:.2f}); most "
                        f"typical: **{min(z, key=z.get)}** ({min(z.values()):.2f}).")
            chart(typicality_figure(t), f"baseline_{i}", height=420)
