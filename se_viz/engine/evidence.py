"""Class evidence: which gates a class score depends on, and where its evidence lies.

One eager forward with the gate recorder keeping live tensors, then one backward
(`paddle.grad` of the target logits with respect to every gate and the chosen blocks'
outputs) give, for every attention block at once:

* ``gate_grad``: d logit[target] / d gate, (N, C) per block;
* ``cam``: Grad-CAM at the output of the network block that holds the attention block
  (for the ResNet-like networks after the residual add and its ReLU, where torch-cam and
  pytorch-grad-cam point for ``layer4[-1]``): ReLU(sum_c mean_hw(dy/dA_c) A_c);
* ``layercam``: LayerCAM at the same place: ReLU(sum_c ReLU(dy/dA_c) A_c).

Gradients need Paddle eager: the ONNX Runtime graph of the fast engine has none. The model
stays in eval mode (BatchNorm uses its running statistics, so images in a batch do not
interact and the gradient of the summed target logits is each image's own); the recorder's
hooks and the retained tensors live only for the call; the backward computes gradients for
those tensors alone (`paddle.grad`), so no parameter's ``.grad`` is touched and nothing
leaks into the next capture. Calls on one model are serialised by its lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import paddle

from ..images import PADDLECLAS_EVAL, Preprocessing
from ..maths import softmax
from ..results import DeletionCurve, Evidence, Intervention
from .capture import as_batch
from .hooks import (GateRecorder, capture_hooks, check_names, eval_mode, model_input,
                    model_lock)

ORDERS = ("attribution", "gate", "random")


def explain(model: Any, images: Any, target: int | Sequence[int] | None = None,
            blocks: Iterable[str] | None = None, *, batch_size: int = 8,
            preprocessing: Preprocessing | None = None,
            names: Iterable[str] | None = None) -> Evidence:
    """Class evidence of ``images`` for ``target``: one forward and one backward per batch.

    images: (N, 3, H, W) float32 already normalised, or PIL images (preprocessed as the
    model's weights expect). target: None -> each image's top-1 class; an int -> that class
    for every image; a sequence -> one class per image (ValueError naming the valid range
    for a class out of range or a wrong length). blocks: the blocks whose Grad-CAM and
    LayerCAM to compute (default every block); ``gate_grad`` always covers every block.
    Runs in Paddle eager (the fast graph has no gradients), about 2-3x an eager forward.
    """
    batch = as_batch(images, preprocessing or getattr(model, "preprocessing", PADDLECLAS_EVAL))
    n, classes = batch.shape[0], int(model.info.num_classes)
    names_all = [b.name for b in model.info.blocks]
    cam_blocks = check_names(names_all if blocks is None else blocks, names_all, "evidence")
    targets = _targets(target, n, classes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts = [_explain_batch(model, batch[i:i + batch_size],
                            None if targets is None else targets[i:i + batch_size], cam_blocks)
             for i in range(0, n, batch_size)]
    evidence = Evidence.concat(parts)
    return evidence.with_names(list(names)) if names is not None else evidence


def _targets(target: int | Sequence[int] | None, n: int, classes: int) -> np.ndarray | None:
    if target is None:
        return None
    if isinstance(target, (int, np.integer)):
        values = np.full(n, int(target), np.int64)
    else:
        values = np.asarray(list(target))
        if values.ndim != 1 or values.shape[0] != n or values.dtype.kind not in "iu":
            raise ValueError(f"target must be one class index per image ({n} integers), "
                             f"got {list(np.ravel(values))[:8]}")
        values = values.astype(np.int64)
    bad = values[(values < 0) | (values >= classes)]
    if bad.size:
        raise ValueError(f"target class {int(bad[0])} is out of range: this network has "
                         f"{classes} classes, 0 .. {classes - 1}")
    return values


def _explain_batch(model: Any, batch: np.ndarray, target: np.ndarray | None,
                   cam_blocks: tuple[str, ...]) -> Evidence:
    with model_lock(model), eval_mode(model), paddle.set_grad_enabled(True), \
            _weights_without_gradients(model):
        x = model_input(model, batch)
        x.stop_gradient = False  # the graph grows from the image, not from the weights
        with GateRecorder(model, tensors=True, block_outputs=cam_blocks) as rec:
            logits = model(x)
        if target is None:
            target = np.argmax(logits.numpy(), axis=1).astype(np.int64)
        picked = paddle.take_along_axis(logits, paddle.to_tensor(target[:, None]), axis=1)
        gates = [rec.gates[n][0] for n in rec.names]
        acts = [rec.block_out[n][0] for n in cam_blocks]
        grads = paddle.grad([picked.sum()], gates + acts, allow_unused=True)
        n = batch.shape[0]
        out = {"gates": {}, "gate_grad": {}, "cam": {}, "layercam": {}}
        for name, g, dg in zip(rec.names, gates, grads):
            out["gates"][name] = _flat(g.numpy(), n)
            out["gate_grad"][name] = _flat(dg.numpy(), n) if dg is not None else \
                np.zeros_like(out["gates"][name])
        for name, a, da in zip(cam_blocks, acts, grads[len(gates):]):
            da = paddle.zeros_like(a) if da is None else da
            cam = paddle.nn.functional.relu((da.mean(axis=[2, 3], keepdim=True) * a).sum(1))
            layer = paddle.nn.functional.relu((paddle.nn.functional.relu(da) * a).sum(1))
            out["cam"][name] = cam.numpy().astype(np.float32)
            out["layercam"][name] = layer.numpy().astype(np.float32)
        return Evidence(target=target, logits=logits.numpy().astype(np.float32), **out)


class _weights_without_gradients:  # noqa: N801 - used like a function in a ``with``
    """No weight gradient is computed during the call (the backward then skips every
    filter-gradient kernel: only activations' gradients are needed); restored after."""

    def __init__(self, model: Any) -> None:
        self.params = [(p, p.stop_gradient) for p in model.parameters()]

    def __enter__(self) -> None:
        for p, _ in self.params:
            p.stop_gradient = True

    def __exit__(self, *exc: object) -> None:
        for p, was in self.params:
            p.stop_gradient = was


def _flat(a: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(a.reshape(n, -1), dtype=np.float32)


def deletion(model: Any, image: Any, block_or_all: str, order: str = "attribution",
             target: int | None = None, *, steps: int = 20, seed: int = 0,
             preprocessing: Preprocessing | None = None, batch_size: int = 8
             ) -> DeletionCurve:
    """The target probability of one image as the gates of ``block_or_all`` (a block name,
    or "all": every block's gates ranked together) are set to 0, most important first by
    ``order``: "attribution" (gate x gradient, largest first), "gate" (largest first) or
    "random" (seeded by ``seed``). k = 0 .. C in ``steps`` steps, through the intervention
    path (eager hooks); the target is the image's top-1 unless given.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    batch = as_batch([image] if not isinstance(image, np.ndarray) else image,
                     preprocessing or getattr(model, "preprocessing", PADDLECLAS_EVAL))
    if batch.shape[0] != 1:
        raise ValueError(f"deletion runs one image at a time, got {batch.shape[0]}")
    names_all = [b.name for b in model.info.blocks]
    blocks = names_all if block_or_all == "all" else \
        list(check_names([block_or_all], names_all, "deletion"))
    ev = explain(model, batch, target, blocks=())
    rank = _ranking(ev, blocks, order, seed)
    ks = np.unique(np.round(np.linspace(0, rank.shape[0], steps + 1)).astype(int))
    overrides = _overrides(ev, blocks, rank, ks)
    probs = []
    for i in range(0, ks.shape[0], batch_size):
        chunk = {b: v[i:i + batch_size] for b, v in overrides.items()}
        cap = capture_hooks(model, np.repeat(batch, len(next(iter(chunk.values()))), axis=0),
                            intervention=Intervention(gates=chunk))
        probs.append(softmax(cap.logits, axis=1)[:, int(ev.target[0])])
    prob = np.concatenate(probs).astype(np.float32)
    fraction = ks / rank.shape[0]
    area = float(np.sum((prob[1:] + prob[:-1]) * np.diff(fraction)) / 2)
    return DeletionCurve(block=block_or_all, order=order, target=int(ev.target[0]), k=ks,
                         fraction=fraction, prob=prob, area=area)


def _ranking(ev: Evidence, blocks: list[str], order: str, seed: int) -> np.ndarray:
    """(block index, channel) pairs, (M, 2), most important first."""
    pairs = np.array([(i, c) for i, b in enumerate(blocks)
                      for c in range(ev.gates[b].shape[1])], np.int64)
    if order == "random":
        return pairs[np.random.default_rng(seed).permutation(pairs.shape[0])]
    score = np.concatenate([(ev.attribution(b) if order == "attribution" else ev.gates[b])[0]
                            for b in blocks])
    return pairs[np.argsort(-score, kind="stable")]


def _overrides(ev: Evidence, blocks: list[str], rank: np.ndarray, ks: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Per block an (S, C) gate array: the image's own gates with the first k[s] ranked
    gates set to 0 (blocks none of whose gates are removed keep their own values)."""
    out = {}
    for i, b in enumerate(blocks):
        gates = ev.gates[b][0]
        place = np.empty(gates.shape[0], np.int64)  # each channel's place in the ranking
        mine = np.flatnonzero(rank[:, 0] == i)
        place[rank[mine, 1]] = mine
        removed = ks[:, None] > place[None, :]      # (S, C): removed at step s
        out[b] = np.where(removed, np.float32(0.0), gates[None, :]).astype(np.float32)
    return out
