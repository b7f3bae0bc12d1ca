"""What the app keeps: the shared results, figures and statistics (process-wide caches) and
the page's data (`Page`).

Process-wide and shared by every session: the models (`st.cache_resource`, one per weights
source, used under their lock by the engine), the per-image results (one LRU bounded in
entries and bytes, computed in turn through a fair queue: `se_viz.runs`), slow figures and
the dataset statistics. Per session: what `st.session_state` holds (widget values, hashes
of uploads).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from ..analysis.dataset_stats import DatasetStats, load_stats
from ..errors import SEVizError
from ..runs import FairQueue, ImageResult, Photo, Results

ASSETS = Path(__file__).resolve().parent / "assets"  # a link to the repository's assets/
MAX_IMAGES = 16  # analysed per page; more are listed in a note, not run
DEFAULT_CACHE_MB = 512  # SE_VIZ_CACHE_MB: byte budget of the shared results (~11 MB per image)
RUN_SLOTS = 1  # images decoded and run at once over all sessions, first come first served
# How often a waiting session looks again (its notice, its tab still open): a "you are next"
# notice is due 0.3 s into a wait (QueueNotice.quiet) and is drawn by 0.4 s.
QUEUE_POLL_S = 0.1


@dataclass(frozen=True)
class Loaded:
    """The images that analysed cleanly, in sidebar order, with their results."""

    photos: tuple[Photo, ...]
    results: tuple[ImageResult, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.photos]

    @property
    def key(self) -> tuple:
        """(name, sha256) of every image: with the network, what a derived figure depends on."""
        return tuple((p.name, p.digest) for p in self.photos)

    def result(self, name: str) -> ImageResult:
        return self.results[self.names.index(name)]

    def photo(self, name: str) -> Photo:
        return self.photos[self.names.index(name)]

    def stacked(self) -> dict[str, np.ndarray]:
        """block -> (N, C) gates of all loaded images, the blocks of their results in
        forward order."""
        if not self.results:
            return {}
        return {b: np.stack([r.gates[b] for r in self.results]) for b in self.results[0].gates}


@dataclass(frozen=True)
class Page:
    """Everything a view draws from: the images and results, the network, and what the
    sidebar opened (dataset statistics, a refit folder, a results folder for the atlas)."""

    loaded: Loaded
    model: Any
    baseline: DatasetStats | None = None
    refit: Any = None
    atlas: Any = None  # atlas_folder.AtlasFolder
    extras: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- caches
def env_int(name: str, default: int | None, example: str) -> int | None:
    """A positive integer setting: SE_VIZ_WIDTH (unset: the network at its published size;
    8: a fast narrow demo model) or SE_VIZ_CACHE_MB (byte budget of the cached results);
    ``default`` when unset."""
    if name not in os.environ:
        return default
    raw = os.environ[name].strip()
    if not raw.isdigit() or int(raw) < 1:
        raise SEVizError(f"{name} must be a positive integer such as {example}, got {raw!r}. "
                         "Fix the variable and restart.")
    return int(raw)


@st.cache_resource(max_entries=1, show_spinner=False)
def _results(max_mb: int) -> Results:
    """ONE store per process for the per-image results of every session (not
    st.cache_data: a full-size result holds ~11 MB of feature maps that cache_data would
    unpickle on every rerun), with the fair queue their computation waits in."""
    return Results(max_mb, FairQueue(RUN_SLOTS, poll=QUEUE_POLL_S))


def results() -> Results:
    return _results(env_int("SE_VIZ_CACHE_MB", DEFAULT_CACHE_MB, "512 (MiB)"))


@st.cache_resource(max_entries=64, show_spinner=False)
def shared_figure(kind: str, key: tuple, _build: Callable[[], Any]) -> Any:
    """A slow figure built once per ``(kind, key)``; ``key`` determines it completely (image
    digests, network, choices). Shared read-only: st.plotly_chart does not change it."""
    return _build()


@st.cache_data(max_entries=16, show_spinner=False)
def sample_bytes(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


def sample_names() -> list[str]:
    return sorted(p.name for p in ASSETS.glob("*.jpg")) if ASSETS.is_dir() else []


@st.cache_resource(max_entries=4, show_spinner="Reading the dataset statistics ...")
def load_baseline(source: tuple, _data: bytes | None = None) -> DatasetStats:
    """A stats.npz from `se-viz analyze`, shared read-only by every session. source:
    ("upload", sha256, name) with the bytes in ``_data``, or ("path", path, fingerprint)."""
    if source[0] == "upload":
        return load_stats(_data, name=source[2])
    return load_stats(source[1])


@st.cache_resource(show_spinner=False)
def warm_imports() -> bool:
    """Import at start-up what the first upload would otherwise wait for: st.table imports
    pandas on first use (about 1 s here), plotly its heatmap validators (about 0.1 s)."""
    import pandas  # noqa: F401

    from ..plots import gate_heatmap

    gate_heatmap({"block": np.zeros(2, np.float32)})
    return True


@st.cache_resource
def paddle_guards() -> list:
    """Process-wide list that keeps Paddle's eager-mode guards alive
    (se_viz.engine.runtime.keep_eager_mode)."""
    return []


def keep_paddle_eager() -> None:
    """Keep Paddle in eager mode for every Streamlit script thread: Streamlit's short-lived
    first script thread would otherwise take Paddle's eager-mode guard with it."""
    from ..engine.runtime import keep_eager_mode

    keep_eager_mode(paddle_guards())
