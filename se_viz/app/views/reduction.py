"""Reduction ratio: parameters and multiply-adds for every r beside the paper's Table 10,
and what a narrower SE bottleneck does to the gates of the user's images."""

from __future__ import annotations

import streamlit as st

from ...analysis import PAPER_CITATION, PAPER_REDUCTION_TABLE
from ...arch import STAGES
from ...plots.reduction import emulation_figure, reduction_figure
from ...runs import emulation, net_key
from ..common import chart, queue_notice, render_topk_change
from ..sidebar import RATIOS
from ..state import Page, results, shared_figure

LABEL = "Reduction ratio"


@st.cache_data(max_entries=4, show_spinner="Counting parameters and FLOPs for each r ...")
def cost_rows(arch: str) -> list:
    """Full-size SE-ResNet-50 costs for every r in RATIOS, counted from built models."""
    from ...engine.costs import reduction_table

    return reduction_table(arch, RATIOS, 224)


def cost_tables(rows: list, r: float) -> tuple[dict, dict]:
    paper = {p.reduction: p for p in PAPER_REDUCTION_TABLE}
    whole = {"r": [f"{x.reduction:g}" for x in rows],
             "params (M)": [f"{x.params_total / 1e6:.2f}" for x in rows],
             "SE params (M)": [f"{x.params_se / 1e6:.2f}" for x in rows],
             "GMACs": [f"{x.flops_total / 1e9:.3f}" for x in rows],
             "SE MMACs": [f"{x.flops_se / 1e6:.2f}" for x in rows],
             "paper params (M)": [_paper(paper, x.reduction, 3) for x in rows],
             "paper top-1 err (%)": [_paper(paper, x.reduction, 1) for x in rows],
             "paper top-5 err (%)": [_paper(paper, x.reduction, 2) for x in rows]}
    row = next(x for x in rows if x.reduction == r)
    stages = {"stage": list(STAGES),
              "params (M)": [f"{v / 1e6:.2f}" for v in row.stage_params],
              "SE params (M)": [f"{v / 1e6:.3f}" for v in row.stage_se_params],
              "GMACs": [f"{v / 1e9:.3f}" for v in row.stage_flops],
              "SE MMACs": [f"{v / 1e6:.3f}" for v in row.stage_se_flops]}
    return whole, stages


def _paper(paper: dict, r: float, column: int) -> str:
    row = paper.get(int(r)) if float(r).is_integer() else None
    return f"{row[column]:g}" if row else "—"


def render(page: Page) -> None:
    model = page.model
    rows = cost_rows(model.info.arch)
    st.markdown("Parameters and multiply-adds (the paper's \"FLOPs\") of the full-size "
                f"`{model.info.arch}` at 224 x 224, counted from built models, beside the "
                "paper's Table 10.")
    r = st.selectbox("r for the per-stage breakdown", RATIOS, index=RATIOS.index(16),
                     key="cost_r")
    whole, stages = cost_tables(rows, r)
    st.table(whole)
    st.caption(f"Paper: {PAPER_CITATION} ResNet-50 without SE: "
               f"{PAPER_REDUCTION_TABLE[-1].params_m} M parameters, "
               f"{PAPER_REDUCTION_TABLE[-1].top1_err}% top-1 error.")
    st.markdown(f"**Per stage at r = {r}**")
    st.table(stages)
    chart(shared_figure("reduction", (model.info.arch, RATIOS),
                        lambda: reduction_figure(rows)), "reduction", height=520)
    render_emulation(page)


def render_emulation(page: Page) -> None:
    loaded, model = page.loaded, page.model
    own = model.info.reduction
    st.subheader("Emulate a larger r with the loaded weights")
    st.warning("**Emulation, not a retrained network.** A smaller bottleneck is imitated by "
               "keeping only the most important hidden SE units (ranked on these images) and "
               "zeroing the rest; a network trained at that r would learn different weights.")
    choices = [x for x in RATIOS if x > own]
    if not choices:
        st.info(f"The model already uses r = {own:g}; there is no larger r to emulate.")
        return
    with st.form("emulation"):
        target = st.selectbox("Emulated r", choices, key="emulate_r")
        if st.form_submit_button("Run emulation"):
            st.session_state["emu_spec"] = target
    target = st.session_state.get("emu_spec")
    if target is None or target not in choices:
        return
    spec, intervention = emulation(model, list(loaded.results), target)
    st.markdown(f"**Emulated r = {target}** (model r = {own:g})")
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        with queue_notice() as on_wait:
            out = results().modified(photo, res, model, spec, intervention, on_wait)
        with st.expander(photo.name, expanded=i == 0):
            fig = shared_figure("emulation", (photo.digest, net_key(model), spec),
                                lambda: emulation_figure(res.gates, out.gates))
            chart(fig, f"emu_{i}", height=360)
            render_topk_change(res.probs, out.probs, model, f"emu_top_{i}",
                               (photo.digest, net_key(model), spec))
