"""``se-viz analyze`` (gate statistics over an image folder) and ``se-viz refit`` (SE blocks
refit at other reduction ratios)."""

from __future__ import annotations

import argparse

from ..arch import ARCHS
from ..errors import DatasetError
from .common import (EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, err_skipped, fraction,
                     model_options, positive, ratio, resolve_weights, workers_option)


def add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="gate statistics over an image folder",
                       description="SE gate statistics over an image folder: the paper's "
                                   "Fig. 6/7 at any scale, resumable, several processes.")
    p.add_argument("folder", metavar="DIR", help="one sub-folder of images per class")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (resumable)")
    model_options(p)
    p.add_argument("--weights", metavar="PATH|pretrained",
                   help="weights file, or 'pretrained' (default: the cached pretrained file, "
                        "else untrained)")
    p.add_argument("--batch-size", type=positive, default=16)
    workers_option(p)
    p.add_argument("--limit-per-class", type=positive, metavar="N",
                   help="use the first N images (sorted) of each class")
    p.add_argument("--shard-size", type=positive, default=256,
                   help="images per shard, the unit of resuming (default: %(default)s)")
    p.add_argument("--merge-only", action="store_true",
                   help="only merge the finished shards in OUT into stats and report")
    p.add_argument("--merge-timeout", type=float, metavar="SECONDS",
                   help="how long rank 0 waits for other ranks' shards (default: forever)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--image-size", type=positive, help=argparse.SUPPRESS)  # tests
    p.add_argument("--max-shards", type=positive, help=argparse.SUPPRESS)  # tests
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    """``analyze``: 0 ok, 1 some files skipped (outputs written), 3 stopped early."""
    from ..dataset import RunOptions, Settings, analyze, distributed_rank

    if args.workers < 0:
        raise DatasetError(f"--workers must be >= 0, got {args.workers}")
    weights = None if args.merge_only else resolve_weights(args.arch, args.weights)
    settings = Settings(args.arch, weights, args.reduction, args.num_classes, args.width,
                        args.seed, args.image_size, args.batch_size, args.shard_size,
                        args.limit_per_class)
    rank, world = distributed_rank()
    options = RunOptions(args.workers, rank, world, not args.no_progress, args.merge_only,
                         args.merge_timeout, args.max_shards)
    result = analyze(args.folder, args.out, settings, options)
    who = f"rank {rank}/{world}: " if world > 1 else ""
    print(f"{who}computed {result.computed_shards} shard(s), reused {result.reused_shards} "
          f"({result.seconds:.1f} s)")
    if not result.complete:
        print(f"{who}stopped early; run the same command again to continue")
        return EXIT_INCOMPLETE
    if not result.merged:
        return EXIT_OK
    out = result.out
    print(f"{result.n_files - len(result.skipped)} of {result.n_files} images -> "
          f"{out / 'stats.npz'}, {out / 'per_image.csv'}, {out / 'gates.parquet'}, "
          f"{out / 'report.html'}")
    if result.skipped:
        err_skipped(result.skipped, out / "skipped.txt")
        return EXIT_FAILED
    return EXIT_OK


def add_refit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refit", help="refit the SE blocks at other reduction ratios r",
                       description="Refit every SE block at reduction ratios r on an image "
                                   "folder (no labels needed): pairs, fit, evaluation on "
                                   "held-out images; resumable, several processes.")
    p.add_argument("folder", metavar="DIR", help="a folder of images (sub-folders allowed)")
    p.add_argument("--reduction", type=ratio, nargs="+", required=True, metavar="R",
                   help="the reduction ratios r to refit at, e.g. --reduction 4 8 32")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (resumable)")
    p.add_argument("--arch", choices=ARCHS, default="se_resnet50_vd",
                   help="network layout (default: %(default)s)")
    p.add_argument("--weights", metavar="PATH|pretrained", help="base weights (default: the "
                   "cached pretrained file, else untrained)")
    p.add_argument("--holdout", type=fraction, default=0.2, metavar="F",
                   help="share of the images held out for evaluation (default: %(default)s)")
    p.add_argument("--finetune", action="store_true", help="then train all SE parameters end "
                   "to end, backbone frozen, distilling the base network's predictions")
    p.add_argument("--batch-size", type=positive, default=16)
    workers_option(p)
    hidden = {"--base-reduction": (ratio, None), "--num-classes": (positive, None),
              "--width": (positive, None), "--seed": (int, 0), "--image-size": (positive, None),
              "--shard-size": (positive, 256), "--max-shards": (positive, None),
              "--steps": (positive, 400), "--lr": (float, 3e-3),
              "--finetune-epochs": (positive, 2), "--finetune-lr": (float, 1e-4),
              "--merge-timeout": (float, None)}
    for flag, (kind, default) in hidden.items():  # tests, demos and tuning
        p.add_argument(flag, type=kind, default=default, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_refit)


def cmd_refit(args: argparse.Namespace) -> int:
    """``refit``: 0 ok, 1 some files skipped (outputs written), 3 stopped early."""
    import json

    from ..analysis.se_fit import summary_rows
    from ..dataset import RunOptions, distributed_rank
    from ..refit import RefitSettings, refit

    if args.workers < 0:
        raise DatasetError(f"--workers must be >= 0, got {args.workers}")
    settings = RefitSettings(
        args.arch, resolve_weights(args.arch, args.weights), args.base_reduction,
        args.num_classes, args.width, args.seed, args.image_size, args.batch_size,
        args.shard_size, None, args.holdout, args.steps, args.lr, args.finetune,
        args.finetune_epochs, args.finetune_lr)
    rank, world = distributed_rank()
    run = RunOptions(args.workers, rank, world, not args.no_progress, False,
                     args.merge_timeout, args.max_shards)
    result = refit(args.folder, args.out, args.reduction, settings, run)
    who = f"rank {rank}/{world}: " if world > 1 else ""
    print(f"{who}pairs: computed {result.computed_shards} shard(s), reused "
          f"{result.reused_shards}; r fitted: {', '.join(f'{r:g}' for r in result.fitted) or '-'}"
          f", reused: {', '.join(f'{r:g}' for r in result.reused) or '-'} "
          f"({result.seconds:.1f} s)")
    if not result.complete:
        print(f"{who}stopped early; run the same command again to continue")
        return EXIT_INCOMPLETE
    if not result.written:
        return EXIT_OK
    doc = json.loads((result.out / "refit.json").read_text("utf-8"))
    for row in summary_rows(doc["fits"]):
        print(f"r = {row['r']:g}: {row['se_params'] / 1e6:.3f} M SE params, held-out gate RMSE "
              f"{row['mean_rmse']:.3g} (worst block {row['worst_rmse']:.3g}), top-1 agreement "
              f"{row['top1_agreement']:.1%}, mean KL {row['mean_kl']:.3g}")
    print(f"-> {result.out / 'refit.json'}, {result.out / 'report.html'}, "
          f"{result.out}/se_r*.safetensors")
    if result.skipped:
        err_skipped(result.skipped, result.out / "refit.json")
        return EXIT_FAILED
    return EXIT_OK
