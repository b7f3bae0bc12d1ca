"""The steps of a refit run (`se_viz.refit.run`) that run images through networks: the
end-to-end fine-tuning (its data, in the same seeded order on every rank) and the
evaluation on the held-out images."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.se_fit import (end_to_end, gate_errors, hidden_widths, init_params,
                               se_parameter_count)
from ..dataset.decode import Decoder
from ..errors import DatasetError
from .context import Context
from .files import blockwise_path, params_of, save_se, se_path
from .pairs import load_pairs


def wait_for_file(check: Callable[[], Any], path: Path, timeout: float | None,
                  poll: float = 0.5) -> Any:
    """Block until ``check()`` gives something (another rank is writing ``path``)."""
    start = time.monotonic()
    while (found := check()) is None:
        if timeout is not None and time.monotonic() - start >= timeout:
            raise DatasetError(f"'{path}' did not appear in {timeout:g} s (rank 0 writes it). "
                               "Run the same command again on every rank.")
        time.sleep(poll)
    return found


def _paths(ctx: Context, positions: np.ndarray) -> list[str]:
    return [str(ctx.files.root / ctx.files.files[int(i)]) for i in positions]


# --------------------------------------------------------------------------- fine-tuning


def step_plan(n_train: int, epochs: int, batch: int, seed: int) -> list[np.ndarray]:
    """The global batches of every epoch: rows 0..n_train-1 of the training set in a seeded
    order (``default_rng([seed, epoch, n_train])``), ``batch`` at a time."""
    plan = []
    for epoch in range(epochs):
        order = np.random.default_rng([int(seed), epoch, n_train]).permutation(n_train)
        plan += [order[lo:lo + batch] for lo in range(0, n_train, batch)]
    return plan


def _steps(ctx: Context, plan: list[np.ndarray], decoder: Decoder, bar: Any) -> Iterator:
    """This rank's share of every global batch (rows rank, rank + world, ...), decoded."""
    from ..engine.finetune import Step

    rank, world = ctx.run.rank, ctx.run.world
    rows = {int(p): i for i, p in enumerate(ctx.pairs.index)}
    train = ctx.train

    def batches():
        for glob in plan:
            mine = train[glob[rank::world]]
            yield (mine, len(glob)), _paths(ctx, mine)

    for (mine, count), (x, ok, bad) in decoder.map(batches()):
        if bad:
            raise DatasetError(f"{_paths(ctx, mine[[p for p, _ in bad]])[0]} cannot be decoded "
                               f"any more ({bad[0][1]}); it changed since its pairs were made. "
                               "Restore it, or start again with a new --out folder.")
        teacher = ctx.pairs.logits[[rows[int(p)] for p in mine]]
        yield Step(x, teacher, count)
        bar.update(len(mine))


def finetune(ctx: Context, r: float) -> None:
    """Every SE parameter at r trained end to end from the blockwise fit, distilling the
    base logits on the training images; rank 0 writes se_r{R}.safetensors."""
    from tqdm import tqdm

    from ..engine.finetune import DistillSettings, distill
    from ..engine.se_weights import read_se_weights, refit_model
    from ..engine.weights import se_parameters

    s = ctx.settings
    start = blockwise_path(ctx.out, r)
    model = refit_model(ctx.model, start)
    plan = step_plan(len(ctx.train), s.finetune_epochs, s.batch_size, s.seed)
    share = sum(len(g[ctx.run.rank::ctx.run.world]) for g in plan)
    desc = f"finetune r={r:g}" + (f", rank {ctx.run.rank}" if ctx.run.world > 1 else "")
    with Decoder(ctx.run.workers, ctx.pre) as decoder, \
            tqdm(total=share, unit="img", desc=desc, file=sys.stderr,
                 disable=not ctx.run.progress, dynamic_ncols=True) as bar:
        losses = distill(model, _steps(ctx, plan, decoder, bar),
                         DistillSettings(s.finetune_lr, ctx.run.world))
    if ctx.run.rank != 0:
        return
    counts = np.array([len(g) for g in plan], np.float64)
    per_epoch = np.array_split(np.arange(len(plan)), s.finetune_epochs)
    epoch_loss = [float(np.average(np.asarray(losses)[e], weights=counts[e])) for e in per_epoch]
    fits = read_se_weights(start)[1].get("fits", "{}")
    save_se(se_path(ctx.out, r), ctx.model.info, r, se_parameters(model), ctx.key, "finetuned",
            {"fits": fits, "finetune_loss": json.dumps(epoch_loss)})


# --------------------------------------------------------------------------- evaluation


def held_captures(ctx: Context, models: list[Any]) -> list[Any]:
    """Each model's Capture of the held-out images (decoded once, in file order)."""
    from tqdm import tqdm

    from ..engine.capture import capture
    from ..results import Capture

    held, batch = ctx.held, ctx.settings.batch_size
    parts: list[list] = [[] for _ in models]

    def batches():
        for lo in range(0, len(held), batch):
            yield held[lo:lo + batch], _paths(ctx, held[lo:lo + batch])

    with Decoder(ctx.run.workers, ctx.pre) as decoder, \
            tqdm(total=len(held) * len(models), unit="img", desc="held-out", file=sys.stderr,
                 disable=not ctx.run.progress, dynamic_ncols=True) as bar:
        for positions, (x, ok, bad) in decoder.map(batches()):
            if bad:
                raise DatasetError(f"held-out image {_paths(ctx, positions[[bad[0][0]]])[0]} "
                                   f"cannot be decoded any more ({bad[0][1]}). Restore it, or "
                                   "start again with a new --out folder.")
            for part, model in zip(parts, models):
                part.append(capture(model, x, batch_size=len(ok)))
                bar.update(len(ok))
    return [Capture.concat(p) for p in parts]


def evaluate(ctx: Context, r: float) -> dict:
    """fits/r{R}.json: the written file's figures on the held-out images (module docs of
    `se_viz.analysis.se_fit`), and with --finetune the blockwise fit's as well."""
    from ..engine.se_weights import read_se_weights, refit_model
    from ..engine.weights import se_parameters

    final = se_path(ctx.out, r)
    _, meta, digest, _ = read_se_weights(final)
    files = {"final": final}
    if ctx.settings.finetune:
        files["blockwise"] = blockwise_path(ctx.out, r)
    params = {k: params_of(p, ctx.model.info.blocks)[0] for k, p in files.items()}
    caps = dict(zip(files, held_captures(ctx, [refit_model(ctx.model, p)
                                               for p in files.values()])))
    blocks = ctx.model.info.blocks
    base, widths = se_parameters(ctx.model), hidden_widths(blocks, r)
    about = {b.name: b for b in blocks}
    held = load_pairs(ctx.out, ctx.manifest, [b for b, _ in ctx.blocks()], ctx.held)
    figures = {k: {"blocks": {}, "end_to_end": end_to_end(held.logits, held.s,
                                                          caps[k].logits, caps[k].gates)}
               for k in files}
    fits = json.loads(meta.get("fits", "{}"))
    for i, (b, _) in enumerate(ctx.blocks()):
        if b not in widths:  # ECA: no r (se_viz.analysis.se_fit.not_reducible)
            continue
        gate, act = about[b].gate, about[b].act
        train = load_pairs(ctx.out, ctx.manifest, [b], ctx.train)
        pruned = init_params(base[b], widths[b], train.z[b], ctx.settings.seed, i, act)
        for k in files:
            row = gate_errors(params[k][b], held.z[b], held.s[b], gate, act)
            if k == "final":
                row.update({"pruned_rmse": gate_errors(pruned, held.z[b], held.s[b], gate,
                                                       act)["rmse"],
                            "hidden": widths[b], **fits.get(b, {})})
            figures[k]["blocks"][b] = row
    doc = {"r": r, "file": final.name, "sha256": digest, "refit_key": ctx.key,
           "stage": meta.get("stage"), "se_params": se_parameter_count(blocks, r),
           "n_train": int(len(ctx.train)), "n_held_out": int(len(ctx.held)),
           **figures.pop("final")}
    if ctx.settings.finetune:
        doc["blockwise"] = figures["blockwise"]
        doc["finetune_loss"] = json.loads(meta.get("finetune_loss", "[]"))
    return doc
