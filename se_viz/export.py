"""Export captures as NPZ, JSON and CSV (bytes), and read them back. numpy + stdlib only.

All three carry the same content: ``files`` (N,), ``logits`` (N, K) and one (N, C) array per
block (``SE_2_1`` ... ``SE_5_3``), plus a metadata dictionary (weights hash, layout, r,
preprocessing, se_viz version).

* NPZ: arrays under those names, ``files`` as a unicode array and ``meta`` as a JSON string;
  loadable with ``np.load(path, allow_pickle=False)``.
* JSON: ``{"meta": {...}, "files": [...], "logits": [[...]], "gates": {block: [[...]]},
  "top5": [[{"index", "label", "probability"}, ...]]}``.
* CSV (long format): ``file,array,index,value`` with ``array`` = ``logits`` or a block name.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .maths import softmax, top_k
from .paths import atomic_write
from .version import __version__

FORMATS = (".npz", ".json", ".csv")


def metadata(model: object) -> dict[str, object]:
    """What every export says about the network that made it (``model.info`` and its
    preprocessing): version, arch, width, r, SE layout, weights file, layout and sha256."""
    info = model.info
    return {"se_viz_version": __version__, "arch": info.arch, "width": info.width,
            "reduction": info.reduction, "num_classes": info.num_classes,
            "se_impl": info.se_impl, "weights": info.weights, "layout": info.layout,
            "weights_sha256": info.sha256 or "", "untrained": info.untrained,
            "se_weights": info.se_weights or "",
            "preprocessing": model.preprocessing.describe()}


def _check(files: Sequence[str], logits: np.ndarray, gates: Mapping[str, np.ndarray]) -> None:
    n = len(files)
    if logits.shape[0] != n or any(g.shape[0] != n for g in gates.values()):
        raise ValueError("files, logits and gates must describe the same number of images")


def to_npz(files: Sequence[str], logits: np.ndarray, gates: Mapping[str, np.ndarray],
           meta: Mapping[str, object] | None = None) -> bytes:
    """NPZ bytes (compressed)."""
    _check(files, logits, gates)
    buf = io.BytesIO()
    arrays = {"files": np.asarray(list(files), dtype=str),
              "logits": np.asarray(logits, np.float32),
              "meta": np.asarray(json.dumps(dict(meta or {}), sort_keys=True))}
    arrays.update({k: np.asarray(v, np.float32) for k, v in gates.items()})
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _top5(logits: np.ndarray, labels: Sequence[str] | None) -> list[list[dict]]:
    idx, prob = top_k(softmax(logits, axis=1), 5)
    return [[{"index": int(i), "label": labels[i] if labels else f"class {i}",
              "probability": float(p)} for i, p in zip(row_i, row_p)]
            for row_i, row_p in zip(idx, prob)]


def to_json(files: Sequence[str], logits: np.ndarray, gates: Mapping[str, np.ndarray],
            meta: Mapping[str, object] | None = None,
            labels: Sequence[str] | None = None) -> bytes:
    """JSON bytes (UTF-8). float32 values are written with full float32 precision."""
    _check(files, logits, gates)
    doc = {"meta": dict(meta or {}), "files": list(files),
           "logits": np.asarray(logits, np.float32).tolist(),
           "gates": {k: np.asarray(v, np.float32).tolist() for k, v in gates.items()},
           "top5": _top5(np.asarray(logits, np.float64), labels)}
    return json.dumps(doc).encode("utf-8")


def to_csv(files: Sequence[str], logits: np.ndarray, gates: Mapping[str, np.ndarray],
           meta: Mapping[str, object] | None = None) -> bytes:
    """Long-format CSV bytes: file,array,index,value; metadata as leading '#' lines."""
    _check(files, logits, gates)
    buf = io.StringIO()
    for key, value in sorted(dict(meta or {}).items()):
        buf.write(f"# {key}: {value}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "array", "index", "value"])
    arrays = {"logits": np.asarray(logits, np.float32), **gates}
    for i, name in enumerate(files):
        for array, values in arrays.items():
            row = np.asarray(values[i], np.float32)
            writer.writerows((name, array, j, repr(float(v))) for j, v in enumerate(row))
    return buf.getvalue().encode("utf-8")


def write(path: str | Path, files: Sequence[str], logits: np.ndarray,
          gates: Mapping[str, np.ndarray], meta: Mapping[str, object] | None = None,
          labels: Sequence[str] | None = None) -> Path:
    """Write the format chosen by ``path``'s suffix (.npz, .json or .csv)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        data = to_npz(files, logits, gates, meta)
    elif suffix == ".json":
        data = to_json(files, logits, gates, meta, labels)
    elif suffix == ".csv":
        data = to_csv(files, logits, gates, meta)
    else:
        raise ValueError(f"--out must end in {', '.join(FORMATS)}, got '{path.name}'")
    return atomic_write(path, data)


def read(path: str | Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray], dict]:
    """Read any export back: (files, logits (N, K), gates {block: (N, C)}, meta)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            gates = {k: z[k] for k in z.files if k.startswith("SE_")}
            return [str(f) for f in z["files"]], z["logits"], gates, json.loads(str(z["meta"]))
    if suffix == ".json":
        doc = json.loads(path.read_text("utf-8"))
        gates = {k: np.asarray(v, np.float32) for k, v in doc["gates"].items()}
        return doc["files"], np.asarray(doc["logits"], np.float32), gates, doc["meta"]
    if suffix == ".csv":
        return _read_csv(path.read_text("utf-8"))
    raise ValueError(f"cannot read '{path.name}': use .npz, .json or .csv")


def _read_csv(text: str) -> tuple[list[str], np.ndarray, dict[str, np.ndarray], dict]:
    meta = {}
    lines = text.splitlines()
    while lines and lines[0].startswith("# "):
        key, _, value = lines.pop(0)[2:].partition(": ")
        meta[key] = value
    rows: dict[str, dict[str, list[float]]] = {}
    for rec in csv.DictReader(lines):
        rows.setdefault(rec["file"], {}).setdefault(rec["array"], []).append(float(rec["value"]))
    files = list(rows)
    names = list(rows[files[0]]) if files else []
    stack = {a: np.asarray([rows[f][a] for f in files], np.float32) for a in names}
    logits = stack.pop("logits")
    return files, logits, stack, meta
