"""What a network says about its attention blocks (paddle-free, like timm's ``feature_info``).

Every network se_viz builds carries ``model.info.blocks``: one `AttentionBlock` per
channel-attention block, in forward order, made where the network builds the block. Hooks,
the traced graph, costs, analysis, plots, the command line and the app read this list;
nothing outside a network's definition knows a block count, a name pattern or a width.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

GATE_KINDS = ("sigmoid", "hardsigmoid")
ATTENTION_KINDS = ("se", "eca")


@dataclass(frozen=True)
class Gate:
    """The excitation's last function: ``sigmoid``, or ``hardsigmoid`` =
    clip(slope * x + offset, 0, 1) (timm: relu6(x + 3) / 6, i.e. slope 1/6, offset 0.5;
    PaddleClas's MobileNetV3: slope 0.2, offset 0.5)."""

    kind: str = "sigmoid"
    slope: float = 1.0 / 6.0
    offset: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in GATE_KINDS:
            raise ValueError(f"unknown gate {self.kind!r}; use one of {', '.join(GATE_KINDS)}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The gate on numpy values (float64 in, float64 out)."""
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "sigmoid":
            return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic
        return np.clip(self.slope * x + self.offset, 0.0, 1.0)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        """d gate / dx at ``x`` (for fitting gates by gradient descent)."""
        if self.kind == "sigmoid":
            s = self(x)
            return s * (1.0 - s)
        x = np.asarray(x, dtype=np.float64)
        inside = (self.slope * x + self.offset > 0.0) & (self.slope * x + self.offset < 1.0)
        return np.where(inside, self.slope, 0.0)

    def inverse(self, s: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        """Pre-activations that give gates ``s`` (clipped into the open range)."""
        s = np.clip(np.asarray(s, dtype=np.float64), eps, 1.0 - eps)
        if self.kind == "sigmoid":
            return np.log(s) - np.log1p(-s)
        return (s - self.offset) / self.slope

    @property
    def label(self) -> str:
        if self.kind == "sigmoid":
            return "sigmoid"
        return f"hard sigmoid clip({self.slope:.4g}·x + {self.offset:g}, 0, 1)"


SIGMOID = Gate("sigmoid")
HARD_SIGMOID = Gate("hardsigmoid", 1.0 / 6.0, 0.5)


@dataclass(frozen=True)
class AttentionBlock:
    """One channel-attention block of a built network.

    name: stable display name, ``SE_{stage}_{block}`` (ECA blocks too: one naming scheme);
    path: module path of the attention layer (hooks, hover text, exports);
    block_path: module path of the network block that holds it (its output is where
    Grad-CAM looks); stage: the network's own stage number shown in the UI; index: the
    block's place in its stage (1-based, as in the name); channels: C, the number of gates;
    hidden: the excitation's bottleneck width (None where there is none, as ECA);
    gate: the gate function; kind: "se" or "eca"; width_rule: how ``hidden`` was derived
    (or the ECA kernel size), in words; act: the excitation's inner activation.
    """

    name: str
    path: str
    block_path: str
    stage: int
    index: int
    channels: int
    hidden: int | None
    gate: Gate = SIGMOID
    kind: str = "se"
    width_rule: str = ""
    act: str = "relu"

    @property
    def stage_label(self) -> str:
        return f"stage {self.stage}"

    @property
    def reducible(self) -> bool:
        """Whether a reduction ratio r applies (an SE bottleneck; not ECA)."""
        return self.kind == "se" and self.hidden is not None


def block_name(stage: int, index: int) -> str:
    """``SE_{stage}_{index}``: the paper's scheme (SENet's stages 2..5, blocks from 1)."""
    return f"SE_{stage}_{index}"


def names(blocks: Iterable[AttentionBlock]) -> list[str]:
    return [b.name for b in blocks]


def by_name(blocks: Sequence[AttentionBlock]) -> dict[str, AttentionBlock]:
    return {b.name: b for b in blocks}


def stages(blocks: Iterable[AttentionBlock]) -> dict[str, tuple[str, ...]]:
    """``"stage S"`` -> its block names, stages in forward order."""
    out: dict[str, list[str]] = {}
    for b in blocks:
        out.setdefault(b.stage_label, []).append(b.name)
    return {k: tuple(v) for k, v in out.items()}


def channels(blocks: Iterable[AttentionBlock]) -> dict[str, int]:
    return {b.name: b.channels for b in blocks}


def total_gates(blocks: Iterable[AttentionBlock]) -> int:
    return int(sum(b.channels for b in blocks))


def pick(blocks: Sequence[AttentionBlock], preferred: str | None = None) -> str:
    """A sensible default block to show first: ``preferred`` if the network has it, else
    the middle block of the second-to-last stage (deep enough to be class-specific)."""
    names_ = [b.name for b in blocks]
    if preferred in names_:
        return preferred
    st = list(stages(blocks).values())
    chosen = st[-2] if len(st) > 1 else st[-1]
    return chosen[len(chosen) // 2]
