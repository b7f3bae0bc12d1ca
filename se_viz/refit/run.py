"""`refit` (``se-viz refit``): the SE blocks of a trained network refit at other reduction
ratios r, on any image folder (no labels needed), resumable, on one or several processes.

    se-viz refit DIR --reduction 8 32 --out OUT [--finetune]
    python -m paddle.distributed.launch --nproc_per_node 2 "$(command -v python)" \\
        -m se_viz refit DIR --reduction 8 --out OUT --finetune

1. pairs: every image through the base network, its (squeeze z, gate s) per block and its
   logits stored in shards (`se_viz.refit.pairs`; ranks split the shards, as analyze);
2. a seeded split into training and held-out images (``--holdout``, default 0.2);
3. per r, every block's SE MLP fitted at width int(C / r) on the training pairs
   (`se_viz.analysis.se_fit`, numpy, rank 0) -> ``OUT/fits/r{R}.blockwise.safetensors``;
4. ``--finetune``: every SE parameter trained end to end, backbone frozen, distilling the
   base logits on the training images (`se_viz.engine.finetune`; data-parallel over ranks);
5. ``OUT/se_r{R}.safetensors`` (SE parameters only), its figures on the held-out images in
   ``OUT/fits/r{R}.json``, then ``OUT/refit.json`` and ``OUT/report.html`` over every r
   finished in OUT (`se_viz.refit.report`).

Every step is kept when finished: a run stopped anywhere continues from there. OUT holds
one set of settings (manifest.json); more r may be added by later calls.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.se_fit import FitSettings, fit_block, hidden_widths, holdout_split, ratio_key
from ..arch import hidden_width
from ..dataset.analyze import RunOptions, build_network, share_cores
from ..dataset.files import list_images
from ..dataset.shards import build_manifest, claim_output, n_shards, shard_done, shard_path, \
    wait_for_shards
from ..errors import DatasetError
from ..paths import atomic_write
from ..version import __version__
from .context import Context, RefitSettings
from .files import (REFIT_FORMAT, blockwise_path, figures_of_run, figures_path, params_of,
                    save_se, se_file_of_run, se_path)
from .pairs import PAIRS_FORMAT, compute_pairs, load_pairs, skipped_files
from .steps import evaluate, finetune, wait_for_file


@dataclass(frozen=True)
class RefitResult:
    """What one call of `refit` did (``written``: refit.json and report.html by this call)."""

    out: Path
    n_files: int
    computed_shards: int
    reused_shards: int
    fitted: tuple[float, ...] = ()
    reused: tuple[float, ...] = ()
    complete: bool = False
    written: bool = False
    skipped: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0


# --------------------------------------------------------------------------- run


def refit(root: str | os.PathLike[str], out: str | os.PathLike[str], reductions: list[float],
          settings: RefitSettings = RefitSettings(), run: RunOptions = RunOptions()
          ) -> RefitResult:
    """Pairs (this rank's shards), then every r in ``reductions``; rank 0 writes the
    summary. Stops early after ``run.max_shards`` pair shards (resume by calling again)."""
    start, out = time.perf_counter(), Path(out)
    ratios = sorted({float(r) for r in reductions})
    if not ratios or min(ratios) < 1:
        raise DatasetError(f"give reduction ratios r >= 1 (--reduction 8 32), got {reductions}")
    if not 0 < settings.holdout < 1:
        raise DatasetError(f"--holdout is the share of images held out for evaluation: "
                           f"between 0 and 1 (exclusive), got {settings.holdout}")
    ctx = _prepare(root, out, settings, run)
    key = ctx.manifest["key"]
    mine = range(run.rank, n_shards(key), run.world)
    todo = [s for s in mine if not shard_done(shard_path(out, s), ctx.key, PAIRS_FORMAT)]
    now = todo if run.max_shards is None else todo[:run.max_shards]
    computed = compute_pairs(ctx.model, ctx.files, now, ctx.pre, ctx.manifest, out, run) \
        if now else 0
    result = RefitResult(out, len(ctx.files.files), computed, len(mine) - len(todo))
    if len(now) < len(todo):
        return _done(result, start)
    wait_for_shards(out, n_shards(key), run.merge_timeout)
    _split(ctx)
    fitted, reused = [], []
    for r in ratios:
        (fitted if _ratio(ctx, r) else reused).append(r)
    result = replace(result, fitted=tuple(fitted), reused=tuple(reused), complete=True)
    if run.rank == 0:
        result = replace(result, written=True, skipped=tuple(write_summary(ctx)))
    return _done(result, start)


def _done(result: RefitResult, start: float) -> RefitResult:
    return replace(result, seconds=time.perf_counter() - start)


def _prepare(root: Any, out: Path, settings: RefitSettings, run: RunOptions) -> Context:
    from ..engine.model import se_blocks

    files = list_images(root, settings.limit_per_class)
    model, pre = build_network(settings)
    if not any(b.reducible for b in model.info.blocks):
        kinds = sorted({b.kind.upper() for b in model.info.blocks})
        raise DatasetError(f"{model.info.arch} has no SE bottleneck to refit: its "
                           f"{len(model.info.blocks)} attention blocks are {'/'.join(kinds)} "
                           "(a 1-D convolution across channels), so a reduction ratio r does "
                           "not apply. Refit an SE network instead (se-viz archs lists them).")
    share_cores(run)
    blocks = [(name, int(se.channels)) for name, _, se in se_blocks(model)]
    manifest = build_manifest(files, settings, blocks, model.info, pre, fmt=REFIT_FORMAT,
                              extra=settings.fit_key())
    claim_output(out, files, manifest)
    return Context(out, files, settings, run, model, pre, manifest)


def _split(ctx: Context) -> None:
    """The seeded split over the file list, restricted to the images that decoded."""
    ctx.pairs = load_pairs(ctx.out, ctx.manifest)
    if len(ctx.files.files) < 2:
        raise DatasetError("a refit needs at least 2 images (some to fit on, some held out "
                           "to evaluate on); add images to the folder.")
    train, held = holdout_split(len(ctx.files.files), ctx.settings.holdout, ctx.settings.seed)
    ctx.train = np.intersect1d(train, ctx.pairs.index)
    ctx.held = np.intersect1d(held, ctx.pairs.index)
    if not len(ctx.train) or not len(ctx.held):
        raise DatasetError(f"only {len(ctx.pairs.index)} usable image(s): too few for a "
                           f"training and a held-out set (--holdout {ctx.settings.holdout}). "
                           "Add images or change --holdout.")


def _ratio(ctx: Context, r: float) -> bool:
    """Fit, finetune and evaluate r unless this run finished it; True when computed."""
    out, rank = ctx.out, ctx.run.rank
    if figures_of_run(out, r, ctx.key) is not None:
        return False
    if rank == 0 and se_file_of_run(blockwise_path(out, r), ctx.key) is None:
        params, fits = fit_blocks(ctx, r)
        save_se(blockwise_path(out, r), ctx.model.info, r, params, ctx.key, "blockwise",
                {"fits": json.dumps(fits)})
    final = se_file_of_run(se_path(out, r), ctx.key)
    if _trainable(ctx, r) and final is None:
        wait_for_file(lambda: se_file_of_run(blockwise_path(out, r), ctx.key),
                      blockwise_path(out, r), ctx.run.merge_timeout)
        finetune(ctx, r)
    elif final is None and rank == 0:
        _copy_blockwise(ctx, r)
    if rank == 0:
        figures = evaluate(ctx, r)
        atomic_write(figures_path(out, r), json.dumps(figures, indent=1))
    return True


def _trainable(ctx: Context, r: float) -> bool:
    """--finetune, at an r that makes some SE block narrower than the base's: where every
    block is at least as wide as the base block, the base block itself is a solution (its
    units plus zero-weight ones), the blockwise fit starts and stays there, and there is
    nothing to distil."""
    return ctx.settings.finetune and any(hidden_width(b.channels, r) < b.hidden
                                         for b in ctx.model.info.blocks if b.reducible)


def _copy_blockwise(ctx: Context, r: float) -> None:
    """Without --finetune the blockwise fit is the result: se_r{R}.safetensors."""
    params, meta = params_of(blockwise_path(ctx.out, r), ctx.model.info.blocks)
    if meta.get("stage") != "blockwise":
        raise DatasetError(f"{blockwise_path(ctx.out, r)} is not a blockwise fit; delete it "
                           "and run the same command again.")
    save_se(se_path(ctx.out, r), ctx.model.info, r, params, ctx.key, "blockwise",
            {"fits": meta["fits"]})


def fit_blocks(ctx: Context, r: float) -> tuple[dict, dict]:
    """Every block's SE MLP at width int(C / r), fitted on the training pairs (numpy):
    (block -> SEParameters float32, block -> {"start_kl", "kl", "steps", "objective"}).
    Blocks without a bottleneck (ECA) have no r and are left out."""
    from tqdm import tqdm

    from ..engine.weights import se_parameters

    base = se_parameters(ctx.model)
    widths = hidden_widths(ctx.model.info.blocks, r)
    about = {b.name: b for b in ctx.model.info.blocks}
    fs = FitSettings(ctx.settings.steps, ctx.settings.lr, ctx.settings.seed)
    params, fits = {}, {}
    blocks = ctx.blocks()
    with tqdm(total=len(blocks), unit="block", desc=f"fit r={r:g}", file=sys.stderr,
              disable=not ctx.run.progress, dynamic_ncols=True) as bar:
        for i, (b, _) in enumerate(blocks):
            if b in widths:
                pairs = load_pairs(ctx.out, ctx.manifest, [b], ctx.train)
                fit = fit_block(base[b], pairs.z[b], pairs.s[b], widths[b], fs, block=i,
                                gate=about[b].gate, act=about[b].act)
                params[b] = fit.params
                fits[b] = {"start_kl": fit.start_kl, "kl": fit.kl, "steps": fit.steps,
                           "objective": fit.objective}
            bar.update(1)
    return params, fits


def summary(ctx: Context, fits: dict, skipped: list[tuple[str, str]]) -> dict:
    """refit.json: the base network, the settings, the split (file names), the skipped
    files and, per r (keys as `ratio_key`), the figures of fits/r{R}.json."""
    from ..analysis.paper import PAPER_REDUCTION_TABLE
    from ..engine.se_weights import base_identity

    info, s, names = ctx.model.info, ctx.settings, ctx.files.files
    keys = ("holdout", "steps", "lr", "finetune", "finetune_epochs", "finetune_lr",
            "batch_size", "image_size", "seed")
    return {"format": REFIT_FORMAT, "se_viz_version": __version__,
            "base": {"arch": info.arch, "width": info.width, "num_classes": info.num_classes,
                     "reduction": info.reduction, "weights": info.weights,
                     "layout": info.layout, "identity": base_identity(info),
                     "untrained": info.untrained},
            "settings": {k: getattr(s, k) for k in keys},
            "preprocessing": ctx.pre.describe(), "root": str(ctx.files.root.resolve()),
            "n_files": len(names), "skipped": [list(x) for x in skipped],
            "split": {"seed": s.seed, "holdout": s.holdout,
                      "train": [names[int(i)] for i in ctx.train],
                      "held_out": [names[int(i)] for i in ctx.held]},
            "fits": fits, "paper": [p._asdict() for p in PAPER_REDUCTION_TABLE]}


def write_summary(ctx: Context) -> list[tuple[str, str]]:
    """refit.json and report.html over every r this run finished in OUT; the skipped files."""
    from .report import write_refit_report

    skipped = skipped_files(ctx.out, ctx.manifest, [str(f) for f in ctx.files.files])
    done = {}
    for path in sorted((ctx.out / "fits").glob("r*.json"), key=lambda p: float(p.stem[1:])):
        figures = figures_of_run(ctx.out, float(path.stem[1:]), ctx.key)
        if figures is not None:
            done[ratio_key(float(path.stem[1:]))] = figures
    doc = summary(ctx, done, skipped)
    atomic_write(ctx.out / "refit.json", json.dumps(doc, indent=1))
    write_refit_report(doc, ctx.out / "report.html", ctx.model.info.blocks)
    return skipped
