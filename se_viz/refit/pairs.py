"""The (squeeze z, gate s) pairs of the base network over an image folder, in shards.

``se-viz refit`` step 1. Like `se_viz.dataset.analyze`, the sorted file list is cut into
shards of consecutive files, decoded in worker processes and run batched; each shard is
written atomically to ``OUT/shards/shard_XXXXX.npz`` and never recomputed:

    index       (n,) int64 positions (in files.jsonl) of the images that decoded
    logits      (n, K) float32 base network's logits
    z_SE_s_b    (n, C) float32 squeeze values of block SE_s_b (the SE block's input, pooled)
    s_SE_s_b    (n, C) float32 its gates
    bad_index, bad_reason   files that could not be used

Blocks are separate members, so one block's pairs are read without the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset.analyze import RunOptions, captured_batches
from ..dataset.files import FileList
from ..dataset.shards import n_shards, save_npz, shard_done, shard_path
from ..errors import DatasetError
from ..images import Preprocessing

PAIRS_FORMAT = "se_viz.refit_pairs/1"


@dataclass(frozen=True)
class Pairs:
    """Pairs of the images ``index`` (positions in the file list, ascending): logits (n, K)
    and, for the blocks read, z and s (n, C) float32."""

    index: np.ndarray
    logits: np.ndarray
    z: dict[str, np.ndarray]
    s: dict[str, np.ndarray]


class _ShardPairs:
    def __init__(self, blocks: Sequence[str]) -> None:
        self.blocks = list(blocks)
        self.index: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []
        self.z: dict[str, list] = {b: [] for b in blocks}
        self.s: dict[str, list] = {b: [] for b in blocks}
        self.bad: list[tuple[int, str]] = []

    def add(self, index: np.ndarray, cap: Any) -> None:
        self.index.append(index)
        self.logits.append(cap.logits)
        for b in self.blocks:
            self.z[b].append(cap.squeeze[b])
            self.s[b].append(cap.gates[b])

    def arrays(self, shard: int, key: str, channels: Sequence[int], k: int) -> dict:
        def cat(parts: list, width: int, dtype=np.float32) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros((0, width), dtype)
        out = {"format": np.array(PAIRS_FORMAT), "key": np.array(key), "shard": np.array(shard),
               "index": np.concatenate(self.index).astype(np.int64) if self.index
               else np.zeros(0, np.int64),
               "logits": cat(self.logits, k),
               "bad_index": np.array([i for i, _ in self.bad], np.int64),
               "bad_reason": np.array([r for _, r in self.bad], dtype=str)}
        for b, c in zip(self.blocks, channels):
            out[f"z_{b}"], out[f"s_{b}"] = cat(self.z[b], c), cat(self.s[b], c)
        return out


def compute_pairs(model: Any, files: FileList, shards: Sequence[int], pre: Preprocessing,
                  manifest: dict, out: Path, run: RunOptions) -> int:
    """Decode, run and store the given shards' pairs; returns how many were written."""
    key = manifest["key"]
    desc = f"pairs, rank {run.rank}/{run.world}" if run.world > 1 else "pairs"
    acc, done = _ShardPairs(key["blocks"]), 0
    for shard, index, cap, bad, last in captured_batches(model, files, key, shards, pre, run,
                                                         desc):
        acc.bad += bad
        if cap is not None:
            acc.add(index, cap)
        if last:
            save_npz(shard_path(out, shard), acc.arrays(shard, manifest["key_sha256"],
                                                        key["channels"], key["num_classes"]))
            acc, done = _ShardPairs(key["blocks"]), done + 1
    return done


def load_pairs(out: Path, manifest: dict, blocks: Sequence[str] = (),
               positions: np.ndarray | None = None) -> Pairs:
    """The shards' pairs in file order: logits always, z and s of ``blocks``; only the
    images whose file positions are in ``positions`` when given (read shard by shard)."""
    key, digest = manifest["key"], manifest["key_sha256"]
    index, logits = [], []
    z: dict[str, list] = {b: [] for b in blocks}
    s: dict[str, list] = {b: [] for b in blocks}
    for shard in range(n_shards(key)):
        path = shard_path(out, shard)
        if not shard_done(path, digest, PAIRS_FORMAT):
            raise DatasetError(f"shard '{path}' is missing, damaged or from another run. "
                               "Delete it and run the same command again.")
        with np.load(path, allow_pickle=False) as npz:
            idx = npz["index"]
            rows = slice(None) if positions is None else np.flatnonzero(np.isin(idx, positions))
            index.append(idx[rows])
            logits.append(npz["logits"][rows])
            for b in blocks:
                z[b].append(npz[f"z_{b}"][rows])
                s[b].append(npz[f"s_{b}"][rows])
    return Pairs(np.concatenate(index), np.concatenate(logits),
                 {b: np.concatenate(v) for b, v in z.items()},
                 {b: np.concatenate(v) for b, v in s.items()})


def skipped_files(out: Path, manifest: dict, names: Sequence[str]) -> list[tuple[str, str]]:
    """(file, reason) of every file no shard could use, in file order."""
    found = []
    for shard in range(n_shards(manifest["key"])):
        with np.load(shard_path(out, shard), allow_pickle=False) as npz:
            found += [(names[int(i)], str(r)) for i, r in zip(npz["bad_index"],
                                                              npz["bad_reason"])]
    return found
