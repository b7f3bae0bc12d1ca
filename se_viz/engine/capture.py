"""`capture`: run images through a model once and record every SE block, on either engine.

engine "auto" (the default; ``$SE_VIZ_ENGINE`` may say "eager" or "fast") runs a capture
without an intervention through the traced graph (`se_viz.engine.traced`, feature maps
included) and everything else through the eager hooks (`se_viz.engine.hooks`, the
reference); "eager" always uses the hooks; "fast" insists on the graph. When no graph can
be made for a model (its forward cannot be traced or converted, or the result does not
match the hooks on a probe image), "auto" uses the hooks and logs why once per model state.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..images import PADDLECLAS_EVAL, Preprocessing, to_batch
from ..results import Capture, Intervention
from . import traced
from .hooks import capture_hooks

ENGINES = ("auto", "eager", "fast")


def as_batch(images: Any, preprocessing: Preprocessing = PADDLECLAS_EVAL) -> np.ndarray:
    """(N, 3, H, W) float32 from an array already normalised or a list of PIL images."""
    if isinstance(images, np.ndarray):
        arr = images
    elif isinstance(images, (list, tuple)) and images and all(hasattr(i, "mode") for i in images):
        arr = to_batch(images, preprocessing)
    else:
        raise TypeError("images must be an (N, 3, H, W) float32 array or a non-empty list "
                        "of PIL images")
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"images must have shape (N, 3, H, W) with N >= 1, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def chosen_engine(engine: str = "auto") -> str:
    """``engine`` with "auto" resolved through ``$SE_VIZ_ENGINE`` (still "auto" if unset)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        engine = os.environ.get("SE_VIZ_ENGINE", "").strip().lower() or "auto"
        if engine not in ENGINES:
            raise ValueError(f"SE_VIZ_ENGINE must be one of {', '.join(ENGINES)}, "
                             f"got {engine!r}; unset it or use SE_VIZ_ENGINE=eager")
    return engine


def use_fast(model: object, engine: str = "auto", needs_hooks: bool = False) -> bool:
    """Whether `capture` takes the traced graph (ValueError for an impossible "fast")."""
    engine = chosen_engine(engine)
    if engine == "eager":
        return False
    if engine == "fast" and needs_hooks:
        raise ValueError("engine='fast' cannot apply interventions; use engine='auto' or "
                         "'eager' for them")
    ok = not needs_hooks and (traced.bound(model) or
                              (traced.available() and traced.supports(model)))
    if engine == "fast" and not ok:
        raise ValueError("engine='fast' needs paddle2onnx and onnxruntime installed and an "
                         "se_viz network with float32 CPU weights; use engine='eager'")
    return ok


def prepare(model: object, maps: bool = True, engine: str = "auto"):
    """Make ``model``'s fast graph now (at start-up, behind a spinner) so that the first
    capture does not wait for it; its `traced.GraphInfo`, or None when captures of it
    would not use the graph."""
    if not use_fast(model, engine):
        return None
    return traced.graph_for(model, maps)[1]


def capture(model: Any, images: Any, *, features: Iterable[str] = (),
            intervention: Intervention | None = None, batch_size: int = 16,
            preprocessing: Preprocessing | None = None, engine: str = "auto",
            names: Iterable[str] | None = None) -> Capture:
    """Run ``images`` through ``model`` once and capture every SE block.

    images: (N, 3, H, W) float32 already normalised, or a list of PIL images (then
    preprocessed as the model's weights expect unless ``preprocessing`` says otherwise).
    features: block names whose maps before/after reweighting to keep.
    engine: "auto", "eager" or "fast" (module docstring). names: display names of the
    images (kept in the Capture). Batches of ``batch_size`` are run and joined.
    """
    batch = as_batch(images, preprocessing or getattr(model, "preprocessing", PADDLECLAS_EVAL))
    features = tuple(features)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cap = None
    if use_fast(model, engine, needs_hooks=bool(intervention)):
        try:
            cap = traced.capture_fast(model, batch, batch_size, features)
        except traced.GraphError as exc:  # graph_for logged why, once per model state
            if chosen_engine(engine) == "fast":
                raise ValueError(f"engine='fast': {exc}") from exc
    if cap is None:
        cap = Capture.concat([capture_hooks(model, batch[i:i + batch_size], features,
                                            intervention)
                              for i in range(0, batch.shape[0], batch_size)])
    return cap.with_names(list(names)) if names is not None else cap
