"""Channel atlas: what a channel responds to across your own images, from the gate store
that ``se-viz analyze`` writes (``OUT/gates.parquet``, format in `se_viz.dataset.store`).

    store = GateStore.open("results")              # manifest.json + gates.parquet
    store.top("SE_4_6", 117, k=10)                 # [ChannelHit(index, file, gate, ...)]
    store.top("SE_4_6", 117, bottom=True, klass="pug")
    store.per_class("SE_4_6", 117)                 # [ClassSummary(class_name, count, mean, ...)]
    store.nearest(gates_of_one_image, "SE_4_6")    # [SimilarHit(..., similarity)], cosine
    store.like("cat.jpg", "SE_4_6")                # captured with the store's own network
    store.check_network(model)                     # DatasetError naming both networks

Every query streams one block's column row group by row group (`ROW_GROUP` images at a
time); the store is never loaded whole. Ties are broken by the image's index. A hit's
``status`` is "ok", "missing" (no file at ``path`` any more) or "changed" (size or mtime
differ from when it was analysed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .network_id import (describe_network, identity_from_manifest, network_difference,
                         network_identity)
from .shards import read_manifest
from .store import FILE_COLUMNS, STORE_FILE, STORE_FORMAT, dequantize

LISTED = 30  # names listed in a one-line error before "... (N in all)"


@dataclass(frozen=True)
class ChannelHit:
    """One image of a channel's top or bottom list: ``gate`` in [0, 1] (stored, within 7.6e-6)."""

    index: int  # the image's line in files.jsonl
    file: str  # relative to the dataset folder
    class_name: str
    gate: float
    path: Path  # where the file is expected now
    status: str = "ok"  # "ok", "missing" or "changed"


@dataclass(frozen=True)
class SimilarHit:
    """One image of a nearest-images list: cosine ``similarity`` of its gates to the query."""

    index: int
    file: str
    class_name: str
    similarity: float
    path: Path
    status: str = "ok"


@dataclass(frozen=True)
class ClassSummary:
    """One class's distribution of a channel's gate (NaN where the class has no image)."""

    class_name: str
    count: int
    mean: float
    std: float  # population (ddof 0)
    min: float
    q10: float
    q25: float
    median: float
    q75: float
    q90: float
    max: float


@dataclass(frozen=True)
class ChannelValues:
    """Every stored image's gate of one channel: index, label (N,) int64; gate (N,) float32."""

    block: str
    channel: int
    index: np.ndarray
    label: np.ndarray
    gate: np.ndarray


def one_line_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > LISTED else "")


class GateStore:
    """A results folder's gate store, opened for queries (`GateStore.open`)."""

    def __init__(self, results: Path, manifest: dict, root: Path) -> None:
        self.results, self.manifest, self.root = results, manifest, root
        self.path = results / STORE_FILE
        key = manifest["key"]
        self.blocks: tuple[str, ...] = tuple(key["blocks"])
        self.channels: dict[str, int] = dict(zip(key["blocks"], key["channels"]))
        self.classes: tuple[str, ...] = tuple(key["classes"])
        with self._open() as pf:
            small = pf.read(columns=["index", "label"])
            self._row_starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows
                                                for i in range(pf.num_row_groups)])
        self.index = small.column("index").to_numpy()  # (N,) int64, rows in this order
        self.label = small.column("label").to_numpy().astype(np.int64)

    @classmethod
    def open(cls, results: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
             ) -> "GateStore":
        """The store in ``results`` (an ``se-viz analyze`` output folder). root: where the
        image folder is now (default: where it was analysed, from the manifest)."""
        results = Path(results)
        manifest = read_manifest(results)
        return cls(results, manifest, Path(root if root is not None else manifest["root"]))

    # ------------------------------------------------------------------ reading

    @contextmanager
    def _open(self) -> Iterator[Any]:
        """The store's ``pyarrow.parquet.ParquetFile``, checked to belong to this run; each
        query opens its own (safe from several threads), closed when it is done."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        hint = (f"Run 'se-viz analyze {self.manifest.get('root', 'DIR')} --out {self.results}' "
                "again with the same settings to write it (finished shards are reused).")
        if not self.path.exists():
            raise DatasetError(f"'{self.results}' has no {STORE_FILE} (the run is not finished, "
                               f"or older than the gate store). {hint}")
        try:
            pf = pq.ParquetFile(self.path)
            meta = pf.schema_arrow.metadata or {}
            info = json.loads(meta.get(b"se_viz", b"{}"))
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DatasetError(f"'{self.path}' is damaged ({exc}). {hint}") from exc
        if info.get("format") != STORE_FORMAT:
            raise DatasetError(f"'{self.path}' is not a se_viz gate store ({STORE_FORMAT}). "
                               f"{hint}")
        if info.get("key_sha256") != self.manifest["key_sha256"] or \
                pf.schema_arrow.names != [*FILE_COLUMNS, *self.blocks]:
            raise DatasetError(f"'{self.path}' belongs to another run than "
                               f"'{self.results / 'manifest.json'}'. {hint}")
        with pf:
            yield pf

    def _chunks(self, block: str) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (n, C) uint16 gates) of ``block``, one row group at a time."""
        c, start = self.channels[block], 0
        with self._open() as pf:
            for rg in range(pf.num_row_groups):
                for chunk in pf.read_row_group(rg, columns=[block]).column(0).chunks:
                    n = len(chunk)
                    q = np.frombuffer(chunk.buffers()[1], "<u2", count=n * c,
                                      offset=chunk.offset * 2 * c).reshape(n, c)
                    yield start, q
                    start += n

    def _rows(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """file, class, size, mtime_ns of the given row positions (read from their groups)."""
        found: dict[int, dict[str, Any]] = {}
        groups = np.searchsorted(self._row_starts, rows, side="right") - 1
        with self._open() as pf:
            for rg in np.unique(groups).tolist():
                table = pf.read_row_group(rg, columns=list(FILE_COLUMNS[1:]))
                mine = rows[groups == rg]
                found.update(zip(mine.tolist(),
                                 table.take(mine - self._row_starts[rg]).to_pylist()))
        return [found[r] for r in rows.tolist()]

    def _status(self, row: dict[str, Any]) -> str:
        try:
            st = os.stat(self.root / row["file"])
        except OSError:
            return "missing"
        return "ok" if (st.st_size, st.st_mtime_ns) == (row["size"], row["mtime_ns"]) \
            else "changed"

    # ------------------------------------------------------------------ checks

    @property
    def n_images(self) -> int:
        return int(self.index.size)

    def check_block(self, block: str) -> int:
        """The block's number of channels; DatasetError listing the blocks if unknown."""
        if block not in self.channels:
            raise DatasetError(f"no block {block!r} in this store; its blocks: "
                               f"{one_line_list(self.blocks)}")
        return self.channels[block]

    def check_channel(self, block: str, channel: int) -> None:
        c = self.check_block(block)
        if not 0 <= int(channel) < c:
            raise DatasetError(f"channel {channel} is out of range: {block} has {c} channels "
                               f"(0..{c - 1})")

    def class_label(self, klass: str | int | None) -> int | None:
        """The index of class ``klass``: a name (case-insensitive), else an index."""
        if klass is None:
            return None
        lower = [c.lower() for c in self.classes]
        if str(klass).lower() in lower:
            return lower.index(str(klass).lower())
        if str(klass).isdigit() and int(klass) < len(self.classes):
            return int(klass)
        raise DatasetError(f"no class {klass!r} in this store; its classes: "
                           f"{one_line_list(self.classes)}")

    @property
    def network(self) -> dict:
        """The identity of the network that made the store (arch, r, classes, width, weights
        sha256 or seed, blocks); see `network_id`."""
        return identity_from_manifest(self.manifest)

    def check_network(self, model: Any) -> None:
        """DatasetError naming both networks unless ``model`` (or its ``ModelInfo``) is the
        one that made the store: arch, r, classes, width, weights, blocks."""
        info = getattr(model, "info", model)
        mine, theirs = self.network, network_identity(info)
        diff = network_difference(mine, theirs)
        if diff:
            raise DatasetError(
                f"this store was made by {describe_network(mine)}; the network given is "
                f"{describe_network(theirs)} ({', '.join(diff)} differ). Use the network that "
                "made the store, or run 'se-viz analyze' with this one into a new --out folder.")

    # ------------------------------------------------------------------ queries

    def channel_values(self, block: str, channel: int) -> ChannelValues:
        """One channel's gate for every stored image (N values, streamed per row group)."""
        self.check_channel(block, channel)
        q = np.empty(self.n_images, np.uint16)
        for start, chunk in self._chunks(block):
            q[start:start + len(chunk)] = chunk[:, channel]
        return ChannelValues(block, int(channel), self.index, self.label, dequantize(q))

    def top(self, block: str, channel: int, k: int = 10, bottom: bool = False,
            klass: str | int | None = None) -> list[ChannelHit]:
        """The k images with the highest (``bottom``: lowest) gate of ``channel`` in
        ``block``, best first; only class ``klass`` when given."""
        _positive(k)
        values = self.channel_values(block, channel)
        rows = self._class_rows(klass)
        gate = values.gate[rows]
        order = np.argsort(gate if bottom else -gate, kind="stable")[:k]  # rows in index order
        chosen = rows[order]
        return [ChannelHit(int(self.index[r]), row["file"], row["class"], float(values.gate[r]),
                           self.root / row["file"], self._status(row))
                for r, row in zip(chosen.tolist(), self._rows(chosen))]

    def nearest(self, gates: np.ndarray, block: str, k: int = 10,
                klass: str | int | None = None) -> list[SimilarHit]:
        """The k stored images whose gates in ``block`` are closest to ``gates`` (C,) by cosine
        similarity, best first (an image with all-zero gates has similarity 0)."""
        _positive(k)
        c = self.check_block(block)
        query = np.asarray(gates, np.float64).reshape(-1)
        norm = float(np.linalg.norm(query)) if np.isfinite(query).all() else 0.0
        if query.size != c or norm == 0.0:
            raise DatasetError(f"the query for {block} must be {c} finite gates, not all zero "
                               f"(got {query.size} values{'' if query.size != c else ', norm 0'})")
        unit = (query / norm).astype(np.float32)
        label = self.class_label(klass)
        sims, rows = [], []
        for start, chunk in self._chunks(block):
            g = chunk.astype(np.float32)
            lengths = np.sqrt(np.einsum("ij,ij->i", g, g))
            sim = (g @ unit) / np.where(lengths > 0, lengths, 1.0)
            here = np.arange(start, start + len(g))
            if label is not None:
                keep = self.label[here] == label
                sim, here = sim[keep], here[keep]
            if sim.size > k:  # keep the k best and everything tied with the k-th
                kth = np.partition(sim, sim.size - k)[sim.size - k]
                keep = sim >= kth
                sim, here = sim[keep], here[keep]
            sims.append(sim)
            rows.append(here)
        sim, here = np.concatenate(sims), np.concatenate(rows)
        order = np.lexsort((here, -sim))[:k]
        chosen = here[order]
        return [SimilarHit(int(self.index[r]), row["file"], row["class"], float(s),
                           self.root / row["file"], self._status(row))
                for r, s, row in zip(chosen.tolist(), sim[order].tolist(), self._rows(chosen))]

    def per_class(self, block: str, channel: int) -> list[ClassSummary]:
        """The channel's gate distribution in every class of the store, in class order."""
        values = self.channel_values(block, channel)
        out = []
        for k, name in enumerate(self.classes):
            g = values.gate[values.label == k].astype(np.float64)
            if g.size == 0:
                out.append(ClassSummary(name, 0, *[float("nan")] * 9))
                continue
            q = np.quantile(g, [0.1, 0.25, 0.5, 0.75, 0.9])
            out.append(ClassSummary(name, int(g.size), float(g.mean()), float(g.std()),
                                    float(g.min()), *map(float, q), float(g.max())))
        return out

    def _class_rows(self, klass: str | int | None) -> np.ndarray:
        label = self.class_label(klass)
        if label is None:
            return np.arange(self.n_images)
        return np.flatnonzero(self.label == label)

    # ------------------------------------------------------------------ capture

    def build_network(self, weights: str | os.PathLike[str] | None = None):
        """(model, preprocessing): the network that made the store, rebuilt from the
        manifest as ``se-viz analyze`` built it (weights: another path to the same file)."""
        from .analyze import Settings, build_network

        key = self.manifest["key"]
        settings = Settings(key["arch"], self._weights_file() if weights is None else
                            str(weights), key["reduction"], key["num_classes"], key["width"],
                            key.get("seed") or 0)
        model, _ = build_network(settings)
        self.check_network(model)
        return model, self.preprocessing

    @property
    def preprocessing(self):
        """The run's preprocessing (``se_viz.images.Preprocessing``)."""
        from ..images import Preprocessing

        stored = self.manifest["key"]["preprocessing"]
        return Preprocessing(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in stored.items()})

    def _weights_file(self) -> str | None:
        """The weights file the run used (None: untrained), if it is still there."""
        if self.manifest.get("untrained"):
            return None
        path, sha = str(self.manifest.get("weights")), self.network.get("weights_sha256") or ""
        if not os.path.isfile(path):
            raise DatasetError(f"this store was made with the weights file '{path}' (sha256 "
                               f"{sha[:12]}), which is not there any more; give the same file "
                               "with --weights PATH (Python: build_network(weights=PATH)).")
        return path

    def like(self, image: Any, block: str, k: int = 10, klass: str | int | None = None,
             model: Any = None, preprocessing: Any = None) -> list[SimilarHit]:
        """Capture ``image`` (a path or PIL image) with the store's network (``model``: one
        already built, checked with `check_network`) and return `nearest` in ``block``."""
        from ..engine.capture import capture
        from ..images import load_image, preprocess

        self.check_block(block)
        if model is None:
            model, preprocessing = self.build_network()
        else:
            self.check_network(model)
        if preprocessing is None:
            preprocessing = self.preprocessing
        img = image if hasattr(image, "mode") else load_image(image, draft_for=preprocessing)
        cap = capture(model, preprocess(img, preprocessing)[None], batch_size=1)
        return self.nearest(cap.gates[block][0], block, k, klass)


def _positive(k: int) -> None:
    if int(k) < 1:
        raise DatasetError(f"k must be >= 1, got {k}")
