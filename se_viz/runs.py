"""Runs of the network for an interactive front end: per-image results shared by every
session, interventions on them, and the fair queue that serves many users in turn.

The app (`se_viz.app`) shows what is computed here and keeps no domain logic of its own;
the command line and benchmarks can use the same functions. Paddle is only imported when
a network actually runs (`se_viz.engine`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import images
from .arch import BLOCK_NAMES
from .cache import BoundedCache
from .results import Intervention

RESULT_ENTRIES = 64  # per-image results kept by the process (also bounded in bytes)


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
    from .engine.capture import capture

    img = images.decode_image(photo.data, photo.name)
    crop = np.asarray(images.center_crop(img, model.preprocessing), dtype=np.uint8)
    del img
    cap = capture(model, images.normalize(crop, model.preprocessing)[None],
                  features=BLOCK_NAMES)
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
    from .engine.capture import capture

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
    hidden SE units that matter most on these images) and a name that identifies it."""
    from .analysis import emulation_masks
    from .engine.weights import se_parameters

    squeeze = {b: np.stack([r.squeeze[b] for r in results]) for b in BLOCK_NAMES}
    masks = emulation_masks(se_parameters(model), squeeze, model.info.reduction, target)
    spec = f"emulate r={target:g} " + images.image_digest(
        b"".join(masks[b].tobytes() for b in BLOCK_NAMES))
    return spec, Intervention(hidden_masks=masks)


# ----------------------------------------------------------------------------- sharing
class Results:
    """Per-image results of every session in one LRU bounded in entries and bytes, and the
    fair queue their computation waits in."""

    def __init__(self, max_mb: int, queue: "FairQueue") -> None:
        self.cache = BoundedCache(RESULT_ENTRIES, max_mb * 2**20)
        self.queue = queue

    def image(self, photo: Photo, model: Any,
              on_wait: Callable[[int, int], None] | None = None) -> ImageResult:
        """``photo`` through ``model`` once per (sha256, network), shared by every session;
        computed in turn (`FairQueue`), ``on_wait(ahead, total)`` while waiting."""
        return self._get((photo.digest, net_key(model)), lambda: run_image(photo, model),
                         on_wait)

    def modified(self, photo: Photo, res: ImageResult, model: Any, spec: str,
                 intervention: Intervention,
                 on_wait: Callable[[int, int], None] | None = None) -> Modified:
        """One image under an intervention that ``spec`` names fully, in the same cache."""
        return self._get(("modified", photo.digest, net_key(model), spec),
                         lambda: run_modified(res, model, intervention), on_wait)

    def _get(self, key: tuple, compute: Callable[[], Any],
             on_wait: Callable[[int, int], None] | None) -> Any:
        def queued() -> Any:  # only a miss waits in the queue
            with self.queue.turn(on_wait):
                return compute()
        return self.cache.get_or_compute(key, queued)


class FairQueue:
    """A first-come, first-served turnstile: at most ``slots`` holders at once, served in
    the order they arrived (a plain lock or semaphore wakes waiters in any order).

    ``with queue.turn(on_wait):`` blocks until it is this caller's turn; ``on_wait(ahead,
    waiting)`` is called at once and about every ``poll`` seconds while waiting (a front end
    shows the position there; an exception it raises, e.g. a closed browser tab, leaves the
    queue cleanly). The turn is given back when the block ends, also on errors.
    """

    def __init__(self, slots: int = 1, poll: float = 0.25) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots, self.poll = int(slots), float(poll)
        self._cond = threading.Condition()
        self._waiting: deque[int] = deque()
        self._serving = 0
        self._next = 0
        self.served = 0

    def position(self, ticket: int) -> int:
        """How many callers are ahead of ``ticket`` in the line (caller holds the lock)."""
        return self._waiting.index(ticket)

    @contextmanager
    def turn(self, on_wait: Callable[[int, int], None] | None = None) -> Iterator[None]:
        with self._cond:
            ticket = self._next
            self._next += 1
            self._waiting.append(ticket)
        try:
            self._wait(ticket, on_wait)
        except BaseException:
            with self._cond:
                self._waiting.remove(ticket)
                self._cond.notify_all()
            raise
        try:
            yield
        finally:
            with self._cond:
                self._serving -= 1
                self.served += 1
                self._cond.notify_all()

    def _wait(self, ticket: int, on_wait: Callable[[int, int], None] | None) -> None:
        last = None
        while True:
            with self._cond:
                ahead = self.position(ticket)
                if ahead == 0 and self._serving < self.slots:
                    self._waiting.popleft()
                    self._serving += 1
                    return
                state = (ahead, len(self._waiting))
                if on_wait is None or state == last:
                    self._cond.wait(self.poll)
                    continue
            last = state
            on_wait(*state)  # outside the lock: it may draw or raise; then look again

    def snapshot(self) -> Mapping[str, int]:
        """waiting, serving and served counts (for a status line or a benchmark)."""
        with self._cond:
            return {"waiting": len(self._waiting), "serving": self._serving,
                    "served": self.served}


def wait_text(ahead: int, waiting: int) -> str:
    """What a user waiting in the queue is told."""
    if ahead == 0:
        return "Your image is next; the network is busy with another user's image."
    return (f"Queued: {ahead} image(s) of other users ahead of yours ({waiting} waiting). "
            "Each takes about a quarter of a second.")


@dataclass(frozen=True)
class Walkthrough:
    """One image through one SE block, step by step (`se_viz.analysis.se_steps`), and the
    tutorial's layers run on the block's input U (`se_viz.engine.tutorial`). maps: U
    (C, H, W) float32 (from the result's float16 copy)."""

    block: str
    steps: Any
    layers: Any
    maps: np.ndarray


def walkthrough(model: Any, res: ImageResult, block: str) -> Walkthrough:
    """The SE block ``block`` of ``model`` on the image of ``res``, step by step."""
    from .analysis.se_steps import steps
    from .engine.tutorial import run_layers
    from .engine.weights import se_parameters

    params = se_parameters(model, [block])[block]
    maps = res.maps[block].astype(np.float32)
    return Walkthrough(block, steps(params, res.squeeze[block], res.gates[block]),
                       run_layers(params, maps), maps)
