"""What a capture returns: small frozen dataclasses of numpy arrays (no paddle).

`Capture` crosses every layer: the engine fills it, analysis and plots read it, the app
caches it, notebooks display it (`Capture._repr_html_`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .maths import normalized_entropy, softmax, top_k


@dataclass(frozen=True)
class FeatureMaps:
    """Feature maps of one block around its SE reweighting, float32 (N, C, H, W)."""

    before: np.ndarray
    after: np.ndarray


@dataclass(frozen=True)
class Intervention:
    """Edits applied during a capture (for "what if" views; never changes the model).

    ``gates``: block name -> a constant (e.g. 1.0 switches SE off), a (C,) array that
    replaces the block's gates, or an (N, C) array, one row per image of the batch. ``hidden_masks``: block name -> (hidden,) 0/1 array that
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
    features: block name -> FeatureMaps, only for blocks asked for;
    names: optional display names of the N images (notebooks, exports).
    """

    logits: np.ndarray
    gates: dict[str, np.ndarray]
    squeeze: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, FeatureMaps] = field(default_factory=dict)
    names: tuple[str, ...] = ()

    @property
    def block_names(self) -> list[str]:
        return list(self.gates)

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the logits, (N, K) float32."""
        return softmax(self.logits, axis=1)

    def top_k(self, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(indices (N, k) int64, probabilities (N, k)) sorted by probability, descending."""
        return top_k(self.probabilities, k)

    def image_name(self, index: int) -> str:
        """Display name of image ``index`` ("image 0" when the capture has no names)."""
        return self.names[index] if index < len(self.names) else f"image {index}"

    def select(self, index: int) -> "Capture":
        """The capture of image ``index`` alone (arrays keep a leading axis of 1)."""
        sl = slice(index, index + 1)
        return Capture(
            logits=self.logits[sl],
            gates={k: v[sl] for k, v in self.gates.items()},
            squeeze={k: v[sl] for k, v in self.squeeze.items()},
            features={k: FeatureMaps(v.before[sl], v.after[sl]) for k, v in self.features.items()},
            names=(self.image_name(index),) if self.names else (),
        )

    def with_names(self, names: Sequence[str]) -> "Capture":
        """The same capture with display names for its images."""
        names = tuple(str(n) for n in names)
        if len(names) != len(self):
            raise ValueError(f"{len(names)} names for {len(self)} images")
        return Capture(self.logits, self.gates, self.squeeze, self.features, names)

    @staticmethod
    def concat(parts: Sequence["Capture"]) -> "Capture":
        """Join captures of consecutive batches along the image axis."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        cat = np.concatenate
        names = tuple(n for p in parts for n in p.names) if all(p.names for p in parts) else ()
        return Capture(
            logits=cat([p.logits for p in parts]),
            gates={k: cat([p.gates[k] for p in parts]) for k in first.gates},
            squeeze={k: cat([p.squeeze[k] for p in parts]) for k in first.squeeze},
            features={k: FeatureMaps(cat([p.features[k].before for p in parts]),
                                     cat([p.features[k].after for p in parts]))
                      for k in first.features},
            names=names,
        )

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: per image its top-1 class; per block C, mean gate,
        entropy and the share of gates above 0.9 (no figure)."""
        from .labels import label_for

        n, k = len(self), int(self.logits.shape[1])
        idx, prob = self.top_k(1)
        images = "".join(
            f"<li>{html.escape(self.image_name(i))}: <b>{html.escape(label_for(int(idx[i, 0]), k))}"
            f"</b> ({float(prob[i, 0]):.1%})</li>" for i in range(n))
        rows = []
        for name, g in self.gates.items():
            ent = normalized_entropy(g)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{g.shape[1]}</td>"
                        f"<td>{float(g.mean()):.3f}</td><td>{float(np.mean(ent)):.3f}</td>"
                        f"<td>{float((g > 0.9).mean()):.1%}</td></tr>")
        feats = f"; feature maps for {', '.join(self.features)}" if self.features else ""
        return (f"<div><b>se_viz Capture</b>: {n} image(s), {len(self.gates)} SE blocks, "
                f"{k} classes{html.escape(feats)}<ul>{images}</ul>"
                "<table><tr><th>block</th><th>C</th><th>mean gate</th><th>entropy</th>"
                f"<th>gates &gt; 0.9</th></tr>{''.join(rows)}</table></div>")


@dataclass(frozen=True)
class SEParameters:
    """One SE block's weights as numpy, Linear form: w1 (C, h), b1 (h,), w2 (h, C), b2 (C,)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.w1.shape[0])

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[1])


@dataclass(frozen=True)
class Evidence:
    """Class evidence of one forward and one backward pass (`se_viz.explain`).

    target (N,) int64: the class explained per image; logits (N, K) and gates[block] (N, C)
    as a capture gives them; gate_grad[block] (N, C) float32: d logit[target] / d gate (the
    logit before softmax), every attention block in forward order; cam[block] (N, h, w)
    float32: Grad-CAM at the output of the network block holding the attention block,
    ReLU(sum_c mean_hw(dy/dA_c) A_c), not normalised; layercam[block] (N, h, w): LayerCAM
    at the same place, ReLU(sum_c ReLU(dy/dA_c) A_c) per position. cam and layercam hold the
    blocks asked for (all by default). names: display names of the images.
    """

    target: np.ndarray
    logits: np.ndarray
    gates: dict[str, np.ndarray]
    gate_grad: dict[str, np.ndarray]
    cam: dict[str, np.ndarray] = field(default_factory=dict)
    layercam: dict[str, np.ndarray] = field(default_factory=dict)
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def block_names(self) -> list[str]:
        return list(self.gates)

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits, axis=1)

    def attribution(self, block: str) -> np.ndarray:
        """Gate attribution (N, C) float32: gate x d logit[target] / d gate, the first-order
        change of the target logit if the gate were removed (set to 0), with its sign
        flipped: positive means the gate supports the class."""
        return (self.gates[block] * self.gate_grad[block]).astype(np.float32)

    @property
    def attributions(self) -> dict[str, np.ndarray]:
        """Every block's `attribution`, forward order."""
        return {b: self.attribution(b) for b in self.gates}

    def image_name(self, index: int) -> str:
        return self.names[index] if index < len(self.names) else f"image {index}"

    def with_names(self, names: Sequence[str]) -> "Evidence":
        names = tuple(str(n) for n in names)
        if len(names) != len(self):
            raise ValueError(f"{len(names)} names for {len(self)} images")
        return Evidence(self.target, self.logits, self.gates, self.gate_grad, self.cam,
                        self.layercam, names)

    @staticmethod
    def concat(parts: Sequence["Evidence"]) -> "Evidence":
        """Join the evidence of consecutive batches along the image axis."""
        if len(parts) == 1:
            return parts[0]
        cat, first = np.concatenate, parts[0]
        names = tuple(n for p in parts for n in p.names) if all(p.names for p in parts) else ()
        return Evidence(cat([p.target for p in parts]), cat([p.logits for p in parts]),
                        *({k: cat([getattr(p, f)[k] for p in parts]) for k in getattr(first, f)}
                          for f in ("gates", "gate_grad", "cam", "layercam")), names=names)


@dataclass(frozen=True)
class DeletionCurve:
    """The target probability as a block's (or every block's) gates are set to 0, the most
    important first by ``order`` ("attribution", "gate" or "random"; `se_viz.deletion`).

    k (S,) int: gates removed at each step (0 .. C); fraction (S,) = k / C; prob (S,) float32:
    the target class's probability; area: the trapezoid area under prob over fraction in
    [0, 1] (lower = the order found the gates the class depends on sooner).
    """

    block: str
    order: str
    target: int
    k: np.ndarray
    fraction: np.ndarray
    prob: np.ndarray
    area: float
