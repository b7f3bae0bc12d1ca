"""The standalone HTML report of a refit folder (OUT/report.html), from refit.json."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..analysis.se_fit import summary_rows
from ..paths import atomic_write


def refit_report_html(doc: Mapping, blocks: Sequence = ()) -> str:
    """One page: what was refit on what, a table per r, the three figures (plotly.js
    inlined exactly once, nothing fetched), the skipped files and the held-out list.
    ``blocks``: the network's AttentionBlocks (the error lines are grouped by stage)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from ..plots.refit_figures import agreement_figure, block_error_figure, se_params_figure

    figs = [block_error_figure(doc, blocks), agreement_figure(doc), se_params_figure(doc)]
    divs = "\n".join(pio.to_html(f, full_html=False, include_plotlyjs=False,
                                 div_id=f"refit{i}") for i, f in enumerate(figs))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>SE blocks refit "
            f"at other reduction ratios</title>\n<script type=\"text/javascript\">"
            f"{get_plotlyjs()}</script>\n<style>body{{font-family:sans-serif;max-width:1100px;"
            "margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 8px;text-align:right}</style></head><body>\n"
            f"{_summary_html(doc)}\n{_table_html(doc)}\n{divs}\n{_files_html(doc)}"
            "</body></html>\n")


def _summary_html(doc: Mapping) -> str:
    e, base, s = html.escape, doc["base"], doc["settings"]
    warn = ("<p><b>Untrained (seeded random) base weights: the refit reproduces gates that "
            "mean nothing.</b></p>" if base.get("untrained") else "")
    how = ("then every SE parameter trained end to end for "
           f"{s['finetune_epochs']} epoch(s) (backbone frozen, distilling the base logits)"
           if s.get("finetune") else "blockwise only (no --finetune)")
    return (f"<h1>SE blocks refit at other reduction ratios</h1>{warn}<p>Base network "
            f"{e(str(base['arch']))} at r = {base['reduction']:g}, weights "
            f"{e(str(base['weights']))} ({e(str(base['identity'])[:24])}). "
            f"{len(doc['split']['train'])} training and {len(doc['split']['held_out'])} "
            f"held-out images (seeded split, seed {s['seed']}, held-out share "
            f"{s['holdout']:g}); {len(doc['skipped'])} files skipped. Each block's SE MLP was "
            f"fitted at width int(C / r) to reproduce the base gates from the base squeeze "
            f"values ({s['steps']} full-batch Adam steps, binary cross-entropy), {e(how)}. "
            f"Preprocessing {e(str(doc['preprocessing']))}.</p>"
            "<p>Per block, the error is measured with the block given the base network's own "
            "input; end to end, every block is replaced at once and the network's top-1 "
            "class, predictions (KL) and gates are compared with the base network on the "
            "held-out images. The paper's errors are of networks <i>trained</i> at each r on "
            "ImageNet; the refit asks how well a bottleneck of that width can express the "
            "trained network's channel attention.</p>")


def _table_html(doc: Mapping) -> str:
    head = ("<tr><th>r</th><th>SE params (M)</th><th>mean block RMSE</th><th>worst block "
            "RMSE</th><th>largest error</th><th>top-1 agreement</th><th>mean KL (nats)</th></tr>")
    rows = "".join(
        f"<tr><td>{x['r']:g}</td><td>{x['se_params'] / 1e6:.3f}</td><td>{x['mean_rmse']:.3g}"
        f"</td><td>{x['worst_rmse']:.3g}</td><td>{x['worst_max']:.3g}</td>"
        f"<td>{x['top1_agreement']:.1%}</td><td>{x['mean_kl']:.3g}</td></tr>"
        for x in summary_rows(doc["fits"]))
    return f"<h2>Summary per r</h2><table>{head}{rows}</table>"


def _files_html(doc: Mapping, limit: int = 200) -> str:
    e = html.escape
    out = ""
    if doc["skipped"]:
        items = "".join(f"<li>{e(f)}: {e(r)}</li>" for f, r in doc["skipped"][:limit])
        out += f"<h2>Skipped files ({len(doc['skipped'])})</h2><ul>{items}</ul>"
    held = doc["split"]["held_out"]
    more = f"<li>... and {len(held) - limit} more (refit.json)</li>" if len(held) > limit else ""
    items = "".join(f"<li>{e(f)}</li>" for f in held[:limit])
    return out + (f"<details><summary>Held-out images ({len(held)})</summary><ul>{items}{more}"
                  "</ul></details>")


def write_refit_report(doc: Mapping, path: str | os.PathLike[str], blocks: Sequence = ()
                       ) -> Path:
    """Write `refit_report_html` to ``path`` atomically; returns the path."""
    return atomic_write(path, refit_report_html(doc, blocks))
