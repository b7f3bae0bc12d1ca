"""The files of a refit folder: where each lives, and whether one belongs to this run.

    OUT/refit.json                      the summary over every r (format `REFIT_FORMAT`,
                                        as OUT/manifest.json)
    OUT/se_r{R}.safetensors             the SE blocks at r (`se_viz.engine.se_weights`)
    OUT/fits/r{R}.blockwise.safetensors the blockwise fit (before --finetune)
    OUT/fits/r{R}.json                  the figures of se_r{R} on the held-out images

Every SE file carries the run's key (``refit_key`` in its metadata), so a file of other
settings is never taken for a finished step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..analysis.se_fit import ratio_key
from ..errors import WeightsError
from ..results import SEParameters

REFIT_FORMAT = "se_viz.refit/1"  # refit.json's "format" and the manifest's


def se_path(out: Path, r: float) -> Path:
    return out / f"se_r{ratio_key(r)}.safetensors"


def blockwise_path(out: Path, r: float) -> Path:
    return out / "fits" / f"r{ratio_key(r)}.blockwise.safetensors"


def figures_path(out: Path, r: float) -> Path:
    return out / "fits" / f"r{ratio_key(r)}.json"


def se_file_of_run(path: Path, key: str) -> dict | None:
    """The metadata (and "sha256") of an SE file this run wrote; None if it is absent,
    damaged or from other settings."""
    from ..engine.se_weights import read_se_weights

    if not path.is_file():
        return None
    try:
        _, meta, digest, _ = read_se_weights(path)
    except WeightsError:
        return None
    return {**meta, "sha256": digest} if meta.get("refit_key") == key else None


def figures_of_run(out: Path, r: float, key: str) -> dict | None:
    """fits/r{R}.json of this run, if finished and its SE file is the one it describes."""
    try:
        figures = json.loads(figures_path(out, r).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    meta = se_file_of_run(se_path(out, r), key)
    ok = figures.get("refit_key") == key and meta and meta["sha256"] == figures.get("sha256")
    return figures if ok else None


def params_of(path: Path, blocks: Any) -> tuple[dict[str, SEParameters], dict[str, str]]:
    """(block -> SEParameters float32, metadata) of an SE file of the network whose
    attention blocks are ``blocks``."""
    from ..engine.se_weights import read_se_weights, se_params_of, se_paths

    arrays, meta, _, _ = read_se_weights(path)
    return se_params_of(arrays, se_paths(blocks)), meta


def save_se(path: Path, base: Any, r: float, params: Mapping[str, SEParameters], key: str,
            stage: str, extra: Mapping[str, str]) -> str:
    """Write an SE file of this run (``stage`` "blockwise" or "finetuned"); its sha256."""
    from ..engine.se_weights import save_se_weights

    return save_se_weights(path, params, base=base, reduction=r,
                           extra={"refit_key": key, "stage": stage, **extra})
