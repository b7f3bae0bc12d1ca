"""Runs of the network for an interactive front end: per-image results shared by every
session, interventions on them, and the fair queue that serves many users in turn.

The app (`se_viz.app`) shows what is computed here and keeps no domain logic of its own;
the command line and benchmarks can use the same functions. Paddle is only imported when
a network actually runs (`se_viz.engine`).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import images
from .blocks import AttentionBlock, by_name, names
from .cache import BoundedCache
from .results import Intervention

RESULT_ENTRIES = 64  # per-image results kept by the process (also bounded in bytes)
log = logging.getLogger("se_viz.runs")


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
    hidden SE units that matter most on these images) and a name that identifies it. Only
    the blocks with a bottleneck (`AttentionBlock.reducible`) change; each keeps
    min(its own width, int(C / target)) units."""
    from .analysis import emulation_masks
    from .engine.weights import se_parameters

    blocks = [b for b in model.info.blocks if b.reducible]
    squeeze = {b.name: np.stack([r.squeeze[b.name] for r in results]) for b in blocks}
    masks = emulation_masks(se_parameters(model, names(blocks)), squeeze, None, target,
                            {b.name: b.act for b in blocks})
    spec = f"emulate r={target:g} " + images.image_digest(
        b"".join(masks[b.name].tobytes() for b in blocks))
    return spec, Intervention(hidden_masks=masks)


# ----------------------------------------------------------------------------- sharing
class Results:
    """Per-image results of every session in one LRU bounded in entries and bytes, and the
    fair queue their computation waits in."""

    def __init__(self, max_mb: int, queue: "FairQueue") -> None:
        self.cache = BoundedCache(RESULT_ENTRIES, max_mb * 2**20)
        self.queue = queue

    def image(self, photo: Photo, model: Any,
              on_wait: Callable[[int, int], bool | None] | None = None,
              running: Callable[[], AbstractContextManager] | None = None) -> ImageResult:
        """``photo`` through ``model`` once per (sha256, network), shared by every session;
        computed in turn (`FairQueue`), ``on_wait(ahead, total)`` while waiting, inside
        ``running()`` (e.g. a spinner) while it runs."""
        return self._get((photo.digest, net_key(model)), lambda: run_image(photo, model),
                         on_wait, running)

    def modified(self, photo: Photo, res: ImageResult, model: Any, spec: str,
                 intervention: Intervention,
                 on_wait: Callable[[int, int], bool | None] | None = None,
                 running: Callable[[], AbstractContextManager] | None = None) -> Modified:
        """One image under an intervention that ``spec`` names fully, in the same cache."""
        return self._get(("modified", photo.digest, net_key(model), spec),
                         lambda: run_modified(res, model, intervention), on_wait, running)

    def _get(self, key: tuple, compute: Callable[[], Any],
             on_wait: Callable[[int, int], bool | None] | None,
             running: Callable[[], AbstractContextManager] | None) -> Any:
        def queued() -> Any:  # only a miss waits in the queue (a rerun keeps its place)
            digest = key[1] if key[0] == "modified" else key[0]
            with self.queue.turn(on_wait, key=key, tag=digest[:12]):
                with running() if running else nullcontext():
                    return compute()
        return self.cache.get_or_compute(key, queued)


@dataclass(frozen=True)
class Turn:
    """One caller's turn through a `FairQueue`: its ticket (arrival number), tag, seconds
    waited, seconds run (None: it left the line without running) and how many times its
    ``on_wait`` said it showed the caller something (returned true)."""

    ticket: int
    tag: str
    waited: float
    ran: float | None
    told: int = 0


class FairQueue:
    """A first-come, first-served turnstile: at most ``slots`` holders at once, served in
    the order they arrived (a plain lock or semaphore wakes waiters in any order).

    ``with queue.turn(on_wait, key=..., tag=...):`` blocks until it is this caller's turn.
    ``on_wait(ahead, waiting)`` is called while it waits: at once, whenever its place
    changes, at least every ``poll`` seconds, and one last time right before the turn
    starts; it returns true when it showed the caller something (counted in `Turn.told`
    and the log line, so a load test can tell what the server drew from what a page
    received). An exception it raises (a Streamlit script that is stopped because its tab
    closed, or rerun) takes the ticket out of the line before any work starts. A caller
    that left so and comes back with the same ``key`` within ``keep`` seconds (the rerun
    of the same request) gets its old place back. The turn is given back when the block
    ends, also on errors. `history` keeps the last turns (for logs and benchmarks).
    """

    def __init__(self, slots: int = 1, poll: float = 0.25, keep: float = 30.0,
                 history: int = 256) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if poll <= 0 or keep < 0:
            raise ValueError(f"poll must be > 0 and keep >= 0, got {poll} and {keep}")
        self.slots, self.poll, self.keep = int(slots), float(poll), float(keep)
        self._cond = threading.Condition()
        self._line: list[int] = []  # tickets waiting, in arrival order (sorted)
        self._left: dict[Hashable, tuple[int, float]] = {}  # key -> (ticket, when it left)
        self._serving = 0
        self._next = 0
        self.served = self.abandoned = 0
        self.history: deque[Turn] = deque(maxlen=history)

    @contextmanager
    def turn(self, on_wait: Callable[[int, int], bool | None] | None = None,
             key: Hashable | None = None, tag: str = "") -> Iterator[int]:
        """Wait for a turn (see the class); yields the ticket."""
        arrived = time.monotonic()
        told = [0]
        with self._cond:
            ticket = self._ticket(key, arrived)
            bisect.insort(self._line, ticket)
        try:
            self._wait(ticket, on_wait, told)
        except BaseException:
            self._leave(ticket, key, tag, time.monotonic() - arrived, told[0])
            raise
        started = time.monotonic()
        try:
            yield ticket
        finally:
            turn = Turn(ticket, tag, started - arrived, time.monotonic() - started, told[0])
            with self._cond:
                self._serving -= 1
                self.served += 1
                self.history.append(turn)
                waiting = len(self._line)
                self._cond.notify_all()
            log.info("queue: served ticket %d [%s] waited %.2f s, ran %.2f s, told %d; "
                     "%d waiting", ticket, tag, turn.waited, turn.ran, turn.told, waiting)

    def _ticket(self, key: Hashable | None, now: float) -> int:
        """The caller's place: its old ticket if ``key`` left recently, else a new one
        (caller holds the lock)."""
        for old in [k for k, (_, when) in self._left.items() if now - when > self.keep]:
            del self._left[old]
        if key is not None and key in self._left:
            return self._left.pop(key)[0]
        self._next += 1
        return self._next - 1

    def _wait(self, ticket: int, on_wait: Callable[[int, int], bool | None] | None,
              told_count: list[int]) -> None:
        told, told_at = None, 0.0  # ((ahead, waiting), free) on_wait was last called with
        while True:
            with self._cond:
                ahead = self._line.index(ticket)
                state = (ahead, len(self._line))
                free = ahead < self.slots - self._serving
                if free and (on_wait is None or told == (state, True)):
                    self._line.remove(ticket)  # on_wait was asked since it became free
                    self._serving += 1
                    return
                recent = told is not None and told[0] == state and \
                    time.monotonic() - told_at < self.poll
                if on_wait is None or (recent and not free):
                    self._cond.wait(self.poll - (time.monotonic() - told_at) if recent
                                    else self.poll)
                    continue
            if on_wait(*state):  # outside the lock: it may draw or raise; then look again
                told_count[0] += 1
            told, told_at = (state, free), time.monotonic()

    def _leave(self, ticket: int, key: Hashable | None, tag: str, waited: float,
               told: int) -> None:
        with self._cond:
            self._line.remove(ticket)
            if key is not None:
                self._left[key] = (ticket, time.monotonic())
            self.abandoned += 1
            self.history.append(Turn(ticket, tag, waited, None, told))
            waiting = len(self._line)
            self._cond.notify_all()
        log.info("queue: ticket %d [%s] left after %.2f s without running, told %d; "
                 "%d waiting", ticket, tag, waited, told, waiting)

    def typical_run(self, last: int = 16) -> float | None:
        """Median seconds of the last ``last`` turns that ran (None before the first)."""
        with self._cond:
            ran = sorted([t.ran for t in self.history if t.ran is not None][-last:])
        return ran[len(ran) // 2] if ran else None

    def snapshot(self) -> Mapping[str, int]:
        """waiting, serving, served and abandoned counts (a status line, a benchmark)."""
        with self._cond:
            return {"waiting": len(self._line), "serving": self._serving,
                    "served": self.served, "abandoned": self.abandoned}


def wait_text(ahead: int, waiting: int, per_turn: float | None = None) -> str:
    """What a user waiting in the queue is told (``per_turn``: typical seconds per image)."""
    eta = f" About {max(1, round((ahead + 1) * per_turn))} s to go." if per_turn else ""
    if ahead == 0:
        return "Your image is next: it runs as soon as the one before it is done." + eta
    return (f"Queued: {ahead} image(s) of other users ahead of yours ({waiting} waiting), "
            "served in the order they arrived." + eta)


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
    from .analysis.se_steps import steps
    from .engine.tutorial import run_layers
    from .engine.weights import se_parameters

    about = by_name(model.info.blocks)[block]
    if not about.reducible:
        raise ValueError(f"{block} is an {about.kind.upper()} block with no fully connected "
                         "layers to step through; choose an SE block")
    params = se_parameters(model, [block])[block]
    maps = res.maps[block].astype(np.float32)
    return Walkthrough(block, steps(params, res.squeeze[block], res.gates[block], about.gate,
                                    about.act), run_layers(params, maps), maps, about)
