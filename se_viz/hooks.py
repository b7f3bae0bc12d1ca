"""Capture SE gates with forward hooks: the only module in se_viz that touches hooks.

(Named ``hooks`` rather than ``capture`` so that ``se_viz.capture`` is the function.)

One forward pass records, for every SE block, the squeeze values (N, C), the gates
(N, C) and, for the blocks asked for, the feature maps before and after reweighting.
Hooks live only inside `GateRecorder`'s ``with`` block and are removed in ``finally``.
Calls on one shared model are serialised with a per-model lock; every call owns its
storage, so concurrent callers each get exactly their own results.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle
from paddle import nn

from .images import PADDLECLAS_EVAL, Preprocessing, to_batch
from .model import se_blocks

_LOCKS: "weakref.WeakKeyDictionary[nn.Layer, threading.Lock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Layer) -> threading.Lock:
    """The lock that serialises captures on ``model`` (one per model object)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


@dataclass(frozen=True)
class FeatureMaps:
    """Feature maps of one block around its SE reweighting, float32 (N, C, H, W)."""

    before: np.ndarray
    after: np.ndarray


@dataclass(frozen=True)
class Intervention:
    """Edits applied during a capture (for "what if" views; never changes the model).

    ``gates``: block name -> a constant (e.g. 1.0 switches SE off) or a (C,) array that
    replaces the block's gates. ``hidden_masks``: block name -> (hidden,) 0/1 array that
    zeroes SE bottleneck units (emulates a smaller reduction ratio).
    """

    gates: Mapping[str, float | np.ndarray] = field(default_factory=dict)
    hidden_masks: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.gates) or bool(self.hidden_masks)


@dataclass(frozen=True)
class Capture:
    """Result of one capture. All arrays are numpy float32, first axis = image.

    logits (N, K); gates: block name -> (N, C) in [0, 1], forward order;
    squeeze: block name -> (N, C) channel means of the block input to SE;
    features: block name -> FeatureMaps, only for blocks asked for.
    """

    logits: np.ndarray
    gates: dict[str, np.ndarray]
    squeeze: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, FeatureMaps] = field(default_factory=dict)

    @property
    def block_names(self) -> list[str]:
        return list(self.gates)

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the logits, (N, K) float32."""
        z = self.logits - self.logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def top_k(self, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(indices (N, k) int64, probabilities (N, k)) sorted by probability, descending."""
        p = self.probabilities
        k = min(k, p.shape[1])
        idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(p, idx, axis=1)

    def select(self, index: int) -> "Capture":
        """The capture of image ``index`` alone (arrays keep a leading axis of 1)."""
        sl = slice(index, index + 1)
        return Capture(
            logits=self.logits[sl],
            gates={k: v[sl] for k, v in self.gates.items()},
            squeeze={k: v[sl] for k, v in self.squeeze.items()},
            features={k: FeatureMaps(v.before[sl], v.after[sl]) for k, v in self.features.items()},
        )

    @staticmethod
    def concat(parts: Sequence["Capture"]) -> "Capture":
        """Join captures of consecutive batches along the image axis."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        cat = np.concatenate
        return Capture(
            logits=cat([p.logits for p in parts]),
            gates={k: cat([p.gates[k] for p in parts]) for k in first.gates},
            squeeze={k: cat([p.squeeze[k] for p in parts]) for k in first.squeeze},
            features={k: FeatureMaps(cat([p.features[k].before for p in parts]),
                                     cat([p.features[k].after for p in parts]))
                      for k in first.features},
        )


class GateRecorder:
    """Context manager that hooks every SE block of ``model`` for the current thread.

    Inside the ``with`` block, forward passes made by this thread fill ``gates``,
    ``squeeze`` and ``features`` (lists of numpy batches per block). Hooks are removed on
    exit, also when the body raises; exceptions are never swallowed.
    """

    def __init__(self, model: nn.Layer, features: Iterable[str] = (),
                 intervention: Intervention | None = None) -> None:
        self.model = model
        self.blocks = se_blocks(model)
        names = [name for name, _, _ in self.blocks]
        self.feature_blocks = _check_names(features, names, "feature maps")
        self.intervention = intervention or Intervention()
        _check_names(self.intervention.gates, names, "gate override")
        _check_names(self.intervention.hidden_masks, names, "hidden-unit mask")
        self.gates: dict[str, list[np.ndarray]] = {n: [] for n in names}
        self.squeeze: dict[str, list[np.ndarray]] = {n: [] for n in names}
        self.before: dict[str, list[np.ndarray]] = {n: [] for n in self.feature_blocks}
        self.after: dict[str, list[np.ndarray]] = {n: [] for n in self.feature_blocks}
        self._handles: list[Any] = []
        self._thread = threading.get_ident()

    def __enter__(self) -> "GateRecorder":
        try:
            for name, _, se in self.blocks:
                self._hook_block(name, se)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this recorder added (idempotent)."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def _mine(self) -> bool:
        return threading.get_ident() == self._thread

    def _hook_block(self, name: str, se: nn.Layer) -> None:
        add = self._handles.append
        add(se.pool.register_forward_post_hook(self._record(self.squeeze[name], flat=True)))
        add(se.gate.register_forward_post_hook(self._gate_hook(name)))
        if name in self.intervention.hidden_masks:
            add(se.relu.register_forward_post_hook(self._mask_hook(name, se.hidden)))
        if name in self.feature_blocks:
            add(se.register_forward_pre_hook(self._record_input(self.before[name])))
            add(se.register_forward_post_hook(self._record(self.after[name])))

    def _record(self, store: list, flat: bool = False):
        def hook(layer: nn.Layer, inputs: Any, output: paddle.Tensor) -> None:
            if self._mine():
                arr = output.numpy()
                store.append(arr.reshape(arr.shape[0], -1) if flat else arr.copy())
        return hook

    def _record_input(self, store: list):
        def hook(layer: nn.Layer, inputs: Any) -> None:
            if self._mine():
                store.append(inputs[0].numpy().copy())
        return hook

    def _gate_hook(self, name: str):
        override = self.intervention.gates.get(name)
        store = self.gates[name]

        def hook(layer: nn.Layer, inputs: Any, output: paddle.Tensor) -> paddle.Tensor | None:
            if not self._mine():
                return None
            if override is None:
                store.append(output.numpy().copy())
                return None
            forced = np.broadcast_to(np.asarray(override, np.float32), output.shape).copy()
            store.append(forced)
            return paddle.to_tensor(forced)  # replaces the gate for this call only
        return hook

    def _mask_hook(self, name: str, hidden: int):
        mask = np.asarray(self.intervention.hidden_masks[name], np.float32).reshape(-1)
        if mask.shape != (hidden,):
            raise ValueError(f"hidden-unit mask for {name} must have {hidden} entries, "
                             f"got {mask.shape[0]}")
        mask_t = paddle.to_tensor(mask[None, :])

        def hook(layer: nn.Layer, inputs: Any, output: paddle.Tensor) -> paddle.Tensor | None:
            return output * mask_t if self._mine() else None
        return hook

    def result(self, logits: np.ndarray) -> Capture:
        """Assemble a `Capture` from what the hooks stored."""
        cat = np.concatenate
        return Capture(
            logits=np.ascontiguousarray(logits, dtype=np.float32),
            gates={n: cat(v).astype(np.float32, copy=False) for n, v in self.gates.items()},
            squeeze={n: cat(v).astype(np.float32, copy=False) for n, v in self.squeeze.items()},
            features={n: FeatureMaps(cat(self.before[n]), cat(self.after[n]))
                      for n in self.feature_blocks},
        )


def _check_names(requested: Iterable[str], names: list[str], what: str) -> tuple[str, ...]:
    requested = tuple(requested)
    unknown = [r for r in requested if r not in names]
    if unknown:
        raise ValueError(f"unknown block name(s) for {what}: {', '.join(unknown)}; "
                         f"use names like {names[0]} ... {names[-1]}")
    return tuple(n for n in names if n in requested)


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


def capture_hooks(model: nn.Layer, batch: np.ndarray, features: Iterable[str] = (),
                  intervention: Intervention | None = None) -> Capture:
    """Reference capture of one batch with forward hooks, serialised on ``model``.

    The model is put in eval mode under ``paddle.no_grad`` and its previous mode is
    restored afterwards.
    """
    with model_lock(model):
        was_training = model.training
        model.eval()
        try:
            with paddle.no_grad(), GateRecorder(model, features, intervention) as rec:
                logits = model(paddle.to_tensor(batch)).numpy()
            return rec.result(logits)
        finally:
            if was_training:
                model.train()


def capture(model: nn.Layer, images: Any, *, features: Iterable[str] = (),
            intervention: Intervention | None = None, batch_size: int = 16,
            preprocessing: Preprocessing | None = None, engine: str = "auto") -> Capture:
    """Run ``images`` through ``model`` once and capture every SE block.

    images: (N, 3, H, W) float32 already normalised, or a list of PIL images (then
    preprocessed as PaddleClas evaluates unless ``preprocessing`` says otherwise).
    features: block names whose maps before/after reweighting to keep.
    engine: "auto" (default; ``$SE_VIZ_ENGINE=eager`` opts out) runs captures without an
    intervention of an SEResNet through the fast ONNX Runtime graph of `se_viz.fast`
    (feature maps included), interventions and other models through the forward hooks
    here (the reference); "eager" always uses the hooks; "fast" insists on the fast graph.
    Returns a `Capture`; batches of ``batch_size`` are run and joined.
    """
    from . import fast  # imports this module: keep the import here

    batch = as_batch(images, preprocessing or getattr(model, "preprocessing", PADDLECLAS_EVAL))
    features = tuple(features)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if fast.use_fast(model, engine, needs_hooks=bool(intervention)):
        return fast.capture_fast(model, batch, batch_size, features)
    parts = [capture_hooks(model, batch[i:i + batch_size], features, intervention)
             for i in range(0, batch.shape[0], batch_size)]
    return Capture.concat(parts)
