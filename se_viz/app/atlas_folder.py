"""The channel atlas's data in the app: the results folder chosen in the sidebar (a gate
store that `se-viz analyze` wrote), its queries cached per (store, block, channel), the
feature maps of the few images shown.

Only the store's own queries run (`se_viz.dataset.atlas.GateStore`: one block's column,
streamed row group by row group); the store is never loaded whole. The maps of a list's
images are one capture of those files, computed in turn with every other network run
(the fair queue of `se_viz.runs`) and kept in the shared results cache (bounded in
entries and bytes), as the class evidence is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from .. import images
from ..dataset.atlas import ChannelHit, ClassSummary, GateStore, SimilarHit
from ..engine.build import file_fingerprint
from ..errors import SEVizError
from ..runs import net_key
from .common import queue_notice
from .state import results

THUMB = 128  # pixels, the atlas's thumbnails
QUERY_TTL_S = 300  # a cached list's "missing"/"changed" marks are at most this old


@dataclass(frozen=True)
class AtlasFolder:
    """An opened gate store and what identifies its contents (folder, the store's and the
    manifest's size and mtime): every cached query is keyed on ``key``."""

    store: GateStore
    key: tuple

    @property
    def folder(self) -> Path:
        return self.store.results


# ----------------------------------------------------------------------------- sidebar
@st.cache_resource(max_entries=4, show_spinner="Opening the gate store ...")
def _open(folder: str, fingerprint: tuple) -> GateStore:
    """The store in ``folder``, shared read-only by every session (each query opens its own
    file handle); ``fingerprint`` in the key: a rewritten store is opened again."""
    return GateStore.open(folder)


def atlas_ui() -> AtlasFolder | None:
    """The sidebar's results folder for the Channel atlas (a path; None when empty or on
    an error, which is shown)."""
    with st.expander("Channel atlas (results folder)"):
        st.caption("The folder `se-viz analyze DIR --out OUT` wrote (OUT, with gates.parquet). "
                   "The Channel atlas view then shows what each channel responds to in it.")
        path = st.text_input("Results folder", key="atlas_results").strip()
    if not path:
        return None
    folder = Path(path).expanduser()
    fingerprint = (file_fingerprint(folder / "gates.parquet"),
                   file_fingerprint(folder / "manifest.json"))
    try:
        store = _open(str(folder), fingerprint)
    except SEVizError as exc:
        st.error(str(exc))
        return None
    return AtlasFolder(store, (str(folder), fingerprint))


# ----------------------------------------------------------------------------- queries
@st.cache_data(max_entries=64, ttl=QUERY_TTL_S, show_spinner=False)
def top(key: tuple, block: str, channel: int, k: int, bottom: bool, klass: str | None,
        _store: GateStore) -> list[ChannelHit]:
    """`GateStore.top`, cached per store ``key`` and arguments."""
    return _store.top(block, channel, k=k, bottom=bottom, klass=klass)


@st.cache_data(max_entries=64, show_spinner=False)
def per_class(key: tuple, block: str, channel: int, _store: GateStore) -> list[ClassSummary]:
    """`GateStore.per_class`, cached per store ``key`` and arguments."""
    return _store.per_class(block, channel)


@st.cache_data(max_entries=64, ttl=QUERY_TTL_S, show_spinner=False)
def nearest(key: tuple, block: str, k: int, klass: str | None, query: tuple, _gates: np.ndarray,
            _store: GateStore) -> list[SimilarHit]:
    """`GateStore.nearest` of ``_gates`` (C,); ``query`` (image sha256, network) names them."""
    return _store.nearest(_gates, block, k=k, klass=klass)


# ----------------------------------------------------------------------------- pictures
def _crop(path: Path, pre: images.Preprocessing) -> Image.Image:
    """The crop the network saw of the file at ``path`` (its run's preprocessing)."""
    return images.center_crop(images.load_image(path, draft_for=pre), pre)


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(path: str, fingerprint: tuple, pre: images.Preprocessing) -> np.ndarray | None:
    """(THUMB, THUMB, 3) uint8 of the crop of the file at ``path``; None if it is gone or
    unreadable. ``fingerprint`` (size, mtime) in the key: a changed file is read again."""
    try:
        crop = _crop(Path(path), pre)
    except (OSError, SEVizError, ValueError):
        return None
    return np.asarray(crop.resize((THUMB, THUMB), Image.BILINEAR), dtype=np.uint8)


def thumbnails(hits: list, pre: images.Preprocessing) -> list[np.ndarray | None]:
    return [thumbnail(str(h.path), file_fingerprint(h.path), pre) if h.status != "missing"
            else None for h in hits]


def _maps(paths: tuple[str, ...], model: Any, pre: images.Preprocessing, block: str,
          channel: int) -> tuple[np.ndarray | None, ...]:
    """Each file's crop with ``channel``'s feature map of ``block`` (before SE) over it,
    (THUMB, THUMB, 3) uint8; None for a file that cannot be read. Runs four images at a
    time and keeps only the one channel (a block's maps of 20 images are large)."""
    from ..engine.capture import capture
    from ..plots import overlay

    crops: list[Image.Image | None] = []
    for path in paths:
        try:
            crops.append(_crop(Path(path), pre))
        except (OSError, SEVizError, ValueError):
            crops.append(None)
    good = [c for c in crops if c is not None]
    maps = []
    for i in range(0, len(good), 4):
        batch = np.stack([images.normalize(c, pre) for c in good[i:i + 4]])
        cap = capture(model, batch, features=[block])
        maps.extend(np.array(cap.features[block].before[:, channel], np.float32))
    found = iter(maps)
    out = []
    for crop in crops:
        if crop is None:
            out.append(None)
            continue
        small = np.asarray(crop.resize((THUMB, THUMB), Image.BILINEAR), dtype=np.uint8)
        out.append(overlay(small, next(found), alpha=0.45))
    return tuple(out)


def channel_maps(folder: AtlasFolder, model: Any, block: str, channel: int,
                 hits: list[ChannelHit]) -> tuple[np.ndarray | None, ...]:
    """The hits' images with the channel's map over them (`_maps`): computed once per
    (store, network, block, channel, files and their fingerprints) for every session, in
    turn with every other network run (the user sees their place, then a spinner)."""
    paths = tuple(str(h.path) for h in hits if h.status != "missing")
    key = ("atlas maps", folder.key, net_key(model), block, int(channel), paths,
           tuple(file_fingerprint(p) for p in paths))
    cache, queue = results().cache, results().queue
    label = (f"Computing channel {channel} of {block} for {len(paths)} images of the "
             "results folder ...")
    with queue_notice(label) as notice:
        def queued() -> tuple:
            with queue.turn(notice, key=key, tag=f"atlas {block}:{channel}"), notice.running():
                return _maps(paths, model, folder.store.preprocessing, block, channel)
        made = iter(cache.get_or_compute(key, queued))
    return tuple(next(made) if h.status != "missing" else None for h in hits)
