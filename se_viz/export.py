"""Export captures as NPZ, JSON and CSV (bytes), and read them back. numpy + stdlib only.

All three carry the same content: ``files`` (N,), ``logits`` (N, K) and one (N, C) array per
block (``SE_2_1`` ... ``SE_5_3``), plus a metadata dictionary (weights hash, layout, r,
preprocessing, se_viz version).

* NPZ: arrays under those names, ``files`` as a unicode array and ``meta`` as a JSON string;
  loadable with ``np.load(path, allow_pickle=False)``.
* JSON: ``{"meta": {...}, "files": [...], "logits": [[...]], "gates": {block: [[...]]},
  "top5": [[{"index", "label", "probability"}, ...]]}``.
* CSV (long format): ``file,array,index,value`` with ``array`` = ``logits`` or a block name.

Class evidence (`se_viz.Evidence`, ``se-viz explain``) goes the same three ways
(`write_evidence`, `read_evidence`): ``files``, ``target`` (N,), ``logits`` and per block
``gates``, ``gate_grad``, ``attribution`` (N, C) and, for the blocks explained, ``cam`` and
``layercam`` (N, h, w): NPZ keys ``{block}/{array}``, JSON ``{"blocks": {block: {array:
lists}}}`` plus the class names, CSV one row per image x block x channel
(``image,target,block,channel,gate,gate_grad,attribution``).
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
from .results import Evidence
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


# ------------------------------------------------------------------ class evidence

EVIDENCE_ARRAYS = ("gates", "gate_grad", "attribution", "cam", "layercam")


def _evidence_blocks(ev: Evidence) -> dict[str, dict[str, np.ndarray]]:
    """block -> array name -> float32 array; cam and layercam only where held."""
    out = {}
    for b in ev.gates:
        arrays = {"gates": ev.gates[b], "gate_grad": ev.gate_grad[b],
                  "attribution": ev.attribution(b), "cam": ev.cam.get(b),
                  "layercam": ev.layercam.get(b)}
        out[b] = {k: np.asarray(v, np.float32) for k, v in arrays.items() if v is not None}
    return out


def _files(ev: Evidence) -> list[str]:
    return [ev.image_name(i) for i in range(len(ev))]


def evidence_to_npz(ev: Evidence, meta: Mapping[str, object] | None = None) -> bytes:
    """NPZ bytes: files, target (N,) int64, logits, meta (JSON) and ``{block}/{array}``."""
    arrays = {"files": np.asarray(_files(ev), dtype=str),
              "target": np.asarray(ev.target, np.int64),
              "logits": np.asarray(ev.logits, np.float32),
              "meta": np.asarray(json.dumps(dict(meta or {}), sort_keys=True))}
    for b, held in _evidence_blocks(ev).items():
        arrays.update({f"{b}/{k}": v for k, v in held.items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def evidence_to_json(ev: Evidence, meta: Mapping[str, object] | None = None,
                     labels: Sequence[str] | None = None) -> bytes:
    """JSON bytes: meta, files, target, target_label, logits, top5, class_names and
    ``blocks`` {block: {array: nested lists}}."""
    names = list(labels) if labels else None
    doc = {"meta": dict(meta or {}), "files": _files(ev),
           "target": [int(t) for t in ev.target],
           "target_label": [names[t] if names else f"class {t}" for t in ev.target],
           "logits": np.asarray(ev.logits, np.float32).tolist(),
           "top5": _top5(np.asarray(ev.logits, np.float64), names), "class_names": names,
           "blocks": {b: {k: v.tolist() for k, v in held.items()}
                      for b, held in _evidence_blocks(ev).items()}}
    return json.dumps(doc).encode("utf-8")


def evidence_to_csv(ev: Evidence, meta: Mapping[str, object] | None = None) -> bytes:
    """Long-format CSV bytes, one row per image x block x channel:
    image,target,block,channel,gate,gate_grad,attribution; metadata as leading '#' lines."""
    buf = io.StringIO()
    for key, value in sorted(dict(meta or {}).items()):
        buf.write(f"# {key}: {value}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "target", "block", "channel", "gate", "gate_grad", "attribution"])
    blocks = _evidence_blocks(ev)
    for i, name in enumerate(_files(ev)):
        target = int(ev.target[i])
        for b, held in blocks.items():
            rows = zip(held["gates"][i], held["gate_grad"][i], held["attribution"][i])
            writer.writerows((name, target, b, c, repr(float(g)), repr(float(d)), repr(float(a)))
                             for c, (g, d, a) in enumerate(rows))
    return buf.getvalue().encode("utf-8")


def write_evidence(path: str | Path, ev: Evidence, meta: Mapping[str, object] | None = None,
                   labels: Sequence[str] | None = None) -> Path:
    """Write the format chosen by ``path``'s suffix (.npz, .json or .csv), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        data = evidence_to_npz(ev, meta)
    elif suffix == ".json":
        data = evidence_to_json(ev, meta, labels)
    elif suffix == ".csv":
        data = evidence_to_csv(ev, meta)
    else:
        raise ValueError(f"--out must end in {', '.join(FORMATS)}, got '{path.name}'")
    return atomic_write(path, data)


def read_evidence(path: str | Path) -> tuple[Evidence, dict]:
    """Read an .npz or .json evidence export back: (Evidence named by its files, meta).
    The CSV holds gates and gradients only; read it with any CSV reader."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            files, meta = [str(f) for f in z["files"]], json.loads(str(z["meta"]))
            target, logits = z["target"], z["logits"]
            blocks: dict[str, dict[str, np.ndarray]] = {}
            for key in z.files:
                if "/" in key:
                    block, _, array = key.rpartition("/")
                    blocks.setdefault(block, {})[array] = z[key]
    elif suffix == ".json":
        doc = json.loads(path.read_text("utf-8"))
        files, meta = doc["files"], doc["meta"]
        target, logits = np.asarray(doc["target"], np.int64), np.asarray(doc["logits"], np.float32)
        blocks = {b: {k: np.asarray(v, np.float32) for k, v in held.items()}
                  for b, held in doc["blocks"].items()}
    else:
        raise ValueError(f"cannot read evidence from '{path.name}': use .npz or .json")
    fields = {f: {b: held[f] for b, held in blocks.items() if f in held}
              for f in ("gates", "gate_grad", "cam", "layercam")}
    return Evidence(target, logits, names=tuple(files), **fields), meta
