"""The per-image results of every session in one process-wide cache, computed in turn
through the fair queue (`se_viz.runs.queue`): each (image, network) and each (image,
network, intervention) runs once however many users ask for it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..cache import BoundedCache
from ..results import Intervention
from .images import ImageResult, Modified, Photo, net_key, run_image, run_modified
from .queue import FairQueue

RESULT_ENTRIES = 64  # per-image results kept by the process (also bounded in bytes)


class Results:
    """Per-image results of every session in one LRU bounded in entries and bytes, and the
    fair queue their computation waits in."""

    def __init__(self, max_mb: int, queue: FairQueue) -> None:
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
