"""Decoding image files in spawned worker processes, in order, a bounded number ahead."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

import numpy as np

from ..errors import InvalidImageError
from ..images import Preprocessing, load_image, preprocess


def decode_files(paths: Sequence[str], pre: Preprocessing
                 ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Worker task: ((n_ok, 3, crop, crop) float32, positions decoded, [(position, reason)])."""
    arrays, ok, bad = [], [], []
    for pos, path in enumerate(paths):
        try:
            arrays.append(preprocess(load_image(path, draft_for=pre), pre))
            ok.append(pos)
        except InvalidImageError as exc:
            bad.append((pos, str(exc)))
    x = np.stack(arrays) if arrays else np.zeros((0, 3, pre.crop, pre.crop), np.float32)
    return x, ok, bad


class Decoder:
    """Decodes batches of files in order, at most ``workers + 2`` batches ahead (bounded memory).

    Workers are spawned processes. A file that crashes a worker is retried alone in a fresh
    pool and reported as bad if it crashes again; the run goes on.
    """

    def __init__(self, workers: int, pre: Preprocessing, task: Callable = decode_files) -> None:
        self.workers, self.pre, self.task = workers, pre, task
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Decoder":
        if self.workers > 0:
            self._restart()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = ProcessPoolExecutor(self.workers, multiprocessing.get_context("spawn"))

    def map(self, batches: Iterable[tuple[Any, list[str]]]) -> Iterator[tuple[Any, tuple]]:
        """(tag, paths) -> (tag, decode_files(paths)) in input order."""
        if self._pool is None:
            yield from ((tag, self.task(paths, self.pre)) for tag, paths in batches)
            return
        source, pending = iter(batches), deque()
        for tag, paths in source:
            pending.append([tag, paths, self._pool.submit(self.task, paths, self.pre)])
            if len(pending) >= self.workers + 2:
                yield self._next(pending)
        while pending:
            yield self._next(pending)

    def _next(self, pending: deque) -> tuple[Any, tuple]:
        tag, paths, future = pending.popleft()
        try:
            return tag, future.result()
        except BrokenProcessPool:
            self._restart()
            result = self._isolate(paths)
            for item in pending:  # their futures died with the pool
                item[2] = self._pool.submit(self.task, item[1], self.pre)
            return tag, result

    def _isolate(self, paths: list[str]) -> tuple:
        arrays, ok, bad = [], [], []
        for pos, path in enumerate(paths):
            try:
                x, good, why = self._pool.submit(self.task, [path], self.pre).result()
            except BrokenProcessPool:
                self._restart()
                bad.append((pos, f"'{path}' crashed the image decoder (corrupt file?). "
                                 "Remove or re-export it."))
                continue
            if good:
                arrays.append(x[0])
                ok.append(pos)
            else:
                bad.append((pos, why[0][1]))
        x = np.stack(arrays) if arrays else np.zeros((0, 3, self.pre.crop, self.pre.crop),
                                                     np.float32)
        return x, ok, bad
