"""SE gate statistics over an image folder: the paper's Fig. 6/7 at any scale, resumable.

    python -m se_viz analyze DIR --out OUT        (or: python -m se_viz.dataset DIR --out OUT)
    python -m paddle.distributed.launch --nproc_per_node N "$(command -v python)" \\
        -m se_viz.dataset DIR --out OUT           (several processes, GPUs or nodes)

DIR is an ImageFolder: one sub-folder per class (searched recursively); images lying
directly in DIR form one class named after DIR. The sorted file list is cut into shards
of S consecutive files. Each shard's float64 partial sums (count, sum and sum of squares
of every gate, per class) and per-image rows are written atomically to
``OUT/shards/shard_XXXXX.npz``; finished shards are never recomputed. Rank r of W (from
``PADDLE_TRAINER_ID`` / ``PADDLE_TRAINERS_NUM``) computes shards i with i % W == r; rank 0
waits for every shard file, then merges them in shard order, so any number of processes
gives bit-identical results. OUT (a folder shared by all ranks) then holds:

    manifest.json    settings + hash of the file list; a resume with other settings refuses
    files.jsonl      the file list, line i = ["class", "path/relative/to/DIR"] of image i
    stats.npz        per-class and all-image means/stds (format: se_viz.report)
    per_image.csv    file, class, prediction, top-1 probability; per block mean, entropy, top-5
    per_image.parquet  the same table, only when pyarrow is installed (streamlit needs it)
    skipped.txt      files that could not be used, with the reason
    report.html      standalone Plotly report (se_viz.report)

per_image.csv columns: file, class, pred_index, pred_name, top1_prob, then per block
``SE_s_b_mean``, ``SE_s_b_entropy`` (entropy of g / sum(g) over log C, as
analysis.normalized_entropy) and ``SE_s_b_top5`` (channel indices, space-separated).
Images are decoded and preprocessed in spawned worker processes (never forked after
paddle is imported); the forward pass runs batched in the main process. Exit status of
the command: 0 done, 1 done but some files were skipped (or an error), 3 stopped early.
Shard files, manifest, merge and output tables: `se_viz.shards` (numpy only, no paddle).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InvalidImageError, SEVizError
from .images import Preprocessing, load_image, preprocess
from .shards import (DatasetError, FileList, ShardSums, build_manifest, claim_output, finish,
                     n_shards, read_manifest, save_npz, shard_done, shard_path, shard_range,
                     wait_for_shards)
from .shards import (MANIFEST_FORMAT, SHARD_FORMAT, TOP, image_rows,  # re-exported, as before
                     load_shard, merge, write_tables)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
EXIT_OK, EXIT_FAILED, EXIT_INCOMPLETE = 0, 1, 3  # 1 as `se-viz capture`: some files skipped


@dataclass(frozen=True)
class Settings:
    """Everything that changes the numbers; a resumed run must use the same values."""

    arch: str = "se_resnet50_vd"
    weights: str | None = None  # a path, "pretrained", or None (seeded, untrained)
    reduction: float = 16
    num_classes: int = 1000
    width: int = 64
    seed: int = 0
    image_size: int | None = None  # resize short side and crop to this (None: 256 -> 224)
    batch_size: int = 16
    shard_size: int = 256
    limit_per_class: int | None = None


@dataclass(frozen=True)
class RunOptions:
    """How this process runs; does not change the numbers."""

    workers: int = 1  # decoding processes; 0 decodes in this process
    rank: int = 0
    world: int = 1
    progress: bool = True
    merge_only: bool = False
    merge_timeout: float | None = None  # rank 0's wait for other ranks' shards (None: forever)
    max_shards: int | None = None  # compute at most this many shards, then stop (resume later)


@dataclass(frozen=True)
class AnalysisResult:
    """What one call of `analyze` did. ``merged``: stats.npz etc. were written by this call."""

    out: Path
    n_files: int
    computed_shards: int
    reused_shards: int
    merged: bool
    complete: bool
    skipped: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0


# --------------------------------------------------------------------------- listing


def list_images(root: str | os.PathLike[str], limit_per_class: int | None = None) -> FileList:
    """ImageFolder listing of ``root``: classes and files sorted, dot-files and non-images left out."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"'{root}' is not a folder. Give a folder of images, or of one "
                           "sub-folder of images per class.")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = [(d.name, _images_under(d, root)) for d in subdirs]
    loose = sorted(p.name for p in root.iterdir() if _is_image(p))
    if loose:
        name = root.resolve().name or "images"
        name = f"{name} (top level)" if name in [g[0] for g in groups] else name
        groups.append((name, loose))
    groups = sorted((name, files[:limit_per_class]) for name, files in groups if files)
    if not groups:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in '{root}' "
                           "or its sub-folders.")
    classes = tuple(name for name, _ in groups)
    files = tuple(f for _, fs in groups for f in fs)
    labels = np.concatenate([np.full(len(fs), k, np.int64) for k, (_, fs) in enumerate(groups)])
    return FileList(root, classes, files, labels)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()


def _images_under(folder: Path, root: Path) -> list[str]:
    found, seen = [], set()
    for here, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(here, n).relative_to(root).as_posix() for n in names
                  if _is_image(Path(here, n))]
    return sorted(found)


# --------------------------------------------------------------------------- decoding


def decode_files(paths: Sequence[str], pre: Preprocessing
                 ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Worker task: ((n_ok, 3, crop, crop) float32, positions decoded, [(position, reason)])."""
    arrays, ok, bad = [], [], []
    for pos, path in enumerate(paths):
        try:
            arrays.append(preprocess(load_image(path), pre))
            ok.append(pos)
        except InvalidImageError as exc:
            bad.append((pos, str(exc)))
    x = np.stack(arrays) if arrays else np.zeros((0, 3, pre.crop, pre.crop), np.float32)
    return x, ok, bad


class Decoder:
    """Decodes batches of files in order, at most ``workers + 2`` batches ahead (bounded memory).

    Workers are spawned processes. A file that crashes a worker is retried alone in a fresh
    pool and reported as bad if it crashes again; the run goes on.
    """

    def __init__(self, workers: int, pre: Preprocessing, task: Callable = decode_files) -> None:
        self.workers, self.pre, self.task = workers, pre, task
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Decoder":
        if self.workers > 0:
            self._restart()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = ProcessPoolExecutor(self.workers, multiprocessing.get_context("spawn"))

    def map(self, batches: Iterable[tuple[Any, list[str]]]) -> Iterator[tuple[Any, tuple]]:
        """(tag, paths) -> (tag, decode_files(paths)) in input order."""
        if self._pool is None:
            yield from ((tag, self.task(paths, self.pre)) for tag, paths in batches)
            return
        source, pending = iter(batches), deque()
        for tag, paths in source:
            pending.append([tag, paths, self._pool.submit(self.task, paths, self.pre)])
            if len(pending) >= self.workers + 2:
                yield self._next(pending)
        while pending:
            yield self._next(pending)

    def _next(self, pending: deque) -> tuple[Any, tuple]:
        tag, paths, future = pending.popleft()
        try:
            return tag, future.result()
        except BrokenProcessPool:
            self._restart()
            result = self._isolate(paths)
            for item in pending:  # their futures died with the pool
                item[2] = self._pool.submit(self.task, item[1], self.pre)
            return tag, result

    def _isolate(self, paths: list[str]) -> tuple:
        arrays, ok, bad = [], [], []
        for pos, path in enumerate(paths):
            try:
                x, good, why = self._pool.submit(self.task, [path], self.pre).result()
            except BrokenProcessPool:
                self._restart()
                bad.append((pos, f"'{path}' crashed the image decoder (corrupt file?). "
                                 "Remove or re-export it."))
                continue
            if good:
                arrays.append(x[0])
                ok.append(pos)
            else:
                bad.append((pos, why[0][1]))
        x = np.stack(arrays) if arrays else np.zeros((0, 3, self.pre.crop, self.pre.crop),
                                                     np.float32)
        return x, ok, bad


# --------------------------------------------------------------------------- compute


def make_manifest(files: FileList, settings: Settings, model: Any, pre: Preprocessing) -> dict:
    """{"key": what must match on resume, "key_sha256", and informative fields}."""
    from .model import se_blocks

    blocks = [(name, int(se.channels)) for name, _, se in se_blocks(model)]
    return build_manifest(files, settings, blocks, model.info, pre)


def compute_shards(model: Any, files: FileList, shards: Sequence[int], pre: Preprocessing,
                   manifest: dict, out: Path, run: RunOptions) -> int:
    """Decode, forward and sum the given shards, saving each when done; returns how many."""
    from tqdm import tqdm

    from .hooks import capture

    key = manifest["key"]
    blocks, width = key["blocks"], sum(key["channels"])
    total = sum(hi - lo for lo, hi in (shard_range(key, s) for s in shards))
    desc = f"rank {run.rank}/{run.world}" if run.world > 1 else "images"
    sums, done, skipped = ShardSums(blocks, width), 0, 0
    with Decoder(run.workers, pre) as decoder, \
            tqdm(total=total, unit="img", desc=desc, disable=not run.progress,
                 file=sys.stderr, dynamic_ncols=True) as bar:
        for (shard, lo, hi, last), (x, ok, bad) in decoder.map(_batches(files, key, shards)):
            sums.bad += [(lo + p, reason) for p, reason in bad]
            if ok:
                cap = capture(model, x, batch_size=len(ok))
                index = lo + np.asarray(ok, np.int64)
                sums.add(index, files.labels[index], cap.gates, cap.probabilities)
            skipped += len(bad)
            bar.update(hi - lo)
            if skipped:
                bar.set_postfix(skipped=skipped, refresh=False)
            if last:
                save_npz(shard_path(out, shard), sums.arrays(shard, manifest["key_sha256"]))
                sums, done = ShardSums(blocks, width), done + 1
    return done


def _batches(files: FileList, key: dict, shards: Sequence[int]
             ) -> Iterator[tuple[tuple[int, int, int, bool], list[str]]]:
    """((shard, lo, hi, last of shard), paths of files lo..hi-1); batches never cross shards."""
    for shard in shards:
        start, stop = shard_range(key, shard)
        for lo in range(start, stop, key["batch_size"]):
            hi = min(lo + key["batch_size"], stop)
            yield (shard, lo, hi, hi == stop), [str(files.root / f) for f in files.files[lo:hi]]


# --------------------------------------------------------------------------- run


def analyze(root: str | os.PathLike[str], out: str | os.PathLike[str],
            settings: Settings = Settings(), run: RunOptions = RunOptions()) -> AnalysisResult:
    """Compute this rank's missing shards; rank 0 then waits for all shards and merges."""
    start, out = time.perf_counter(), Path(out)
    if run.merge_only:
        manifest = read_manifest(out)
        wait_for_shards(out, n_shards(manifest["key"]), timeout=0)
        skipped = finish(out, manifest)
        return AnalysisResult(out, manifest["key"]["n_files"], 0, n_shards(manifest["key"]),
                              True, True, tuple(skipped), time.perf_counter() - start)
    files = list_images(root, settings.limit_per_class)
    model, pre = _build_model(settings)
    _share_cores(run)
    manifest = make_manifest(files, settings, model, pre)
    claim_output(out, files, manifest)
    key = manifest["key"]
    mine = range(run.rank, n_shards(key), run.world)
    todo = [s for s in mine if not shard_done(shard_path(out, s), manifest["key_sha256"])]
    now = todo if run.max_shards is None else todo[:run.max_shards]
    computed = compute_shards(model, files, now, pre, manifest, out, run) if now else 0
    result = AnalysisResult(out, len(files.files), computed, len(mine) - len(todo), False,
                            len(now) == len(todo))
    if run.rank != 0 or not result.complete:
        return replace(result, seconds=time.perf_counter() - start)
    wait_for_shards(out, n_shards(key), run.merge_timeout)
    skipped = finish(out, manifest)
    return replace(result, merged=True, skipped=tuple(skipped),
                   seconds=time.perf_counter() - start)


def _build_model(settings: Settings) -> tuple[Any, Preprocessing]:
    from .api import build_model

    model = build_model(settings.arch, settings.weights, settings.reduction,
                        settings.num_classes, width=settings.width, seed=settings.seed)
    pre = model.preprocessing
    if settings.image_size:
        pre = replace(pre, resize=settings.image_size, crop=settings.image_size)
    return model, pre


def _share_cores(run: RunOptions) -> None:
    """Several ranks on one machine split its cores (unless SE_VIZ_THREADS says otherwise)."""
    local = os.environ.get("PADDLE_LOCAL_SIZE", "1")
    if run.world < 2 or not local.isdigit() or int(local) < 2 or "SE_VIZ_THREADS" in os.environ:
        return
    from . import model

    if hasattr(model, "set_cpu_threads") and hasattr(model, "available_cores"):
        model.set_cpu_threads(max(1, model.available_cores() // int(local)))


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from the launcher's PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM."""
    try:
        rank = int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0)
        world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1") or 1)
    except ValueError as exc:
        raise DatasetError("PADDLE_TRAINER_ID and PADDLE_TRAINERS_NUM must be integers "
                           "(they are set by python -m paddle.distributed.launch)") from exc
    if not 0 <= rank < world:
        raise DatasetError(f"PADDLE_TRAINER_ID={rank} is outside 0..{world - 1}")
    return rank, world


# --------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> Any:
    """Add ``analyze`` to the se-viz command line; the handler is ``args.func = run``."""
    parser = subparsers.add_parser("analyze", help="gate statistics over an image folder",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(p: Any) -> None:
    from . import cli

    p.add_argument("folder", metavar="DIR", help="one sub-folder of images per class")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (resumable)")
    cli._model_options(p)
    p.add_argument("--weights", metavar="PATH|pretrained",
                   help="weights file, or 'pretrained' (default: the cached pretrained file, "
                        "else untrained)")
    p.add_argument("--batch-size", type=cli._positive, default=16)
    p.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)),
                   help="decoding processes, 0 = decode here (default: %(default)s)")
    p.add_argument("--limit-per-class", type=cli._positive, metavar="N",
                   help="use the first N images (sorted) of each class")
    p.add_argument("--shard-size", type=cli._positive, default=256,
                   help="images per shard, the unit of resuming (default: %(default)s)")
    p.add_argument("--merge-only", action="store_true",
                   help="only merge the finished shards in OUT into stats and report")
    p.add_argument("--merge-timeout", type=float, metavar="SECONDS",
                   help="how long rank 0 waits for other ranks' shards (default: forever)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--image-size", type=cli._positive, help=argparse.SUPPRESS)  # tests
    p.add_argument("--max-shards", type=cli._positive, help=argparse.SUPPRESS)  # tests
    p.set_defaults(func=run)


def run(args: Any) -> int:
    """The ``analyze`` command: 0 ok, 1 some files skipped (outputs written), 3 stopped early."""
    from . import cli

    if args.workers < 0:
        raise DatasetError(f"--workers must be >= 0, got {args.workers}")
    weights = None if args.merge_only else cli.resolve_weights(args.arch, args.weights)
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
          f"{out / 'stats.npz'}, {out / 'per_image.csv'}, {out / 'report.html'}")
    if result.skipped:
        listing = "".join(f"\n  {name}: {why}" for name, why in result.skipped[:20])
        more = f"\n  ... ({len(result.skipped) - 20} more)" if len(result.skipped) > 20 else ""
        cli._err(f"{len(result.skipped)} file(s) could not be used and were skipped "
                 f"(all listed in {out / 'skipped.txt'}):{listing}{more}")
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m se_viz.dataset DIR --out OUT ...`` (the entry point for paddle's launcher)."""
    from . import cli

    parser = argparse.ArgumentParser(prog="python -m se_viz.dataset",
                                     description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SEVizError as exc:
        cli._err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        cli._err("interrupted; run the same command again to resume")
        return 130


if __name__ == "__main__":
    from se_viz.dataset import main as _main  # the package module, so workers unpickle its names

    sys.exit(_main())
