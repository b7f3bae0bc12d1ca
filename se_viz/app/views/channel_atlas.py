"""Channel atlas: what one channel responds to across the user's own image folder (the gate
store of ``se-viz analyze`` opened in the sidebar): the images with the highest and the
lowest gate, each with the channel's feature map over it, the gate's distribution per
class, and for each photo the closest images of the folder in the chosen block.

The Overview and the Block explorer draw `jump_ui`, which opens this view on a channel."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from ...blocks import by_name, pick
from ...errors import DatasetError
from ...runs import net_key
from ..atlas_folder import THUMB, AtlasFolder, channel_maps, nearest, per_class, thumbnails, \
    top
from ...plots.dataset import class_box_figure
from ..common import block_ui, chart
from ..state import Page

LABEL = "Channel atlas"
ALL_CLASSES = "(all classes)"
GONE = np.full((THUMB, THUMB, 3), 200, np.uint8)  # a file that is not there any more
JUMP = "atlas_jump"  # session state: (block, channel) asked for by another view (`jump_ui`)


def _request_jump(block: str, channel: int) -> None:
    """Button callback (runs before the next script run): the atlas opens on this channel."""
    st.session_state[JUMP] = (block, int(channel))
    st.session_state["view"] = LABEL


def jump_ui(blocks: Any, key: str, block: str | None = None, channel: int = 0) -> None:
    """"Open channel C of block B in the atlas": a block (unless given), a channel and a
    button that switches to the Channel atlas on that channel. (Streamlit's charts return
    no clicks on heatmap cells, so the cell is named with these widgets.)"""
    left, mid, right = st.columns([2, 1, 2], vertical_alignment="bottom")
    if block is None:
        block = block_ui(left, "Block for the atlas", blocks, f"{key}_block")
    else:
        left.caption("Read a channel off the charts and open it in the **Channel atlas**: "
                     "the images of your results folder that drive it most and least.")
    size = by_name(blocks)[block].channels
    chosen = int(mid.number_input("Channel", 0, size - 1, min(int(channel), size - 1),
                                  key=f"{key}_channel_{block}"))
    right.button(f"Open channel {chosen} of {block} in the atlas", key=f"{key}_open",
                 on_click=_request_jump, args=(block, chosen),
                 help="Needs a results folder opened in the sidebar (Channel atlas).")


def take_jump(folder: AtlasFolder) -> None:
    """Apply a channel asked for by another view (`jump_ui`) to this view's
    widgets, before they are drawn; one the store does not have is said."""
    block, channel = st.session_state.pop(JUMP, (None, None))
    if block is None:
        return
    try:
        folder.store.check_channel(block, channel)
    except DatasetError as exc:
        st.error(str(exc))
        return
    st.session_state["atlas_block"] = block
    st.session_state[f"atlas_channel_{block}"] = int(channel)


def pick_ui(folder: AtlasFolder, model: Any) -> tuple[str, int, int, str | None]:
    """(block, channel, k, class or None for all)."""
    store = folder.store
    st.session_state.setdefault("atlas_block", pick(model.info.blocks))
    a, b, c, d = st.columns([2, 1, 2, 2])
    block = a.selectbox("Attention block", store.blocks, key="atlas_block",
                        format_func=lambda n: f"{n} ({store.channels[n]} channels)")
    channel = int(b.number_input("Channel", 0, store.channels[block] - 1,
                                 key=f"atlas_channel_{block}"))
    k = c.slider("k (images per list)", 1, 24, 8, key="atlas_k")
    klass = d.selectbox("Only images of class", (ALL_CLASSES, *store.classes),
                        key="atlas_class")
    return block, channel, k, None if klass == ALL_CLASSES else klass


def hit_caption(hit: Any, value: str) -> str:
    mark = {"missing": " · file missing", "changed": " · file changed"}.get(hit.status, "")
    return f"{hit.file} · {hit.class_name} · {value}{mark}"


def render_lists(page: Page, folder: AtlasFolder, block: str, channel: int, k: int,
                 klass: str | None) -> None:
    """The top-k and bottom-k images of the channel, each with its feature map over it
    (one capture of those files for both lists)."""
    store = folder.store
    lists = [(f"Top {k}: the highest gates of channel {channel}", False),
             (f"Bottom {k}: the lowest gates of channel {channel}", True)]
    hits = [top(folder.key, block, channel, k, bottom, klass, _store=store)
            for _, bottom in lists]
    pictures = channel_maps(folder, page.model, block, channel, hits[0] + hits[1])
    for (title, _), found, shown in zip(lists, hits, (pictures[:len(hits[0])],
                                                       pictures[len(hits[0]):])):
        st.markdown(f"**{title}** of {block}")
        st.image([GONE if p is None else p for p in shown], width=THUMB, output_format="JPEG",
                 caption=[hit_caption(h, f"gate {h.gate:.3f}") for h in found])
    if any(h.status != "ok" for h in hits[0] + hits[1]):
        st.warning(f"Some files moved or changed since the folder was analysed (under "
                   f"`{store.root}`): their gates are the stored ones.")


def render_per_class(folder: AtlasFolder, block: str, channel: int) -> None:
    summaries = per_class(folder.key, block, channel, _store=folder.store)
    chart(class_box_figure(summaries, block, channel), "atlas_classes", height=380)
    empty = [s.class_name for s in summaries if not s.count]
    if empty:
        st.caption(f"No images of: {', '.join(empty)}.")


def render_nearest(page: Page, folder: AtlasFolder, block: str, k: int,
                   klass: str | None) -> None:
    """For each photo: the k images of the folder whose gates in ``block`` are closest
    (cosine) to the photo's own (from its capture on this page)."""
    store, model = folder.store, page.model
    st.markdown(f"**The closest images in your folder** to each photo, by the cosine "
                f"similarity of all {store.channels[block]} gates of {block}")
    if store.preprocessing != model.preprocessing:
        st.caption(f"The folder was analysed with {store.preprocessing.describe()}; the "
                   f"photos here with {model.preprocessing.describe()}.")
    for photo, res in zip(page.loaded.photos, page.loaded.results):
        hits = nearest(folder.key, block, k, klass, (photo.digest, net_key(model)),
                       _gates=res.gates[block], _store=store)
        st.caption(f"Closest to **{photo.name}**")
        pictures = thumbnails(hits, store.preprocessing)
        st.image([GONE if p is None else p for p in pictures], width=THUMB,
                 output_format="JPEG",
                 caption=[hit_caption(h, f"similarity {h.similarity:.3f}") for h in hits])


def render(page: Page) -> None:
    folder: AtlasFolder | None = page.atlas
    if folder is None:
        st.info("Open a results folder in the sidebar (**Channel atlas**) to see what each "
                "channel responds to across your own images: the images that drive it most "
                "and least, its gate per class, and the images closest to your photos.")
        st.code("se-viz analyze photos/ --out results/   # then open results/", language="bash")
        return
    store = folder.store
    try:
        store.check_network(page.model)
    except DatasetError as exc:
        st.error(str(exc))
        return
    take_jump(folder)
    block, channel, k, klass = pick_ui(folder, page.model)
    mine = ", ".join(f"{p.name} {r.gates[block][channel]:.3f}"
                     for p, r in zip(page.loaded.photos, page.loaded.results))
    st.caption(f"{store.n_images} images in {len(store.classes)} classes (`{folder.folder}`). "
               f"Each thumbnail is the crop the network saw, with channel {channel}'s "
               f"feature map before SE over it (yellow = strongest). Your photos' gate of "
               f"this channel: {mine}.")
    render_lists(page, folder, block, channel, k, klass)
    render_per_class(folder, block, channel)
    render_nearest(page, folder, block, k, klass)
