"""Interventions: force a block's (or a stage's) gates to a constant and see the top-5 move."""

from __future__ import annotations

import streamlit as st

from ...blocks import stages
from ...results import Intervention
from ...runs import net_key, stage_gates
from ..common import block_ui, queue_notice, render_topk_change
from ..state import Page, results

LABEL = "Interventions"
FORCE = {"1 (SE off)": 1.0, "0.5": 0.5, "the block's mean gate": "mean"}
SCOPES = ("one block", "a whole stage", "remove the last stage's SE (the paper's cheap variant)")


def intervention_ui(blocks) -> tuple | None:
    """The submitted intervention (scope, blocks, force value) or None before any submit;
    blocks and stages are the network's own (``model.info.blocks``)."""
    per_stage = stages(blocks)
    labels = list(per_stage)
    with st.form("intervention"):
        scope = st.radio("Where", SCOPES, key="iv_scope")
        a, b, c = st.columns(3)
        block = block_ui(a, "Block", blocks, "iv_block")
        stage = b.selectbox("Stage", labels, index=len(labels) - 1, key="iv_stage")
        force = c.radio("Force the gates to", list(FORCE), key="iv_force")
        if st.form_submit_button("Run intervention"):
            chosen = {SCOPES[0]: (block,), SCOPES[1]: per_stage.get(stage, ())}.get(
                scope, per_stage[labels[-1]])
            value = FORCE[force] if scope != SCOPES[2] else 1.0
            st.session_state["iv_spec"] = (scope, tuple(chosen), value)
    spec = st.session_state.get("iv_spec")
    names = {x.name for x in blocks}
    return spec if spec and set(spec[1]) <= names else None


def render(page: Page) -> None:
    loaded, model = page.loaded, page.model
    st.markdown("Force a block's gates (or a whole stage's) to a constant and see how the "
                "prediction changes. 1 switches SE off; the block's mean keeps the overall "
                "scale but removes the channel selectivity. The paper reports that removing "
                "the last stage's SE costs little accuracy.")
    chosen = intervention_ui(model.info.blocks)
    if chosen is None:
        return
    _, blocks, value = chosen
    st.markdown(f"**{', '.join(blocks)}** forced to "
                + ("each image's own mean gate" if value == "mean" else f"{value:g}"))
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        spec = repr((blocks, value))
        with queue_notice() as on_wait:
            out = results().modified(photo, res, model, spec,
                                     Intervention(gates=stage_gates(res, blocks, value)), on_wait)
        with st.expander(photo.name, expanded=True):
            render_topk_change(res.probs, out.probs, model, f"iv_top_{i}",
                               (photo.digest, net_key(model), spec))
