"""The gate store: every image's gates for every block, ``OUT/gates.parquet``.

One Parquet file (pyarrow), one row per usable image in the order of ``files.jsonl``
(skipped images have no row), row groups of `ROW_GROUP` images:

    index     int64    the image's line in files.jsonl (the manifest's file index)
    file      string   path relative to the dataset folder ('/' separators)
    class     string   its class folder (dictionary-encoded)
    label     int32    the class's index in the manifest's ``classes``
    size      int64    file size in bytes when analysed (-1: gone) } to tell a file that
    mtime_ns  int64    modification time in ns when analysed       } moved or changed
    SE_2_1 …  fixed_size_binary(2·C), one column per block (named as the network names it):
              the block's C gates as little-endian uint16, q = round(gate · 65535),
              so gate = q / 65535 within half a step, 7.63e-6 (`MAX_ERROR`, 7.7e-6,
              adds float32's rounding of q / 65535).

Why this layout: a query reads one block's column, row group by row group, and views each
chunk as a (rows, C) uint16 array without decoding (a fixed-size binary column is one
contiguous buffer): the largest SE-ResNet-50 block over 50,000 images (200 MB) streams in
about 0.05 s. Parquet stores uint16 as 4-byte INT32, and C columns of 2-byte float16 or a
list<uint16> column decode 20-30x slower; see README "Channel atlas". Every gate is in
[0, 1] (sigmoid or hard sigmoid), so a fixed uint16 scale is 32x finer than float16 near 1.
The schema's ``se_viz`` metadata (JSON) records the format, the run's ``key_sha256``, the
blocks, their channels, the classes and the scale. Written by `finish` from the shards in
shard order, so a resumed, merged or multi-process run writes the same bytes.

Numpy only at import (decode workers import this package); pyarrow inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..paths import atomic_file

STORE_FILE = "gates.parquet"
STORE_FORMAT = "se_viz.gates/1"
SCALE = 65535
MAX_ERROR = 0.5 / SCALE + 2.0 ** -24  # |dequantize(quantize(g)) - g|: half a step + float32
ROW_GROUP = 2048
FILE_COLUMNS = ("index", "file", "class", "label", "size", "mtime_ns")


def quantize(gates: np.ndarray) -> np.ndarray:
    """(..., C) gates in [0, 1] -> uint16 q = round(gate * 65535) (values outside [0, 1]
    are clipped)."""
    g = np.asarray(gates, np.float64)
    if not np.isfinite(g).all():
        raise DatasetError("some gates are NaN or infinite; the network's weights are broken "
                           "(check them with 'se-viz weights info').")
    return np.rint(np.clip(g, 0.0, 1.0) * SCALE).astype("<u2")


def dequantize(q: np.ndarray) -> np.ndarray:
    """uint16 -> float32 gates q / 65535."""
    return np.asarray(q, np.float32) / np.float32(SCALE)


@dataclass(frozen=True)
class StoreChunk:
    """Consecutive rows of the store: index, labels (n,) int64; files (n,) relative paths;
    gates (n, sum of C) uint16, blocks side by side; stamps (n, 2) int64 size, mtime_ns."""

    index: np.ndarray
    files: Sequence[str]
    labels: np.ndarray
    gates: np.ndarray
    stamps: np.ndarray


def store_metadata(key: dict, key_sha256: str) -> dict:
    return {"format": STORE_FORMAT, "key_sha256": key_sha256, "blocks": key["blocks"],
            "channels": key["channels"], "classes": key["classes"], "scale": SCALE,
            "gates": "little-endian uint16 per channel, gate = q / scale"}


def schema(key: dict, key_sha256: str):
    """The store's pyarrow schema for a run whose manifest key is ``key``."""
    import pyarrow as pa

    fields = [pa.field("index", pa.int64()), pa.field("file", pa.string()),
              pa.field("class", pa.string()), pa.field("label", pa.int32()),
              pa.field("size", pa.int64()), pa.field("mtime_ns", pa.int64())]
    fields += [pa.field(b, pa.binary(2 * c), metadata={"channels": str(c)})
               for b, c in zip(key["blocks"], key["channels"])]
    meta = json.dumps(store_metadata(key, key_sha256))
    return pa.schema(fields, metadata={"se_viz": meta})


def write_store(path: Path, key: dict, key_sha256: str, chunks: Iterable[StoreChunk],
                row_group: int = ROW_GROUP) -> int:
    """Write ``chunks`` (rows in order) as the store at ``path``, atomically, in row groups
    of ``row_group`` rows; returns the number of rows. Holds at most one row group."""
    import pyarrow.parquet as pq

    sch = schema(key, key_sha256)
    pending, n_pending, total = [], 0, 0
    with atomic_file(path) as handle, pq.ParquetWriter(
            handle, sch, compression={"file": "zstd", "class": "zstd"} | {
                b: "none" for b in key["blocks"]} | {c: "zstd" for c in FILE_COLUMNS[3:]},
            use_dictionary=["class"], write_statistics=list(FILE_COLUMNS)) as writer:
        for chunk in chunks:
            pending.append(_table(chunk, key, sch))
            n_pending += len(chunk.index)
            while n_pending >= row_group:
                pending, n_pending = _flush(writer, pending, row_group)
                total += row_group
        if n_pending:
            _flush(writer, pending, n_pending)
            total += n_pending
    return total


def _flush(writer, pending: list, rows: int) -> tuple[list, int]:
    """Write the first ``rows`` rows of ``pending`` as one row group; return the rest."""
    import pyarrow as pa

    table = pa.concat_tables(pending)
    writer.write_table(table.slice(0, rows), row_group_size=rows)
    rest = table.slice(rows)
    return ([rest] if rest.num_rows else []), rest.num_rows


def utf8(name: str) -> str:
    """A file name as Parquet's UTF-8 can hold it (undecodable bytes, kept by the listing as
    surrogates, become backslash escapes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _table(chunk: StoreChunk, key: dict, sch):
    import pyarrow as pa

    n = len(chunk.index)
    classes = key["classes"]
    labels = np.asarray(chunk.labels, np.int64)
    columns = [pa.array(np.asarray(chunk.index, np.int64)),
               pa.array([utf8(f) for f in chunk.files], pa.string()),
               pa.array([utf8(classes[k]) for k in labels.tolist()], pa.string()),
               pa.array(labels.astype(np.int32)), pa.array(chunk.stamps[:, 0]),
               pa.array(chunk.stamps[:, 1])]
    gates = np.asarray(chunk.gates, "<u2").reshape(n, sum(key["channels"]))
    start = 0
    for c in key["channels"]:
        block = np.ascontiguousarray(gates[:, start:start + c])
        columns.append(pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(2 * c), n, [None, pa.py_buffer(block)]))
        start += c
    return pa.Table.from_arrays(columns, schema=sch)
