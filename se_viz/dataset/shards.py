"""Shard files of a dataset run: float64 partial sums, manifest, exact merge, output tables.

Numpy and the standard library only (no paddle), so it can be read, merged and tested
without a model. Written by `se_viz.dataset.analyze`:

    manifest.json           settings + hash of the file list (`claim_output`, `read_manifest`)
    files.jsonl             line i = ["class", "path/relative/to/DIR"] of image i (`FileList`)
    shards/shard_XXXXX.npz  one shard's per-class count, sum, sum of squares of every gate
                            (float64), per-image rows and every image's gates (uint16, see
                            `se_viz.dataset.store`), written atomically (`ShardSums`)
    stats.npz, per_image.csv, per_image.parquet, gates.parquet, skipped.txt, report.html
                            (`finish`)

Shards are summed in shard order (`merge`), so the result does not depend on which process
computed which shard.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import maths
from ..errors import DatasetError
from ..paths import atomic_file, atomic_write, cleanup_partials
from .files import FileList
from .network_id import network_identity
from .store import STORE_FILE, StoreChunk, quantize, write_store

if TYPE_CHECKING:  # hints only: shards never imports Pillow or paddle
    from ..images import Preprocessing

MANIFEST_FORMAT = "se_viz.dataset/1"
SHARD_FORMAT = "se_viz.dataset_shard/2"  # /2: + gates, size, mtime_ns
TOP = 5


# --------------------------------------------------------------------------- shards


class ShardSums:
    """Float64 sums of one shard: per class count, sum and sum of squares of every gate
    (blocks concatenated: ``width`` = total channels), plus per-image rows, every image's
    gates (uint16, `store.quantize`), its file's size and mtime, and skipped files."""

    def __init__(self, blocks: Sequence[str], width: int) -> None:
        self.blocks, self.width = list(blocks), width
        self.count: dict[int, int] = {}
        self.sum: dict[int, np.ndarray] = {}
        self.sumsq: dict[int, np.ndarray] = {}
        self.rows: list[dict[str, np.ndarray]] = []
        self.gates: list[np.ndarray] = []
        self.stamps: list[np.ndarray] = []
        self.bad: list[tuple[int, str]] = []

    def add(self, index: np.ndarray, labels: np.ndarray, gates: dict[str, np.ndarray],
            probs: np.ndarray, stamps: np.ndarray) -> None:
        """index, labels (n,); gates block -> (n, C); probs (n, K) class probabilities;
        stamps (n, 2) int64 size and mtime_ns of each file (`files.file_stamps`)."""
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
        self.gates.append(quantize(g))
        self.stamps.append(np.asarray(stamps, np.int64).reshape(len(g), 2))

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
                "gates": np.concatenate(self.gates or [np.zeros((0, self.width), np.uint16)]),
                "stamps": np.concatenate(self.stamps or [np.zeros((0, 2), np.int64)]),
                **{k: np.concatenate([r[k] for r in rows]) for k in rows[0]}}


def image_rows(index: np.ndarray, gates: Sequence[np.ndarray], probs: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Per-image rows: top-1 class and probability; per block (n, B) mean gate and normalised
    entropy (`se_viz.maths.normalized_entropy`) and (n, B, 5) top-5 channels (-1 pads C < 5)."""
    means, ents, tops = [], [], []
    for g in gates:
        g = np.asarray(g, np.float64)
        means.append(g.mean(axis=1))
        ents.append(np.asarray(maths.normalized_entropy(g)).reshape(len(g)) if len(g)
                    else np.zeros(0))
        top = maths.top_k(g, TOP)[0]
        tops.append(np.pad(top, ((0, 0), (0, TOP - top.shape[1])), constant_values=-1))
    return {"index": np.asarray(index, np.int64), "pred": probs.argmax(axis=1).astype(np.int64),
            "prob": probs.max(axis=1).astype(np.float32),
            "block_mean": np.stack(means, axis=1).astype(np.float32),
            "block_entropy": np.stack(ents, axis=1).astype(np.float32),
            "top5": np.stack(tops, axis=1).astype(np.int32)}


def shard_path(out: Path, shard: int) -> Path:
    return out / "shards" / f"shard_{shard:05d}.npz"


def load_shard(path: Path, key: str, fmt: str = SHARD_FORMAT) -> dict[str, np.ndarray]:
    """A finished shard's arrays; DatasetError if it is damaged or from other settings."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"shard '{path}' is damaged ({exc}). Delete it and run the same "
                           "command again to recompute it.") from exc
    if str(data.get("format", "")) != fmt or str(data.get("key", "")) != key:
        raise DatasetError(f"shard '{path}' belongs to another run (other settings or files). "
                           "Delete it, or use a new --out folder.")
    return data


def shard_done(path: Path, key: str, fmt: str = SHARD_FORMAT) -> bool:
    """True if a finished shard of this run is there (reads only its header members)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return str(npz["format"]) == fmt and str(npz["key"]) == key
    except (OSError, ValueError, EOFError, KeyError):
        return False


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz atomically (se_viz.paths.atomic_file)."""
    with atomic_file(path) as handle:
        np.savez(handle, **arrays)


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


# --------------------------------------------------------------------------- manifest


def build_manifest(files: FileList, settings: Any, blocks: Sequence[tuple[str, int]],
                   info: Any, pre: Preprocessing, fmt: str = MANIFEST_FORMAT,
                   extra: dict | None = None) -> dict:
    """{"key": what must match on resume, "key_sha256", and informative fields}.

    settings: a ``dataset.Settings``; blocks: (paper name, channels) of every SE block in
    forward order; info: the model's ``ModelInfo`` (sha256, weights, untrained); fmt and
    extra: another run's format tag and own settings (`se_viz.refit`)."""
    key = {"format": fmt, "files_sha256": files.digest(), "n_files": len(files.files),
           "classes": list(files.classes), "blocks": [name for name, _ in blocks],
           "channels": [channels for _, channels in blocks], "arch": settings.arch,
           "weights_sha256": info.sha256,
           "seed": None if info.sha256 else settings.seed,
           "reduction": settings.reduction, "num_classes": settings.num_classes,
           "width": settings.width, "preprocessing": asdict(pre),
           "batch_size": settings.batch_size, "shard_size": settings.shard_size,
           "limit_per_class": settings.limit_per_class, **(extra or {})}
    key = json.loads(json.dumps(key))  # tuples -> lists, as read back from disk
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return {"key": key, "key_sha256": digest, "root": str(files.root.resolve()),
            "weights": info.weights, "untrained": bool(info.untrained),
            "preprocessing": pre.describe(), "network": network_identity(info)}


def read_manifest(out: Path, fmt: str = MANIFEST_FORMAT) -> dict:
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"'{out}' holds no dataset run (no manifest.json). Run "
                           "'se-viz analyze DIR --out OUT' first.") from exc
    except (OSError, ValueError) as exc:
        raise DatasetError(f"'{out / 'manifest.json'}' is unreadable ({exc}). Delete '{out}' "
                           "and start again.") from exc
    if manifest.get("key", {}).get("format") != fmt:
        command = "analyze" if fmt == MANIFEST_FORMAT else "refit"
        raise DatasetError(f"'{out}' was not written by se-viz {command}. Use another --out "
                           "folder.")
    return manifest


def claim_output(out: Path, files: FileList, manifest: dict) -> None:
    """Write files.jsonl and manifest.json, or refuse if ``out`` holds a run of other settings."""
    target, fmt = out / "manifest.json", manifest["key"]["format"]
    if target.exists():
        _same_run(read_manifest(out, fmt), manifest, out)
    if not target.exists() or not (out / "files.jsonl").exists():
        with atomic_file(out / "files.jsonl", "w", encoding="utf-8",
                         errors="surrogateescape") as handle:
            handle.writelines(files.lines())
    try:  # atomic create-if-absent: concurrent ranks cannot both win
        with atomic_file(target, "w", exclusive=True, encoding="utf-8") as handle:
            handle.write(json.dumps(manifest, indent=1))
    except FileExistsError:
        _same_run(read_manifest(out, fmt), manifest, out)


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


# --------------------------------------------------------------------------- merge


def merge(out: Path, manifest: dict):
    """stats (se_viz.report.DatasetStats) from every shard, summed in shard order (exact)."""
    from ..analysis.dataset_stats import stats_from_sums

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
    from ..labels import label_for

    key = manifest["key"]
    header = ["file", "class", "pred_index", "pred_name", "top1_prob"] + \
        [f"{b}_{what}" for b in key["blocks"] for what in ("mean", "entropy", "top5")]
    skipped: list[tuple[str, str]] = []
    with open(out / "files.jsonl", encoding="utf-8", errors="surrogateescape") as listing, \
            atomic_file(out / "per_image.csv", "w", newline="", encoding="utf-8",
                        errors="surrogateescape") as handle:
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
    _csv_to_parquet(out / "per_image.csv", out / "per_image.parquet", header)
    text = "".join(f"{name}\t{reason}\n" for name, reason in skipped)
    atomic_write(out / "skipped.txt", text)
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
    with atomic_file(target) as handle, pq.ParquetWriter(handle, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)


def store_chunks(out: Path, manifest: dict) -> Iterator[StoreChunk]:
    """The gate store's rows from the finished shards, in shard order (gates and file
    stamps from the shards, names from files.jsonl)."""
    key = manifest["key"]
    label_of = {name: k for k, name in enumerate(key["classes"])}
    with open(out / "files.jsonl", encoding="utf-8", errors="surrogateescape") as listing:
        for s in range(n_shards(key)):
            lo, hi = shard_range(key, s)
            names = [json.loads(next(listing)) for _ in range(lo, hi)]
            d = load_shard(shard_path(out, s), manifest["key_sha256"])
            rows = [names[i - lo] for i in d["index"].tolist()]
            yield StoreChunk(d["index"], [f for _, f in rows],
                             np.array([label_of[c] for c, _ in rows], np.int64),
                             d["gates"], d["stamps"])


def write_store_from_shards(out: Path, manifest: dict, row_group: int | None = None) -> Path:
    """OUT/gates.parquet (`se_viz.dataset.store`) from OUT's finished shards."""
    path = out / STORE_FILE
    write_store(path, manifest["key"], manifest["key_sha256"], store_chunks(out, manifest),
                *([row_group] if row_group else []))
    return path


def finish(out: Path, manifest: dict) -> list[tuple[str, str]]:
    """Merge the shards and write stats.npz, per_image.csv, gates.parquet, skipped.txt and
    report.html."""
    from ..analysis.dataset_stats import stats_arrays
    from .report import write_report

    stats = merge(out, manifest)
    cleanup_partials(out / "shards")  # left by killed runs; every shard exists now
    skipped = write_tables(out, manifest)
    if stats.all_count == 0:
        raise DatasetError(f"none of the {len(skipped)} files could be used (reasons in "
                           f"{out / 'skipped.txt'}); nothing to report.")
    write_store_from_shards(out, manifest)
    save_npz(out / "stats.npz", stats_arrays(stats))
    write_report(stats, out / "report.html", skipped)
    return skipped
