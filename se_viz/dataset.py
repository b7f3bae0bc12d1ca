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
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InvalidImageError, SEVizError
from .images import Preprocessing, load_image, preprocess

MANIFEST_FORMAT = "se_viz.dataset/1"
SHARD_FORMAT = "se_viz.dataset_shard/1"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
TOP = 5
EXIT_OK, EXIT_FAILED, EXIT_INCOMPLETE = 0, 1, 3  # 1 as `se-viz capture`: some files skipped


class DatasetError(SEVizError, ValueError):
    """The folder, the output folder or the settings of a dataset run cannot be used."""


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
class FileList:
    """Sorted images of an ImageFolder: files[i] (relative, '/') has class classes[labels[i]]."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]
    labels: np.ndarray  # (N,) int64

    def lines(self) -> Iterator[str]:
        for f, k in zip(self.files, self.labels):
            yield json.dumps([self.classes[k], f]) + "\n"

    def digest(self) -> str:
        h = hashlib.sha256()
        for line in self.lines():
            h.update(line.encode("utf-8", "surrogateescape"))
        return h.hexdigest()


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


# --------------------------------------------------------------------------- shards


class ShardSums:
    """Float64 sums of one shard: per class count, sum and sum of squares of every gate
    (blocks concatenated: ``width`` = total channels), plus per-image rows and skipped files."""

    def __init__(self, blocks: Sequence[str], width: int) -> None:
        self.blocks, self.width = list(blocks), width
        self.count: dict[int, int] = {}
        self.sum: dict[int, np.ndarray] = {}
        self.sumsq: dict[int, np.ndarray] = {}
        self.rows: list[dict[str, np.ndarray]] = []
        self.bad: list[tuple[int, str]] = []

    def add(self, index: np.ndarray, labels: np.ndarray, gates: dict[str, np.ndarray],
            probs: np.ndarray) -> None:
        """index, labels (n,); gates block -> (n, C); probs (n, K) class probabilities."""
        g = np.concatenate([gates[b] for b in self.blocks], axis=1).astype(np.float64)
        for k in np.unique(labels).tolist():
            rows = g[labels == k]
            if k not in self.sum:
                self.count[k] = 0
                self.sum[k], self.sumsq[k] = np.zeros(self.width), np.zeros(self.width)
            self.count[k] += rows.shape[0]
            self.sum[k] += rows.sum(axis=0)
            self.sumsq[k] += (rows * rows).sum(axis=0)
        self.rows.append(image_rows(index, [gates[b] for b in self.blocks], probs))

    def arrays(self, shard: int, key: str) -> dict[str, np.ndarray]:
        """The shard file's arrays (see `load_shard`)."""
        ids = sorted(self.sum)
        rows = self.rows or [image_rows(np.zeros(0), [np.zeros((0, 1))] * len(self.blocks),
                                        np.zeros((0, 1)))]  # every file of the shard was bad
        return {"format": np.array(SHARD_FORMAT), "key": np.array(key),
                "shard": np.array(shard), "class_ids": np.array(ids, np.int64),
                "counts": np.array([self.count[k] for k in ids], np.int64),
                "sum": np.array([self.sum[k] for k in ids]).reshape(len(ids), self.width),
                "sumsq": np.array([self.sumsq[k] for k in ids]).reshape(len(ids), self.width),
                "bad_index": np.array([i for i, _ in self.bad], np.int64),
                "bad_reason": np.array([r for _, r in self.bad], dtype=str),
                **{k: np.concatenate([r[k] for r in rows]) for k in rows[0]}}


def image_rows(index: np.ndarray, gates: Sequence[np.ndarray], probs: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Per-image rows: top-1 class and probability; per block (n, B) mean gate and normalised
    entropy (as analysis.normalized_entropy) and (n, B, 5) top-5 channels (-1 pads C < 5)."""
    means, ents, tops = [], [], []
    for g in gates:
        g = np.clip(np.asarray(g, np.float64), 0.0, None)
        total = g.sum(axis=1, keepdims=True)
        p = np.divide(g, total, out=np.zeros_like(g), where=total > 0)
        h = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=1)
        ent = np.clip(h / np.log(g.shape[1]), 0, 1) if g.shape[1] > 1 else np.ones(len(g))
        means.append(g.mean(axis=1))
        ents.append(np.where(total[:, 0] > 0, ent, 1.0))
        top = np.argsort(-g, axis=1, kind="stable")[:, :TOP]
        tops.append(np.pad(top, ((0, 0), (0, TOP - top.shape[1])), constant_values=-1))
    return {"index": np.asarray(index, np.int64), "pred": probs.argmax(axis=1).astype(np.int64),
            "prob": probs.max(axis=1).astype(np.float32),
            "block_mean": np.stack(means, axis=1).astype(np.float32),
            "block_entropy": np.stack(ents, axis=1).astype(np.float32),
            "top5": np.stack(tops, axis=1).astype(np.int32)}


def shard_path(out: Path, shard: int) -> Path:
    return out / "shards" / f"shard_{shard:05d}.npz"


def load_shard(path: Path, key: str) -> dict[str, np.ndarray]:
    """A finished shard's arrays; DatasetError if it is damaged or from other settings."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"shard '{path}' is damaged ({exc}). Delete it and run the same "
                           "command again to recompute it.") from exc
    if str(data.get("format", "")) != SHARD_FORMAT or str(data.get("key", "")) != key:
        raise DatasetError(f"shard '{path}' belongs to another run (other settings or files). "
                           "Delete it, or use a new --out folder.")
    return data


def _shard_done(path: Path, key: str) -> bool:
    """True if a finished shard of this run is there (reads only its header members)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return str(npz["format"]) == SHARD_FORMAT and str(npz["key"]) == key
    except (OSError, ValueError, EOFError, KeyError):
        return False


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- manifest


def make_manifest(files: FileList, settings: Settings, model: Any, pre: Preprocessing) -> dict:
    """{"key": what must match on resume, "key_sha256", and informative fields}."""
    from .model import se_blocks

    blocks = se_blocks(model)
    key = {"format": MANIFEST_FORMAT, "files_sha256": files.digest(), "n_files": len(files.files),
           "classes": list(files.classes), "blocks": [name for name, _, _ in blocks],
           "channels": [int(se.channels) for _, _, se in blocks], "arch": settings.arch,
           "weights_sha256": model.info.sha256,
           "seed": None if model.info.sha256 else settings.seed,
           "reduction": settings.reduction, "num_classes": settings.num_classes,
           "width": settings.width, "preprocessing": asdict(pre),
           "batch_size": settings.batch_size, "shard_size": settings.shard_size,
           "limit_per_class": settings.limit_per_class}
    key = json.loads(json.dumps(key))  # tuples -> lists, as read back from disk
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return {"key": key, "key_sha256": digest, "root": str(files.root.resolve()),
            "weights": model.info.weights, "untrained": bool(model.info.untrained),
            "preprocessing": pre.describe()}


def read_manifest(out: Path) -> dict:
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"'{out}' holds no dataset run (no manifest.json). Run "
                           "'se-viz analyze DIR --out OUT' first.") from exc
    except (OSError, ValueError) as exc:
        raise DatasetError(f"'{out / 'manifest.json'}' is unreadable ({exc}). Delete '{out}' "
                           "and start again.") from exc
    if manifest.get("key", {}).get("format") != MANIFEST_FORMAT:
        raise DatasetError(f"'{out}' was not written by se-viz analyze. Use another --out folder.")
    return manifest


def claim_output(out: Path, files: FileList, manifest: dict) -> None:
    """Write files.jsonl and manifest.json, or refuse if ``out`` holds a run of other settings."""
    target = out / "manifest.json"
    if target.exists():
        _same_run(read_manifest(out), manifest, out)
    if not target.exists() or not (out / "files.jsonl").exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".files.jsonl.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.writelines(files.lines())
        os.replace(tmp, out / "files.jsonl")
    tmp = out / f".manifest.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    try:
        os.link(tmp, target)  # atomic create-if-absent: concurrent ranks cannot both win
    except FileExistsError:
        _same_run(read_manifest(out), manifest, out)
    finally:
        tmp.unlink()


def _same_run(old: dict, new: dict, out: Path) -> None:
    if old.get("key_sha256") == new["key_sha256"]:
        return
    a, b = old.get("key", {}), new["key"]
    if a.get("files_sha256") != b["files_sha256"]:
        what = [f"the image list changed ({a.get('n_files')} files then, {b['n_files']} now)"]
    else:
        what = [f"{k}: {a.get(k)!r} then, {b[k]!r} now" for k in b if a.get(k) != b[k]]
    raise DatasetError(f"'{out}' holds a run with other settings ({'; '.join(what)}). Resume "
                       "with the same settings, use a new --out folder, or delete this one.")


def shard_range(key: dict, shard: int) -> tuple[int, int]:
    size = key["shard_size"]
    return shard * size, min((shard + 1) * size, key["n_files"])


def n_shards(key: dict) -> int:
    return -(-key["n_files"] // key["shard_size"])


# --------------------------------------------------------------------------- compute


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
                _save_npz(shard_path(out, shard), sums.arrays(shard, manifest["key_sha256"]))
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


def wait_for_shards(out: Path, total: int, timeout: float | None, poll: float = 1.0) -> None:
    """Block until every shard file exists (rank 0 waits for the other ranks)."""
    start, missing = time.monotonic(), list(range(total))
    while True:
        missing = [s for s in missing if not shard_path(out, s).exists()]
        if not missing:
            return
        if timeout is not None and time.monotonic() - start >= timeout:
            raise DatasetError(
                f"{len(missing)} of {total} shards are missing (first: "
                f"{shard_path(out, missing[0])}). Run the same command again to compute them "
                "(finished shards are kept), or add --merge-only once all ranks have finished.")
        time.sleep(poll)


# --------------------------------------------------------------------------- merge


def merge(out: Path, manifest: dict):
    """stats (se_viz.report.DatasetStats) from every shard, summed in shard order (exact)."""
    from .report import stats_from_sums

    key = manifest["key"]
    width = sum(key["channels"])
    sums, sumsq = np.zeros((len(key["classes"]), width)), np.zeros((len(key["classes"]), width))
    counts = np.zeros(len(key["classes"]), np.int64)
    for s in range(n_shards(key)):
        data = load_shard(shard_path(out, s), manifest["key_sha256"])
        ids = data["class_ids"]
        sums[ids] += data["sum"]
        sumsq[ids] += data["sumsq"]
        counts[ids] += data["counts"]
    meta = {k: manifest.get(k) for k in ("root", "weights", "untrained", "preprocessing")}
    meta.update({k: key[k] for k in ("arch", "weights_sha256", "reduction", "num_classes",
                                     "width", "n_files", "files_sha256")})
    meta["ddof"] = 0
    return stats_from_sums(key["classes"], counts, key["blocks"], key["channels"], sums, sumsq,
                           meta)


def write_tables(out: Path, manifest: dict) -> list[tuple[str, str]]:
    """per_image.csv and skipped.txt, streamed shard by shard; returns the skipped files."""
    from .labels import label_for

    key = manifest["key"]
    header = ["file", "class", "pred_index", "pred_name", "top1_prob"] + \
        [f"{b}_{what}" for b in key["blocks"] for what in ("mean", "entropy", "top5")]
    skipped: list[tuple[str, str]] = []
    tmp = out / f".per_image.csv.{os.getpid()}.tmp"
    with open(out / "files.jsonl", encoding="utf-8", errors="surrogateescape") as listing, \
            open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for s in range(n_shards(key)):
            lo, hi = shard_range(key, s)
            names = [json.loads(next(listing)) for _ in range(lo, hi)]
            d = load_shard(shard_path(out, s), manifest["key_sha256"])
            skipped += [(names[i - lo][1], str(r)) for i, r in zip(d["bad_index"], d["bad_reason"])]
            for r, i in enumerate(d["index"]):
                cls, name = names[i - lo]
                pred = int(d["pred"][r])
                per_block = [(f"{m:.6f}", f"{e:.6f}", " ".join(map(str, t[t >= 0])))
                             for m, e, t in zip(d["block_mean"][r], d["block_entropy"][r],
                                                d["top5"][r])]
                writer.writerow([name, cls, pred, label_for(pred, key["num_classes"]),
                                 f"{d['prob'][r]:.6f}", *(v for t in per_block for v in t)])
    os.replace(tmp, out / "per_image.csv")
    _csv_to_parquet(out / "per_image.csv", out / "per_image.parquet", header)
    text = "".join(f"{name}\t{reason}\n" for name, reason in skipped)
    (out / "skipped.txt").write_text(text, encoding="utf-8", errors="surrogateescape")
    return skipped


def _csv_to_parquet(source: Path, target: Path, header: Sequence[str]) -> None:
    """per_image.parquet next to the CSV when pyarrow is installed (streamed, bounded memory)."""
    try:
        import pyarrow as pa
        from pyarrow import csv as pa_csv, parquet as pq
    except ImportError:
        return
    text = {"file", "class", "pred_name"} | {h for h in header if h.endswith("_top5")}
    types = {h: pa.string() if h in text else pa.int64() if h == "pred_index" else pa.float64()
             for h in header}
    reader = pa_csv.open_csv(source, convert_options=pa_csv.ConvertOptions(column_types=types))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with pq.ParquetWriter(tmp, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
    os.replace(tmp, target)


def finish(out: Path, manifest: dict) -> list[tuple[str, str]]:
    """Merge the shards and write stats.npz, per_image.csv, skipped.txt and report.html."""
    from .report import stats_arrays, write_report

    stats = merge(out, manifest)
    for stale in (out / "shards").glob(".shard_*.tmp"):  # left by killed runs; all shards exist
        stale.unlink(missing_ok=True)
    skipped = write_tables(out, manifest)
    if stats.all_count == 0:
        raise DatasetError(f"none of the {len(skipped)} files could be used (reasons in "
                           f"{out / 'skipped.txt'}); nothing to report.")
    _save_npz(out / "stats.npz", stats_arrays(stats))
    write_report(stats, out / "report.html", skipped)
    return skipped


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
    todo = [s for s in mine if not _shard_done(shard_path(out, s), manifest["key_sha256"])]
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
