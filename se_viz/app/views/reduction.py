"""Reduction ratio: parameters and multiply-adds for every r beside the paper's Table 10
(networks whose SE widths are int(C / r)); the SE blocks refit at other r (`se-viz refit`,
opened in the sidebar): their curves and the user's images' gates and top-5 at each r; and
the masking emulation (no refit). Blocks without a bottleneck (ECA) have no r."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ...analysis import PAPER_CITATION, PAPER_REDUCTION_TABLE, top_channels
from ...analysis.se_fit import not_reducible, summary_rows, uses_ratio
from ...arch import hidden_width
from ...blocks import stages as stages_of
from ...errors import SEVizError
from ...plots.reduction import emulation_figure, reduction_figure
from ...plots.refit_figures import agreement_figure, block_error_figure, refit_gates_figure
from ...results import Intervention
from ...runs import emulation, net_key
from ..common import block_ui, chart, class_name, queue_notice, render_topk_change
from ..refit_folder import RefitFolder, refit_network
from ..sidebar import RATIOS
from ..state import Page, results, shared_figure

LABEL = "Reduction ratio"


@st.cache_data(max_entries=4, show_spinner="Counting parameters and FLOPs for each r ...")
def cost_rows(arch: str) -> list:
    """Full-size costs of ``arch`` for every r in RATIOS, counted from built models."""
    from ...engine.costs import reduction_table

    return reduction_table(arch, RATIOS, 224)


def cost_tables(rows: list, r: float, stage_labels: list[str]) -> tuple[dict, dict]:
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
    if len(stage_labels) != len(row.stage_params):
        stage_labels = [f"stage {i + 1}" for i in range(len(row.stage_params))]
    stages = {"stage": stage_labels,
              "params (M)": [f"{v / 1e6:.2f}" for v in row.stage_params],
              "SE params (M)": [f"{v / 1e6:.3f}" for v in row.stage_se_params],
              "GMACs": [f"{v / 1e9:.3f}" for v in row.stage_flops],
              "SE MMACs": [f"{v / 1e6:.3f}" for v in row.stage_se_flops]}
    return whole, stages


def _paper(paper: dict, r: float, column: int) -> str:
    row = paper.get(int(r)) if float(r).is_integer() else None
    return f"{row[column]:g}" if row else "—"


def render(page: Page) -> None:
    info = page.model.info
    skipped = not_reducible(info.blocks)
    if len(skipped) == len(info.blocks):
        st.info(f"**r does not apply** to `{info.arch}`: its attention blocks have no "
                f"bottleneck ({next(iter(skipped.values()))}). There is nothing to reduce, "
                "refit or emulate here; choose an SE network in the sidebar.")
        return
    if skipped:
        st.info("**r does not apply** to " + ", ".join(skipped) + ": no bottleneck.")
    rows = cost_rows(info.arch) if uses_ratio(info.blocks, info.reduction) else []
    if [float(x.reduction) for x in rows] == [float(r) for r in RATIOS]:
        render_costs(page, rows)
    else:  # not built at any r: its widths follow its own rule
        rules = sorted({b.width_rule for b in info.blocks if b.reducible and b.width_rule})
        st.info(f"`{info.arch}` is built with its own SE widths ("
                f"{'; '.join(rules) or 'its own rule'}), not at any r, so the paper's r sweep "
                "does not apply to it as a whole. The refit and the emulation below still take "
                "each SE block to h = int(C / r).")
    render_refit(page)
    render_emulation(page)


def render_costs(page: Page, rows: list) -> None:
    """The costs at every r (``rows``: `cost_rows`) beside the paper's Table 10."""
    model = page.model
    st.markdown("Parameters and multiply-adds (the paper's \"FLOPs\") of the full-size "
                f"`{model.info.arch}` at 224 x 224, counted from built models, beside the "
                "paper's Table 10.")
    r = st.selectbox("r for the per-stage breakdown", RATIOS, index=RATIOS.index(16),
                     key="cost_r")
    labels_ = list(stages_of(model.info.blocks))
    whole, stages = cost_tables(rows, r, labels_)
    st.table(whole)
    st.caption(f"Paper: {PAPER_CITATION} ResNet-50 without SE: "
               f"{PAPER_REDUCTION_TABLE[-1].params_m} M parameters, "
               f"{PAPER_REDUCTION_TABLE[-1].top1_err}% top-1 error.")
    st.markdown(f"**Per stage at r = {r}**")
    st.table(stages)
    chart(shared_figure("reduction", (model.info.arch, RATIOS),
                        lambda: reduction_figure(rows, stage_labels=labels_)), "reduction",
          height=520)


def render_emulation(page: Page) -> None:
    loaded, model = page.loaded, page.model
    own = model.info.reduction
    st.subheader("Emulation: a larger r without a refit")
    st.warning("**Emulation, not a retrained network.** A smaller bottleneck is imitated by "
               "keeping only the most important hidden SE units (ranked on these images) and "
               "zeroing the rest; a network trained at that r would learn different weights. "
               "It shows what pruning the units alone costs (no command to run); the refit "
               "above shows what a bottleneck of that width can still express.")
    se = [b for b in model.info.blocks if b.reducible]
    choices = [x for x in RATIOS if any(hidden_width(b.channels, x) < b.hidden for b in se)]
    if not choices:
        st.info(f"Every SE block is already at least as narrow as r = {RATIOS[-1]} would "
                "make it; there is no larger r to emulate.")
        return
    with st.form("emulation"):
        target = st.selectbox("Emulated r", choices, key="emulate_r")
        if st.form_submit_button("Run emulation"):
            st.session_state["emu_spec"] = target
    target = st.session_state.get("emu_spec")
    if target is None or target not in choices:
        return
    spec, intervention = emulation(model, list(loaded.results), target)
    st.markdown(f"**Emulated r = {target}** " + (
        f"(model r = {own:g})" if uses_ratio(model.info.blocks, own)
        else "(each SE block keeps at most int(C / r) of its own units)"))
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        with queue_notice() as on_wait:
            out = results().modified(photo, res, model, spec, intervention, on_wait)
        with st.expander(photo.name, expanded=i == 0):
            fig = shared_figure("emulation", (photo.digest, net_key(model), spec),
                                lambda: emulation_figure(res.gates, out.gates))
            chart(fig, f"emu_{i}", height=360)
            render_topk_change(res.probs, out.probs, model, f"emu_top_{i}",
                               (photo.digest, net_key(model), spec))


# ----------------------------------------------------------------------------- refit
def render_refit(page: Page) -> None:
    """The refit folder's curves, then the user's images at the base r and each refit r."""
    st.subheader("Refit at other r (se-viz refit)")
    refit: RefitFolder | None = page.refit
    if refit is None:
        st.info("No refit folder is open. `se-viz refit DIR --reduction 4 8 32 --out OUT` "
                "fits every SE block at each r to reproduce this network's gates on your "
                "images; open OUT in the sidebar (Refit folder) to compare the gates here.")
        return
    doc = refit.doc
    render_refit_summary(doc)
    for problem in refit.problems:
        st.warning(problem)
    blocks = page.model.info.blocks
    chart(shared_figure("refit_errors", (refit.digest, page.model.info.arch),
                        lambda: block_error_figure(doc, blocks)), "refit_errors", height=620)
    chart(shared_figure("refit_agreement", (refit.digest,), lambda: agreement_figure(doc)),
          "refit_agreement", height=600)
    models = refit_models(page, refit)
    if models:
        render_refit_images(page, models)


def render_refit_summary(doc: dict) -> None:
    base, s = doc["base"], doc["settings"]
    how = (f"then fine-tuned end to end for {s['finetune_epochs']} epoch(s)"
           if s.get("finetune") else "blockwise")
    st.markdown(f"Refit on `{base['arch']}` at r = {base['reduction']:g} "
                f"({'untrained' if base.get('untrained') else base['weights']}): "
                f"{len(doc['split']['train'])} training and {len(doc['split']['held_out'])} "
                f"held-out images, {how}. Figures on the held-out images.")
    rows = summary_rows(doc["fits"])
    st.table({"r": [f"{x['r']:g}" for x in rows],
              "SE params (M)": [f"{x['se_params'] / 1e6:.3f}" for x in rows],
              "mean block RMSE": [f"{x['mean_rmse']:.3g}" for x in rows],
              "worst block RMSE": [f"{x['worst_rmse']:.3g}" for x in rows],
              "top-1 agreement": [f"{x['top1_agreement']:.1%}" for x in rows],
              "mean KL (nats)": [f"{x['mean_kl']:.3g}" for x in rows]})


def refit_models(page: Page, refit: RefitFolder) -> dict[str, Any]:
    """r -> the sidebar's network with that r's SE blocks; errors shown, not raised."""
    from ...engine.se_weights import base_identity

    mine, theirs = base_identity(page.model.info), refit.doc["base"]["identity"]
    if mine != theirs:
        st.error(f"This refit folder was made on other base weights ({theirs[:24]}) than the "
                 f"network in the sidebar ({mine[:24]}). Choose the weights it was refit on "
                 "in the sidebar, or run 'se-viz refit' on these.")
        return {}
    models = {}
    for key, (name, digest) in refit.files.items():
        try:
            models[key] = refit_network(net_key(page.model), digest, page.model,
                                        refit.data[key], name)
        except SEVizError as exc:
            st.error(f"r = {key}: {exc}")
    return models


def render_refit_images(page: Page, models: dict[str, Any]) -> None:
    info = page.model.info
    own = f"base r = {info.reduction:g}" if uses_ratio(info.blocks, info.reduction) else "base"
    block = block_ui(st, "Block", info.blocks, "refit_block", se_only=True)
    for i, (photo, res) in enumerate(zip(page.loaded.photos, page.loaded.results)):
        outs = {}
        for key, model in models.items():
            with queue_notice() as on_wait:
                outs[key] = results().modified(photo, res, model, "refit", Intervention(),
                                               on_wait)
        with st.expander(f"{photo.name}: gates at the base r and at each refit r",
                         expanded=i == 0):
            fig = shared_figure("refit_gates", (photo.digest, net_key(page.model), block,
                                                tuple(net_key(m) for m in models.values())),
                                lambda: refit_gates_figure(
                                    block, res.gates[block],
                                    {f"r = {k}": o.gates[block] for k, o in outs.items()},
                                    base_label=own))
            chart(fig, f"refit_gates_{i}", height=520)
            st.table(refit_top5(page.model, res.probs, {k: o.probs for k, o in outs.items()},
                                own))


def refit_top5(model: Any, base: Any, probs: dict[str, Any], own: str) -> dict[str, list]:
    """Top-5 (class and probability) at the base r (labelled ``own``) and at each refit r,
    side by side."""
    def top(p: Any) -> list[str]:
        idx = top_channels(p, 5)
        return [f"{class_name(model, j)} ({p[j]:.1%})" for j in idx]
    return {own: top(base), **{f"r = {k}": top(p) for k, p in probs.items()}}
