"""The gate recorder: the one place in se_viz that registers hooks.

One forward pass records, for every SE block, the squeeze values (N, C), the gates (N, C)
and, for the blocks asked for, the feature maps before and after reweighting. The same
recorder serves both engines:

* eager (the reference): each hook copies its output to numpy into storage owned by this
  one call; interventions replace a gate or mask hidden units for this call only;
* symbolic: while ``paddle.jit.to_static`` traces the forward (`se_viz.engine.traced`), the
  hooks keep the traced tensors, which the traced program then returns as extra outputs.

Hooks live only inside the recorder's ``with`` block and are removed in ``finally``, also
when the forward raises; exceptions are never swallowed. Calls on one shared model are
serialised with a per-model lock; the model is put in eval mode under ``no_grad`` and its
previous mode restored.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
import paddle
from paddle import nn

from ..results import Capture, FeatureMaps, Intervention
from .model import se_blocks

# The traced graph's outputs, by role, in this order: these three, then for each feature
# block (forward order) its maps before and after SE (`map_output`). The recorder returns
# them (`GateRecorder.outputs`); the graph runner (`traced.FastGraph`) reads them by role.
GRAPH_OUTPUTS = ("logits", "gates", "squeeze")
MAP_SIDES = ("before", "after")


def map_output(side: str, block: str) -> str:
    """The role of a feature block's maps ``side`` ("before" or "after" SE): "before:SE_2_1"."""
    return f"{side}:{block}"


def graph_outputs(feature_blocks: Iterable[str] = ()) -> tuple[str, ...]:
    """Every output role of a graph traced with ``feature_blocks``, in output order."""
    return GRAPH_OUTPUTS + tuple(map_output(side, name) for name in feature_blocks
                                 for side in MAP_SIDES)


_LOCKS: "weakref.WeakKeyDictionary[nn.Layer, threading.Lock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Layer) -> threading.Lock:
    """The lock that serialises runs of ``model`` (one per model object)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


def plain(hook: Any) -> Any:
    """A hook that runs as plain Python while ``paddle.jit.to_static`` traces (it only
    stores what it is handed), so the tracer does not rewrite it on every trace."""
    return paddle.jit.not_to_static(hook)


def check_names(requested: Iterable[str], names: list[str], what: str) -> tuple[str, ...]:
    """``requested`` block names in forward order; ValueError naming the unknown ones."""
    requested = tuple(requested)
    unknown = [r for r in requested if r not in names]
    if unknown:
        raise ValueError(f"unknown block name(s) for {what}: {', '.join(unknown)}; "
                         f"use names like {names[0]} ... {names[-1]}")
    return tuple(n for n in names if n in requested)


class GateRecorder:
    """Context manager that hooks every SE block of ``model`` for the current thread.

    Inside the ``with`` block, forward passes made by this thread fill ``gates``,
    ``squeeze``, ``before`` and ``after`` (lists per block: numpy batches, or traced tensors
    when ``symbolic``) and, for the blocks in ``block_outputs``, ``block_out``: the output of
    the network block that holds the attention block. Read them with `result` (eager) or
    `outputs` (symbolic). ``tensors`` keeps the live tensors of an eager forward (for
    gradients: `se_viz.engine.evidence`) instead of numpy copies.
    """

    def __init__(self, model: nn.Layer, features: Iterable[str] = (),
                 intervention: Intervention | None = None, *, symbolic: bool = False,
                 tensors: bool = False, block_outputs: Iterable[str] = ()) -> None:
        self.model = model
        self.blocks = se_blocks(model)
        self.names = [name for name, _, _ in self.blocks]
        self.feature_blocks = check_names(features, self.names, "feature maps")
        self.output_blocks = check_names(block_outputs, self.names, "block outputs")
        self.block_out: dict[str, list] = {n: [] for n in self.output_blocks}
        self.tensors = tensors
        self.intervention = intervention or Intervention()
        check_names(self.intervention.gates, self.names, "gate override")
        check_names(self.intervention.hidden_masks, self.names, "hidden-unit mask")
        if symbolic and self.intervention:
            raise ValueError("interventions run eagerly; the traced graph has none")
        self.symbolic = symbolic
        self.gates: dict[str, list] = {n: [] for n in self.names}
        self.squeeze: dict[str, list] = {n: [] for n in self.names}
        self.before: dict[str, list] = {n: [] for n in self.feature_blocks}
        self.after: dict[str, list] = {n: [] for n in self.feature_blocks}
        self._handles: list[Any] = []
        self._thread = threading.get_ident()

    def __enter__(self) -> "GateRecorder":
        try:
            for name, _, se in self.blocks:
                self._hook_block(name, se)
            if self.output_blocks:
                subs = dict(self.model.named_sublayers())
                for b in self.model.info.blocks:
                    if b.name in self.block_out:
                        self._handles.append(subs[b.block_path].register_forward_post_hook(
                            plain(self._store(self.block_out[b.name]))))
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

    def _keep(self, tensor: paddle.Tensor) -> Any:
        """What a hook stores: the traced (or live) tensor itself, or a numpy copy owned by
        this call."""
        return tensor if self.symbolic or self.tensors else np.array(tensor.numpy(), copy=True)

    def _hook_block(self, name: str, se: nn.Layer) -> None:
        def add(handle: Any) -> None:
            self._handles.append(handle)
        add(se.pool.register_forward_post_hook(plain(self._store(self.squeeze[name]))))
        add(se.gate.register_forward_post_hook(plain(self._gate_hook(name))))
        if name in self.intervention.hidden_masks:
            if se.hidden is None:
                raise ValueError(f"{name} is an ECA block: it has no hidden units to mask")
            add(se.act.register_forward_post_hook(plain(self._mask_hook(name, se.hidden))))
        if name in self.feature_blocks:
            add(se.register_forward_pre_hook(plain(self._store_input(self.before[name]))))
            add(se.register_forward_post_hook(plain(self._store(self.after[name]))))

    def _store(self, store: list):
        def hook(layer: nn.Layer, inputs: Any, output: paddle.Tensor) -> None:
            if self._mine():
                store.append(self._keep(output))
        return hook

    def _store_input(self, store: list):
        def hook(layer: nn.Layer, inputs: Any) -> None:
            if self._mine():
                store.append(self._keep(inputs[0]))
        return hook

    def _gate_hook(self, name: str):
        override = self.intervention.gates.get(name)
        store = self.gates[name]

        def hook(layer: nn.Layer, inputs: Any, output: paddle.Tensor) -> paddle.Tensor | None:
            if not self._mine():
                return None
            if override is None:
                store.append(self._keep(output))
                return None
            forced = gate_values(override, list(output.shape))
            store.append(forced)
            return paddle.to_tensor(forced).astype(output.dtype)  # for this call only
        return hook

    def _mask_hook(self, name: str, hidden: int):
        mask = np.asarray(self.intervention.hidden_masks[name], np.float32).reshape(-1)
        if mask.shape != (hidden,):
            raise ValueError(f"hidden-unit mask for {name} must have {hidden} entries, "
                             f"got {mask.shape[0]}")

        def hook(layer: nn.Layer, inputs: Any, output: paddle.Tensor) -> paddle.Tensor | None:
            if not self._mine():
                return None
            shape = [1, hidden] + [1] * (len(output.shape) - 2)
            return output * paddle.to_tensor(mask.reshape(shape)).astype(output.dtype)
        return hook

    def result(self, logits: np.ndarray) -> Capture:
        """Eager: assemble a `Capture` from what the hooks stored."""
        def cat(parts: list) -> np.ndarray:
            a = np.concatenate(parts)
            return np.ascontiguousarray(a.reshape(a.shape[0], -1), dtype=np.float32)
        return Capture(
            logits=np.ascontiguousarray(logits, dtype=np.float32),
            gates={n: cat(v) for n, v in self.gates.items()},
            squeeze={n: cat(v) for n, v in self.squeeze.items()},
            features={n: FeatureMaps(np.concatenate(self.before[n]),
                                     np.concatenate(self.after[n]))
                      for n in self.feature_blocks},
        )

    @paddle.jit.not_to_static
    def outputs(self, logits: paddle.Tensor) -> list[paddle.Tensor]:
        """Symbolic: the tensors of `graph_outputs` (feature blocks of this recorder), in
        its order: logits, gates (N, sum of C), squeeze (N, sum of C), then each feature
        block's maps before and after SE (N, C, H', W'); blocks in forward order."""
        def flat(parts: dict[str, list]) -> paddle.Tensor:
            return paddle.concat([parts[n][0].reshape([0, -1]) for n in self.names], axis=1)
        value = {"logits": logits, "gates": flat(self.gates), "squeeze": flat(self.squeeze)}
        for name in self.feature_blocks:
            value[map_output("before", name)] = self.before[name][0]
            value[map_output("after", name)] = self.after[name][0]
        return [value[role] for role in graph_outputs(self.feature_blocks)]


def gate_values(override: float | np.ndarray, shape: list[int]) -> np.ndarray:
    """An intervention's gates in a gate layer's own ``shape`` ((N, C) Linear SE, (N, C, 1, 1)
    conv SE, (N, 1, C) ECA: N * C values in the same order): a constant, a (C,) array for
    every image, or an (N, C) array, one row per image."""
    n, c = shape[0], int(np.prod(shape[1:]))
    value = np.asarray(override)  # float64 stays float64 (a float64 model's exact gates)
    value = value.astype(np.float64 if value.dtype == np.float64 else np.float32)
    if value.ndim == 0:
        return np.full(shape, value, value.dtype)
    if value.shape not in ((c,), (n, c)):
        raise ValueError(f"gate override has shape {list(value.shape)}; this block needs "
                         f"({c},) or ({n}, {c}) values")
    return np.ascontiguousarray(np.broadcast_to(value.reshape(-1, c), (n, c)).reshape(shape))


def capture_hooks(model: nn.Layer, batch: np.ndarray, features: Iterable[str] = (),
                  intervention: Intervention | None = None) -> Capture:
    """Reference capture of one (N, 3, H, W) float32 batch with forward hooks."""
    with model_lock(model), eval_mode(model):
        with paddle.no_grad(), GateRecorder(model, features, intervention) as rec:
            logits = model(model_input(model, batch)).numpy()
        return rec.result(logits)


def model_input(model: nn.Layer, batch: np.ndarray) -> paddle.Tensor:
    """``batch`` as a tensor of the model's own float type (a model cast to float64 runs on
    float64 images)."""
    x = paddle.to_tensor(batch)
    param = next(iter(model.parameters()), None)
    return x if param is None or param.dtype == x.dtype else x.astype(param.dtype)


class eval_mode:  # noqa: N801 - used like a function: ``with eval_mode(model):``
    """Put ``model`` in eval mode for the block and restore its previous mode after."""

    def __init__(self, model: nn.Layer) -> None:
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> nn.Layer:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train()


class ShapeRecorder:
    """Context manager recording, for every Conv2D and Linear of ``model``, its weight's
    size and how many output positions it computed (H' * W' for a conv, the rows per
    image for a linear) during one forward pass; for counting multiply-adds."""

    def __init__(self, model: nn.Layer) -> None:
        self.layers = [(path, layer) for path, layer in model.named_sublayers()
                       if isinstance(layer, (nn.Conv2D, nn.Linear))]
        self.positions: dict[str, int] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "ShapeRecorder":
        try:
            for path, layer in self.layers:
                self._handles.append(layer.register_forward_post_hook(self._hook(path)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def _hook(self, path: str):
        def hook(layer: nn.Layer, inputs: Any, output: paddle.Tensor) -> None:
            shape = list(output.shape)
            per_image = int(np.prod(shape[2:])) if isinstance(layer, nn.Conv2D) else \
                int(np.prod(shape[1:-1]))
            self.positions[path] = per_image
        return hook
