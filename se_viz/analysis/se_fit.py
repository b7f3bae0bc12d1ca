"""Fitting an SE block's MLP at another reduction ratio r to the base network's gates
(numpy only): the maths of `se-viz refit` (`se_viz.refit`).

A block's SE MLP maps the squeeze vector z (C,) to the gates s = gate(W2 act(W1 z + b1) +
b2) (C,) in [0, 1] (`se_viz.analysis.excitation`; the gate and act are the block's own:
`se_viz.blocks.AttentionBlock`). Given the pairs (z, s) a trained network produces,
`fit_block` fits an MLP of hidden width h = int(C / r) that reproduces s from z:

* loss, by gate: for a sigmoid gate the binary cross-entropy with the soft targets s,
  averaged over images and channels, reported as the KL divergence (the BCE minus the
  targets' own entropy: 0 at a perfect fit; its gradient on the gate's input is s_hat - s);
  for any other gate (hard sigmoid, whose saturated ends make the BCE and its sigmoid
  gradient wrong) the mean squared gate error, its gradient through ``gate.derivative``;
* initialised from the base block: for a narrower bottleneck the h most important hidden
  units (`se_viz.analysis.reduction.hidden_unit_importance` on the training z), in their
  original order; for a wider one every base unit plus fresh ones whose outgoing weights
  are zero, so the fit starts equal to the base block;
* optimiser: full-batch Adam, a cosine learning-rate decay over a fixed number of steps,
  keeping the iterate with the lowest training loss; the steps run in float32
  (``FitSettings.dtype``: about a third of float64's time, the same held-out gate error on
  SE-ResNet-50, BENCHMARKS.md), the start and the kept iterate are scored in float64, and
  the start is kept unless the kept iterate beats it there (never worse than the start).
  Deterministic: the only randomness is the fresh units' seeded initialisation.

Only SE blocks with a bottleneck have an r (`AttentionBlock.reducible`); ECA blocks have no
hidden layer and are left out (`not_reducible` says why). Evaluation figures:
`gate_errors` (a block given the base network's own input) and `end_to_end` (every block
replaced, against the base network's predictions and gates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..arch import hidden_width
from ..blocks import SIGMOID, AttentionBlock, Gate
from ..maths import kl_divergence
from ..results import SEParameters
from .excitation import activation, f64, mlp, se_forward
from .reduction import hidden_unit_importance

WARMUP = 25  # steps of linear learning-rate warm-up (Adam's first steps are large)
EXACT_KL = 1e-12  # a start this close to the targets is already the fit (float32 noise)


@dataclass(frozen=True)
class FitSettings:
    """How `fit_block` optimises (everything that changes its result)."""

    steps: int = 400
    lr: float = 3e-3
    seed: int = 0
    dtype: str = "float32"  # of the Adam steps; start and kept iterate are scored in float64


@dataclass(frozen=True)
class BlockFit:
    """One fitted block: params float32 (Linear form), the training loss at the start and at
    the kept iterate, the number of Adam steps run, and which loss: "kl" (sigmoid gates) or
    "mse" (mean squared gate error, any other gate)."""

    params: SEParameters
    start_loss: float
    loss: float
    steps: int
    objective: str = "kl"

    @property
    def start_kl(self) -> float:
        """The start's training loss (the KL for sigmoid gates; see ``objective``)."""
        return self.start_loss

    @property
    def kl(self) -> float:
        """The kept iterate's training loss (the KL for sigmoid gates; see ``objective``)."""
        return self.loss


def se_gates(p: SEParameters, squeeze: np.ndarray, gate: Gate = SIGMOID, act: str = "relu"
             ) -> np.ndarray:
    """(N, C) float64 gates of the SE MLP ``p`` for squeeze values (N, C)."""
    return se_forward(p, squeeze, gate, act)


def _entropy(s: np.ndarray) -> np.ndarray:
    """(N, C) float64 binary entropy of targets in [0, 1] (0 log 0 = 0)."""
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(np.where(s > 0, s * np.log(s), 0.0) + np.where(s < 1, (1 - s) * np.log1p(-s), 0.0))


def init_params(base: SEParameters, hidden: int, squeeze: np.ndarray, seed: int = 0,
                block: int = 0, act: str = "relu") -> SEParameters:
    """Start of a fit at ``hidden`` units from the ``base`` block (float64).

    hidden <= base width: the ``hidden`` most important base units on ``squeeze`` (N, C)
    (ties keep unit order), kept in their original order. hidden > base width: every base
    unit, then fresh units with W1 and b1 drawn uniform(+-1/sqrt(C)) from
    ``default_rng([seed, block, hidden])`` and zero outgoing weights W2.
    """
    w1, b1, w2, b2 = f64(base)
    channels, h0 = w1.shape
    if hidden < 1:
        raise ValueError(f"hidden width must be >= 1, got {hidden}")
    if hidden <= h0:
        order = np.argsort(-hidden_unit_importance(base, squeeze, act), kind="stable")[:hidden]
        keep = np.sort(order)
        return SEParameters(w1[:, keep].copy(), b1[keep].copy(), w2[keep].copy(), b2.copy())
    rng = np.random.default_rng([int(seed), int(block), int(hidden)])
    bound = 1.0 / np.sqrt(channels)
    extra = hidden - h0
    return SEParameters(np.concatenate([w1, rng.uniform(-bound, bound, (channels, extra))], 1),
                        np.concatenate([b1, rng.uniform(-bound, bound, extra)]),
                        np.concatenate([w2, np.zeros((extra, channels))], 0), b2.copy())


@dataclass(frozen=True)
class _Pairs:
    """Training pairs in one dtype: z and s (N, C), the targets' own entropy ``hs`` (N, C)
    (sigmoid gates; 0 otherwise)."""

    z: np.ndarray
    s: np.ndarray
    hs: np.ndarray | float


def _pairs(z: np.ndarray, s: np.ndarray, gate: Gate, dtype: type) -> _Pairs:
    hs = _entropy(s).astype(dtype) if gate.kind == "sigmoid" else 0.0
    return _Pairs(z.astype(dtype), s.astype(dtype), hs)


def _kl_loss(x: np.ndarray, s: np.ndarray, hs: np.ndarray, gate: Gate
             ) -> tuple[float, np.ndarray]:
    """Sigmoid gates: the mean KL and its gradient on the gate's input x, in x's dtype.

    Per element the BCE of logit x with soft target s, softplus(x) - s x, minus the target's
    own entropy: the cancellation happens per element, so the sum (in float64) keeps the
    small KL even in float32. The gradient is sigmoid(x) - s. Elementwise work dominates a
    step after float32 matrix products: few passes, in place, no np.where."""
    ax = np.abs(x)
    e = np.negative(ax)
    np.exp(e, out=e)  # exp(-|x|) <= 1: softplus without overflow
    k = np.log1p(e)
    k += np.maximum(x, 0.0, out=ax)
    k -= np.multiply(s, x, out=e)
    k -= hs
    loss = float(k.sum(dtype=np.float64)) / s.size
    gl = np.multiply(x, 0.5, out=k)
    np.tanh(gl, out=gl)  # sigmoid(x) = (1 + tanh(x / 2)) / 2, as the gate computes it
    gl *= 0.5
    gl += 0.5
    gl -= s
    gl *= 1.0 / s.size
    return loss, gl


def _mse_loss(x: np.ndarray, s: np.ndarray, hs: float, gate: Gate
              ) -> tuple[float, np.ndarray]:
    """Any gate: the mean squared gate error and its gradient on x (through gate'), in x's
    dtype."""
    d = gate(x).astype(x.dtype, copy=False) - s
    grad = (2.0 / s.size) * d * gate.derivative(x).astype(x.dtype, copy=False)
    return float(np.vdot(d, d)) / s.size, grad


def _loss_and_grads(theta: list[np.ndarray], data: _Pairs, gate: Gate = SIGMOID,
                    act: str = "relu") -> tuple[float, list[np.ndarray]]:
    """Training loss (mean over N and C; module docstring) and its gradients for
    theta = [w1, b1, w2, b2], in theta's dtype."""
    a, h, x = mlp(theta, data.z, act)
    loss, gl = (_kl_loss if gate.kind == "sigmoid" else _mse_loss)(x, data.s, data.hs, gate)
    gh = gl @ theta[2].T
    gh *= activation(act)[1](a)
    return loss, [data.z.T @ gh, gh.sum(0), h.T @ gl, gl.sum(0)]


def _adam(theta: list[np.ndarray], data: _Pairs, settings: FitSettings, gate: Gate, act: str
          ) -> list[np.ndarray]:
    """``settings.steps`` full-batch Adam steps from theta (updated in place) with the
    warm-up and cosine decay; the iterate with the lowest training loss (copies)."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    best, grads = _loss_and_grads(theta, data, gate, act)
    best_theta = [t.copy() for t in theta]
    for step in range(1, settings.steps + 1):
        lr = settings.lr * min(1.0, step / WARMUP) * 0.5 * (
            1.0 + np.cos(np.pi * (step - 1) / settings.steps))
        c1, c2 = lr / (1 - beta1 ** step), 1.0 / (1 - beta2 ** step)
        for t, g, mi, vi in zip(theta, grads, m, v):
            mi *= beta1
            mi += (1 - beta1) * g
            vi *= beta2
            g *= g
            g *= 1 - beta2
            vi += g
            d = np.multiply(vi, c2, out=g)  # the gradient is spent: its buffer is reused
            np.sqrt(d, out=d)
            d += eps
            np.divide(mi, d, out=d)
            d *= c1
            t -= d
        loss, grads = _loss_and_grads(theta, data, gate, act)
        if loss < best:
            best = loss
            for b, t in zip(best_theta, theta):
                b[...] = t
    return best_theta


def fit_block(base: SEParameters, squeeze: np.ndarray, gates: np.ndarray, hidden: int,
              settings: FitSettings = FitSettings(), block: int = 0, *, gate: Gate = SIGMOID,
              act: str = "relu") -> BlockFit:
    """Fit an SE MLP of ``hidden`` units to reproduce ``gates`` (N, C) from ``squeeze``
    (N, C), starting from `init_params` (module docstring for the method). ``gate`` and
    ``act``: the block's own (``AttentionBlock.gate``, ``.act``)."""
    z = np.asarray(squeeze, dtype=np.float64)
    s = np.asarray(gates, dtype=np.float64)
    if z.ndim != 2 or z.shape != s.shape or z.shape[1] != np.shape(base.w1)[0]:
        raise ValueError(f"squeeze and gates must both be (N, {np.shape(base.w1)[0]}), "
                         f"got {z.shape} and {s.shape}")
    if z.shape[0] == 0:
        raise ValueError("no training images to fit on")
    if settings.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {settings.dtype!r}")
    p0 = init_params(base, hidden, z, settings.seed, block, act)
    exact = _pairs(z, s, gate, np.float64)
    start, _ = _loss_and_grads([p0.w1, p0.b1, p0.w2, p0.b2], exact, gate, act)
    best, loss, steps = [p0.w1, p0.b1, p0.w2, p0.b2], start, 0
    if start > EXACT_KL and settings.steps > 0:
        dtype = np.dtype(settings.dtype).type
        theta = [t.astype(dtype) for t in best]
        kept = _adam(theta, _pairs(z, s, gate, dtype), settings, gate, act)
        steps = settings.steps
        kept = [t.astype(np.float32).astype(np.float64) for t in kept]  # as returned
        loss, _ = _loss_and_grads(kept, exact, gate, act)  # scored in float64, as the start
        if loss < start:
            best = kept
        else:
            loss = start
    params = SEParameters(*(t.astype(np.float32) for t in best))
    return BlockFit(params, float(start), float(loss), steps,
                    "kl" if gate.kind == "sigmoid" else "mse")


def gate_errors(p: SEParameters, squeeze: np.ndarray, gates: np.ndarray,
                gate: Gate = SIGMOID, act: str = "relu") -> dict[str, float]:
    """{"rmse", "max"}: root-mean-square and largest |s_hat - s| over (N, C), when the block
    ``p`` (with its ``gate`` and ``act``) gets the base network's squeeze values and should
    give its gates."""
    d = se_gates(p, squeeze, gate, act) - np.asarray(gates, dtype=np.float64)
    return {"rmse": float(np.sqrt(np.mean(d * d))), "max": float(np.abs(d).max())}


def end_to_end(base_logits: np.ndarray, base_gates: Mapping[str, np.ndarray],
               logits: np.ndarray, gates: Mapping[str, np.ndarray]) -> dict:
    """Every block replaced, on the same images: {"n_images", "top1_agreement" (share of
    images whose top-1 class equals the base network's), "mean_kl" (mean KL of the base
    predictions to these, nats), "gate_mad": block -> mean |gate - base gate| over (N, C)}."""
    base_logits, logits = np.asarray(base_logits), np.asarray(logits)
    if base_logits.shape != logits.shape or base_logits.shape[0] == 0:
        raise ValueError(f"logits must have the same non-empty shape, got {base_logits.shape} "
                         f"and {logits.shape}")
    agree = base_logits.argmax(axis=1) == logits.argmax(axis=1)
    mad = {b: float(np.abs(np.asarray(gates[b], np.float64) - np.asarray(g, np.float64)).mean())
           for b, g in base_gates.items()}
    return {"n_images": int(base_logits.shape[0]), "top1_agreement": float(agree.mean()),
            "mean_kl": float(kl_divergence(base_logits, logits).mean()), "gate_mad": mad}


def holdout_split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) sorted int64 indices of 0..n-1: a seeded permutation's first
    round(fraction * n) entries (at least 1, at most n - 1) are held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be between 0 and 1 (exclusive), "
                         f"got {fraction}")
    if n < 2:
        raise ValueError(f"a train/held-out split needs at least 2 images, got {n}")
    held = min(n - 1, max(1, int(round(fraction * n))))
    perm = np.random.default_rng([int(seed), n]).permutation(n)
    return np.sort(perm[held:]).astype(np.int64), np.sort(perm[:held]).astype(np.int64)


def not_reducible(blocks: Sequence[AttentionBlock]) -> dict[str, str]:
    """Block name -> why no reduction ratio applies to it (ECA: no bottleneck); the blocks
    a refit leaves out."""
    return {b.name: (f"{b.kind.upper()} block ({b.width_rule or 'no hidden layer'}): no "
                     "bottleneck, so r does not apply") for b in blocks if not b.reducible}


def hidden_widths(blocks: Sequence[AttentionBlock], reduction: float | None = None
                  ) -> dict[str, int]:
    """Block name -> hidden width of every reducible block: int(C / r) (at least 1) for a
    given r, the block's own width (its native r) for None. ECA blocks are left out
    (`not_reducible`)."""
    return {b.name: b.hidden if reduction is None else hidden_width(b.channels, reduction)
            for b in blocks if b.reducible}


def uses_ratio(blocks: Sequence[AttentionBlock], reduction: float) -> bool:
    """Whether the network's SE widths follow one ratio: every reducible block's hidden
    width is int(C / r) (SE-ResNets; not the widths EfficientNet or RegNet derive from a
    block's input), so a network "at another r" means the same rule with another r."""
    return bool(hidden_widths(blocks)) and hidden_widths(blocks) == hidden_widths(blocks,
                                                                                  reduction)


def se_parameter_count(blocks: Sequence[AttentionBlock], reduction: float | None = None
                       ) -> int:
    """Parameters of the reducible SE blocks at ratio r (their own widths for None): per
    block 2 C h + h + C."""
    chans = {b.name: b.channels for b in blocks}
    return int(sum(2 * chans[n] * h + h + chans[n]
                   for n, h in hidden_widths(blocks, reduction).items()))


def summary_rows(fits: Mapping[str, Mapping]) -> list[dict]:
    """One row per r (sorted) of refit.json's "fits": r, SE params, mean and worst block
    RMSE, worst max error, top-1 agreement, mean KL."""
    rows = []
    for key in sorted(fits, key=float):
        f = fits[key]
        rmse = [b["rmse"] for b in f["blocks"].values()]
        e2e = f["end_to_end"]
        rows.append({"r": float(key), "se_params": f["se_params"],
                     "mean_rmse": float(np.mean(rmse)), "worst_rmse": float(np.max(rmse)),
                     "worst_max": float(max(b["max"] for b in f["blocks"].values())),
                     "top1_agreement": e2e["top1_agreement"], "mean_kl": e2e["mean_kl"]})
    return rows


def ratio_key(r: float) -> str:
    """How r is written in file names and refit.json keys: ``f"{r:g}"`` (8, 2.5)."""
    return f"{float(r):g}"
