"""One image through the network, for an interactive front end: what a user chose
(`Photo`), what the network computed on it (`ImageResult`, `run_image`), the image under an
intervention (`Modified`, `run_modified`, `stage_gates`, `emulation`) and one SE block
step by step (`Walkthrough`, `walkthrough`). Paddle is only imported when a network
actually runs (`se_viz.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import images
from ..blocks import AttentionBlock, by_name, names
from ..results import Intervention


@dataclass(frozen=True)
class Photo:
    """An image a user chose: display name, sha256 of the bytes, the bytes."""

    name: str
    digest: str
    data: bytes = field(repr=False)

    @staticmethod
    def of(name: str, data: bytes) -> "Photo":
        return Photo(name, images.image_digest(data), data)


@dataclass(frozen=True)
class ImageResult:
    """One image through the network. crop (224, 224, 3) uint8 (what the net saw);
    logits, probs (K,); gates, squeeze: block -> (C,) float32; maps: block -> (C, H, W)
    float16, the block's feature maps before SE (after = before * gate). Read-only."""

    crop: np.ndarray
    logits: np.ndarray
    probs: np.ndarray
    gates: dict[str, np.ndarray]
    squeeze: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]


@dataclass(frozen=True)
class Modified:
    """One image under an intervention: probs (K,), gates block -> (C,)."""

    probs: np.ndarray
    gates: dict[str, np.ndarray]


def net_key(model: Any) -> str:
    """What identifies the numbers a network computes (arch, width, r, weights)."""
    return model.info.key()


def run_image(photo: Photo, model: Any) -> ImageResult:
    """Decode, crop and run one image, keeping every block's gates and feature maps.
    The arrays are made read-only: a shared result cannot be changed by a view."""
    from ..engine.capture import capture

    img = images.decode_image(photo.data, photo.name, draft_for=model.preprocessing)
    crop = np.asarray(images.center_crop(img, model.preprocessing), dtype=np.uint8)
    del img
    cap = capture(model, images.normalize(crop, model.preprocessing)[None],
                  features=names(model.info.blocks))
    result = ImageResult(crop=crop, logits=cap.logits[0], probs=cap.probabilities[0],
                         gates={b: g[0] for b, g in cap.gates.items()},
                         squeeze={b: s[0] for b, s in cap.squeeze.items()},
                         maps={b: f.before[0].astype(np.float16)
                               for b, f in cap.features.items()})
    for array in (crop, result.logits, result.probs, *result.gates.values(),
                  *result.squeeze.values(), *result.maps.values()):
        array.flags.writeable = False
    return result


def run_modified(res: ImageResult, model: Any, intervention: Intervention) -> Modified:
    """One image under an intervention, from the crop kept in ``res`` (the same numbers as
    decoding the upload again)."""
    from ..engine.capture import capture

    batch = images.normalize(res.crop, model.preprocessing)[None]
    cap = capture(model, batch, intervention=intervention)
    return Modified(cap.probabilities[0], {b: g[0] for b, g in cap.gates.items()})


def stage_gates(res: ImageResult, blocks: tuple[str, ...], value: float | str
                ) -> dict[str, float]:
    """Gate overrides for an intervention: ``value`` (a number, or "mean" for each block's
    own mean gate on this image) for every block in ``blocks``."""
    return {b: float(res.gates[b].mean()) if value == "mean" else float(value) for b in blocks}


def emulation(model: Any, results: list[ImageResult], target: float
              ) -> tuple[str, Intervention]:
    """The intervention that emulates reduction ratio ``target`` on ``model`` (keeping the
    hidden SE units that matter most on these images) and a name that identifies it. Only
    the blocks with a bottleneck (`AttentionBlock.reducible`) change; each keeps
    min(its own width, int(C / target)) units."""
    from ..analysis import emulation_masks
    from ..engine.weights import se_parameters

    blocks = [b for b in model.info.blocks if b.reducible]
    squeeze = {b.name: np.stack([r.squeeze[b.name] for r in results]) for b in blocks}
    masks = emulation_masks(se_parameters(model, names(blocks)), squeeze, None, target,
                            {b.name: b.act for b in blocks})
    spec = f"emulate r={target:g} " + images.image_digest(
        b"".join(masks[b.name].tobytes() for b in blocks))
    return spec, Intervention(hidden_masks=masks)


@dataclass(frozen=True)
class Walkthrough:
    """One image through one SE block, step by step (`se_viz.analysis.se_steps`), and the
    tutorial's layers run on the block's input U (`se_viz.engine.tutorial`). maps: U
    (C, H, W) float32 (from the result's float16 copy); about: the block's description."""

    block: str
    steps: Any
    layers: Any
    maps: np.ndarray
    about: AttentionBlock


def walkthrough(model: Any, res: ImageResult, block: str) -> Walkthrough:
    """The SE block ``block`` of ``model`` on the image of ``res``, step by step."""
    from ..analysis.se_steps import steps
    from ..engine.tutorial import run_layers
    from ..engine.weights import se_parameters

    about = by_name(model.info.blocks)[block]
    if not about.reducible:
        raise ValueError(f"{block} is an {about.kind.upper()} block with no fully connected "
                         "layers to step through; choose an SE block")
    params = se_parameters(model, [block])[block]
    maps = res.maps[block].astype(np.float32)
    return Walkthrough(block, steps(params, res.squeeze[block], res.gates[block], about.gate,
                                    about.act), run_layers(params, maps), maps, about)
