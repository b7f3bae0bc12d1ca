"""`analyze`: SE gate statistics over an image folder, sharded, resumable, multi-process."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..images import Preprocessing
from .decode import Decoder
from .files import FileList, file_stamps, list_images
from .shards import (ShardSums, build_manifest, claim_output, finish, n_shards, read_manifest,
                     save_npz, shard_done, shard_path, shard_range, wait_for_shards)


@dataclass(frozen=True)
class Settings:
    """Everything that changes the numbers; a resumed run must use the same values."""

    arch: str = "se_resnet50_vd"
    weights: str | None = None  # a path, "pretrained", or None (seeded, untrained)
    reduction: float | None = None
    num_classes: int | None = None  # None: from the weights file (1000 without one)
    width: int | None = None        # SE-ResNet-50 only (None: the network's own)
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


# --------------------------------------------------------------------------- compute


def make_manifest(files: FileList, settings: Settings, model: Any, pre: Preprocessing) -> dict:
    """{"key": what must match on resume, "key_sha256", and informative fields}."""
    from ..engine.model import se_blocks

    blocks = [(name, int(se.channels)) for name, _, se in se_blocks(model)]
    return build_manifest(files, settings, blocks, model.info, pre)


def compute_shards(model: Any, files: FileList, shards: Sequence[int], pre: Preprocessing,
                   manifest: dict, out: Path, run: RunOptions) -> int:
    """Decode, forward and sum the given shards, saving each when done; returns how many."""
    key = manifest["key"]
    blocks, width = key["blocks"], sum(key["channels"])
    desc = f"rank {run.rank}/{run.world}" if run.world > 1 else "images"
    sums, done = ShardSums(blocks, width), 0
    for shard, index, cap, bad, last in captured_batches(model, files, key, shards, pre, run,
                                                         desc):
        sums.bad += bad
        if cap is not None:
            sums.add(index, files.labels[index], cap.gates, cap.probabilities,
                     file_stamps(files.root, [files.files[i] for i in index]))
        if last:
            save_npz(shard_path(out, shard), sums.arrays(shard, manifest["key_sha256"]))
            sums, done = ShardSums(blocks, width), done + 1
    return done


def captured_batches(model: Any, files: FileList, key: dict, shards: Sequence[int],
                     pre: Preprocessing, run: RunOptions, desc: str) -> Iterator[tuple]:
    """The given shards' images decoded (``run.workers`` processes) and captured batch by
    batch, with a progress bar labelled ``desc``: yields (shard, index, capture, bad, last),
    index the file positions captured (capture None when none could be decoded), bad
    [(position, reason)] for the files that could not, last whether the shard ends here.
    (se-viz analyze sums the batches, se-viz refit keeps their pairs.)"""
    from tqdm import tqdm

    from ..engine.capture import capture

    total = sum(hi - lo for lo, hi in (shard_range(key, s) for s in shards))
    skipped = 0
    with Decoder(run.workers, pre) as decoder, \
            tqdm(total=total, unit="img", desc=desc, disable=not run.progress,
                 file=sys.stderr, dynamic_ncols=True) as bar:
        for (shard, lo, hi, last), (x, ok, bad) in decoder.map(file_batches(files, key, shards)):
            cap = capture(model, x, batch_size=len(ok)) if ok else None
            yield (shard, lo + np.asarray(ok, np.int64), cap,
                   [(lo + p, reason) for p, reason in bad], last)
            skipped += len(bad)
            bar.update(hi - lo)
            if skipped:
                bar.set_postfix(skipped=skipped, refresh=False)


def file_batches(files: FileList, key: dict, shards: Sequence[int]
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
    model, pre = build_network(settings)
    share_cores(run)
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


def build_network(settings: Settings) -> tuple[Any, Preprocessing]:
    """The network ``settings`` describe and its preprocessing (``image_size`` applied)."""
    from ..engine.build import build_model

    model = build_model(settings.arch, settings.weights, settings.reduction,
                        settings.num_classes, width=settings.width, seed=settings.seed)
    pre = model.preprocessing
    if settings.image_size:
        pre = replace(pre, resize=settings.image_size, crop=settings.image_size)
    return model, pre


def share_cores(run: RunOptions) -> None:
    """Several ranks on one machine split its cores, unless SE_VIZ_THREADS says otherwise:
    each takes cores // ranks threads, for Paddle and (through SE_VIZ_THREADS, read when
    the graph is made) for ONNX Runtime."""
    local = os.environ.get("PADDLE_LOCAL_SIZE", "1")
    if run.world < 2 or not local.isdigit() or int(local) < 2 or "SE_VIZ_THREADS" in os.environ:
        return
    from ..engine.runtime import cpu_threads, set_cpu_threads

    share = max(1, cpu_threads() // int(local))
    os.environ["SE_VIZ_THREADS"] = str(share)
    set_cpu_threads(share)


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
