"""``se-viz refit --finetune``: train every SE parameter end to end, backbone frozen,
distilling the base network's predictions (KL), on one or several processes.

Each step takes one global batch of images (the caller gives this process its share, the
teacher's logits for them and the size of the global batch). The loss of an image is
KL(softmax(teacher) || softmax(student)); this process sums it over its share (in
micro-batches, gradients accumulated), divides by the global batch size, and the gradient
sums of all processes are added with ``paddle.distributed.all_reduce`` (SUM; ReduceOp.AVG
fails on CPU), so every process holds the gradient of the global batch's mean loss, the
same as one process would (up to float32 summation order). The update is Adam in float64
numpy, identical on every process. Under ``python -m paddle.distributed.launch`` the
launcher's environment says rank and world size (gloo on CPU); a single process never
touches paddle.distributed.

The network stays in eval mode (BatchNorm uses its running statistics); only the SE
blocks' parameters get gradients, and every parameter's ``stop_gradient`` is restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from ..maths import kl_divergence, log_softmax
from .hooks import eval_mode, model_lock
from .model import attention_layers

MICRO_BATCH = 8  # images per forward/backward (bounds the memory of the activations)


@dataclass(frozen=True)
class Step:
    """One optimiser step as this process sees it: its share of the global batch
    (images (n, 3, H, W) float32, n may be 0), the teacher's logits for them (n, K) and
    the number of images in the whole global batch (all processes)."""

    images: np.ndarray
    teacher: np.ndarray
    global_count: int


@dataclass(frozen=True)
class DistillSettings:
    lr: float = 1e-4
    world: int = 1


def se_parameters_of(model: nn.Layer) -> list[tuple[str, paddle.Tensor]]:
    """(key, parameter) of every SE layer's weight and bias, blocks in forward order."""
    out = []
    for b, se in attention_layers(model):
        if not b.reducible:
            continue
        for name, layer in (("squeeze", se.reduce), ("excitation", se.expand)):
            for kind in ("weight", "bias"):
                out.append((f"{b.path}.{name}.{kind}", getattr(layer, kind)))
    return out


def init_distributed(world: int) -> None:
    """Join the launcher's process group once (gloo on a CPU-only Paddle); nothing for a
    single process."""
    if world > 1 and not paddle.distributed.is_initialized():
        if not paddle.is_compiled_with_cuda():
            paddle.set_device("cpu")
        paddle.distributed.init_parallel_env()


@contextmanager
def _only_se_trainable(model: nn.Layer, params: list[paddle.Tensor]) -> Iterator[None]:
    mine = {id(p) for p in params}
    saved = [(p, p.stop_gradient) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.stop_gradient = id(p) not in mine
        yield
    finally:
        for p, flag in saved:
            p.stop_gradient = flag
            p.clear_gradient()


def _local_gradient(model: nn.Layer, params: list[paddle.Tensor], step: Step) -> np.ndarray:
    """[gradient sums of this share / global count ..., loss sum / global count] flat."""
    loss_total = 0.0
    n = step.images.shape[0]
    for lo in range(0, n, MICRO_BATCH):
        x = paddle.to_tensor(np.ascontiguousarray(step.images[lo:lo + MICRO_BATCH]))
        teacher = step.teacher[lo:lo + MICRO_BATCH]
        log_pt = log_softmax(teacher, axis=1)
        pt = paddle.to_tensor(np.exp(log_pt).astype(np.float32))
        logits = model(x)
        kl = (pt * (paddle.to_tensor(log_pt.astype(np.float32))
                    - F.log_softmax(logits, axis=1))).sum()
        (kl / float(step.global_count)).backward()
        loss_total += float(kl_divergence(teacher, logits.numpy()).sum())  # in float64
    grads = [p.grad.numpy().reshape(-1) if p.grad is not None else
             np.zeros(int(np.prod(p.shape)), np.float32) for p in params]
    for p in params:
        p.clear_gradient()
    return np.concatenate(grads + [np.array([loss_total / step.global_count])]
                          ).astype(np.float64)


def _all_reduce(flat: np.ndarray, world: int) -> np.ndarray:
    if world < 2:
        return flat
    t = paddle.to_tensor(flat)  # float64: the reduction adds no rounding of its own
    paddle.distributed.all_reduce(t, op=paddle.distributed.ReduceOp.SUM)
    return t.numpy()


def distill(model: nn.Layer, steps: Iterable[Step], settings: DistillSettings = DistillSettings(),
            on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model``'s SE parameters in place over ``steps`` (Adam, float64 state; every
    process must be given the same number of steps); returns the global mean loss of each
    step (before its update). ``on_step(images of this share, loss)`` after each step."""
    init_distributed(settings.world)
    keyed = se_parameters_of(model)
    params = [p for _, p in keyed]
    sizes = [int(np.prod(p.shape)) for p in params]
    theta = np.concatenate([p.numpy().astype(np.float64).reshape(-1) for p in params])
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    losses: list[float] = []
    with model_lock(model), eval_mode(model), _only_se_trainable(model, params):
        for t, step in enumerate(steps, 1):
            flat = _all_reduce(_local_gradient(model, params, step), settings.world)
            grad, loss = flat[:-1], float(flat[-1])
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            theta -= settings.lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
            _set(params, sizes, theta)
            losses.append(loss)
            if on_step is not None:
                on_step(int(step.images.shape[0]), loss)
    model.eval()
    return losses


def _set(params: list[paddle.Tensor], sizes: list[int], theta: np.ndarray) -> None:
    edges = np.cumsum([0] + sizes)
    for p, lo, hi in zip(params, edges, edges[1:]):
        p.set_value(theta[lo:hi].reshape(p.shape).astype(np.float32))
