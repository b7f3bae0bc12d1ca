"""Streamlit app: what do the Squeeze-and-Excitation gates of SE-ResNet-50 attend to?

    streamlit run app.py                   # SE-ResNet-50 (pretrained if cached, else untrained)
    SE_VIZ_WIDTH=8 streamlit run app.py    # a narrow, fast demo model (tests use this)

Layout, widgets, caching and error display only; every number comes from ``se_viz``.
The network runs once per (image, weights, settings): results are cached on the image's
sha256, and switching tabs, blocks, channel order or k only redraws cached arrays.
Shared by every session: uploads are capped (config.toml, se_viz.images), per-image results
live in one LRU bounded in entries and bytes, weights files are re-checked on every run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

import se_viz
from se_viz import analysis, download, export, fast, figures, hooks, images, labels, report
from se_viz.api import build_model, file_fingerprint, verify_weights
from se_viz.cache import BoundedCache
from se_viz.costs import NetworkCosts, reduction_table
from se_viz.errors import SEVizError, WeightsError
from se_viz.model import ARCHS, keep_eager_mode, se_parameters
from se_viz.mosaic import maps_mosaic
from se_viz.weights import load_arrays, read_bytes

log = logging.getLogger("se_viz.app")

ASSETS = Path(__file__).resolve().parent / "assets"
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"]
FULL_WIDTH = 64
RATIOS = (1, 2, 4, 8, 16, 32, 64)
MAX_IMAGES = 16  # analysed per page; more are listed in a note, not run
RESULT_ENTRIES = 64  # per-image results kept by the process (also bounded in bytes)
DEFAULT_CACHE_MB = 512  # SE_VIZ_CACHE_MB: byte budget of those results (~11 MB per image)
DECODE_SLOTS = 2  # images decoded + run at once, over all sessions (a 50 MP decode ~150 MB)
THUMB = 160  # pixels, overlay thumbnails
BLOCKS = se_viz.BLOCK_NAMES
STAGES = {f"stage {s}": tuple(b for b in BLOCKS if b.startswith(f"SE_{s}_")) for s in (2, 3, 4, 5)}
TABS = ("Overview", "Block explorer", "Compare blocks", "Compare images", "Class baseline",
        "Reduction ratio", "Interventions", "Export")
ALL_IMAGES = "(all images of the dataset)"
ORDERS = ("natural", "sorted by gate", "sorted by another image")
FORCE = {"1 (SE off)": 1.0, "0.5": 0.5, "the block's mean gate": "mean"}
SCOPES = ("one block", "a whole stage", "remove all stage-5 SE (the paper's cheap variant)")
UPLOAD_HELP = ("PNG, JPEG, WebP, BMP, TIFF or GIF; several at once. Limits: {mb} MB per file, "
               f"{images.MAX_BYTES // 2**20} MB and {images.MAX_PIXELS // 10**6} megapixels per "
               f"image; the first {MAX_IMAGES} different images are analysed, the rest listed.")
GENERIC_ERROR = ("Something unexpected went wrong while {what}. The details were written to the "
                 "server log; the rest of the page still works. Try again or reload the page.")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Photo:
    """An image the user chose: display name, sha256 of the bytes, the bytes."""

    name: str
    digest: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ImageResult:
    """One image through the network. crop (224, 224, 3) uint8 (what the net saw);
    logits, probs (K,); gates, squeeze: block -> (C,) float32; maps: block -> (C, H, W) float16,
    the block's feature maps before SE (after = before * gate)."""

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

    def stacked(self) -> dict[str, np.ndarray]:
        """block -> (N, C) gates of all loaded images."""
        return {b: np.stack([r.gates[b] for r in self.results]) for b in BLOCKS}


@dataclass(frozen=True)
class WeightsChoice:
    """kind "auto" (pretrained if cached, else untrained), "upload" (name, digest, data of a
    .safetensors file) or "path" (name = the path typed in)."""

    kind: str = "auto"
    name: str = ""
    digest: str = ""
    data: bytes | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------- model + caches


def env_int(name: str, default: int, example: str) -> int:
    """A positive integer setting: SE_VIZ_WIDTH (64 is SE-ResNet-50, 8 a fast narrow demo
    model) or SE_VIZ_CACHE_MB (byte budget of the cached results)."""
    raw = os.environ.get(name, str(default)).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise SEVizError(f"{name} must be a positive integer such as {example}, got {raw!r}. "
                         "Fix the variable and restart.")
    return int(raw)


@st.cache_resource(max_entries=4, show_spinner="Building the model ...")
def load_model(arch: str, source: tuple, width: int, reduction: float,
               _data: bytes | None = None):
    """The shared model for one weights source; built once per process (captures lock it).

    source: ("untrained",) | ("pretrained", path, fingerprint) | ("path", path, fingerprint)
    | ("upload", sha256, name) with the bytes in ``_data`` (read as safetensors only). The
    file's (size, mtime_ns) fingerprint is in the key: a changed file is a new model.
    """
    kind = source[0]
    if kind in ("pretrained", "path"):
        model = build_model(arch, source[1], reduction, width=width)
    else:
        model = build_model(arch, None, reduction, width=width)
    if kind == "upload":
        arrays, meta, digest = read_bytes(_data, source[2])
        layout = load_arrays(model, arrays, source[2])
        if layout == "timm":
            model.preprocessing = images.TIMM_EVAL
        model.info = replace(model.info, weights=f"upload:{source[2]}", layout=layout,
                             sha256=digest, extra={"metadata": meta})
    fast.prepare(model)  # the fast graph (with feature maps), so the first upload is quick
    return model


def net_key(model) -> str:
    """What identifies the network behind a result: arch, width, r and weights hash."""
    info = model.info
    return f"{info.arch}|w{info.width}|r{info.reduction:g}|{info.sha256 or 'seeded-0'}"


@st.cache_resource(max_entries=1, show_spinner=False)
def result_cache(max_mb: int) -> BoundedCache:
    """ONE LRU per process for the per-image results of every session: at most
    RESULT_ENTRIES results and ``max_mb`` MiB of arrays. Not st.cache_data: a full-size
    result holds ~11 MB of feature maps that cache_data would unpickle on every rerun."""
    return BoundedCache(RESULT_ENTRIES, max_mb * 2**20)


def results() -> BoundedCache:
    return result_cache(env_int("SE_VIZ_CACHE_MB", DEFAULT_CACHE_MB, "512 (MiB)"))


@st.cache_resource(show_spinner=False)
def decode_slots() -> threading.BoundedSemaphore:
    """Caps the images being decoded and run at once, over all sessions (peak memory)."""
    return threading.BoundedSemaphore(DECODE_SLOTS)


def analyse_image(photo: Photo, model) -> ImageResult:
    """``photo`` through ``model`` once per (sha256, network), shared by every session."""
    return results().get_or_compute((photo.digest, net_key(model)),
                                    lambda: run_image(photo, model))


def run_image(photo: Photo, model) -> ImageResult:
    """Decode, crop and run one image, keeping every block's gates and feature maps.
    The arrays are made read-only: the shared result cannot be changed by a view."""
    with decode_slots():
        img = images.decode_image(photo.data, photo.name)
        crop = np.asarray(images.center_crop(img, model.preprocessing), dtype=np.uint8)
        cap = hooks.capture(model, [img], features=BLOCKS)
    result = ImageResult(crop=crop, logits=cap.logits[0], probs=cap.probabilities[0],
                         gates={b: g[0] for b, g in cap.gates.items()},
                         squeeze={b: s[0] for b, s in cap.squeeze.items()},
                         maps={b: f.before[0].astype(np.float16)
                               for b, f in cap.features.items()})
    for array in (crop, result.logits, result.probs, *result.gates.values(),
                  *result.squeeze.values(), *result.maps.values()):
        array.flags.writeable = False
    return result


@st.cache_resource(max_entries=64, show_spinner=False)
def shared_figure(kind: str, key: tuple, _build: Callable[[], Any]) -> Any:
    """A slow figure built once per ``(kind, key)``; ``key`` determines it completely (image
    digests, network, choices). Shared read-only: st.plotly_chart does not change it."""
    return _build()


def modified_run(photo: Photo, res: ImageResult, model, spec: str,
                 intervention: hooks.Intervention) -> Modified:
    """One image under an intervention (``spec`` names it fully), in the same bounded cache.
    Runs from the crop kept in ``res`` (the same numbers as decoding the upload again)."""
    def run() -> Modified:
        batch = images.normalize(res.crop, model.preprocessing)[None]
        with decode_slots():
            cap = hooks.capture(model, batch, intervention=intervention)
        return Modified(cap.probabilities[0], {b: g[0] for b, g in cap.gates.items()})

    return results().get_or_compute(("modified", photo.digest, net_key(model), spec), run)


@st.cache_data(max_entries=4, show_spinner="Counting parameters and FLOPs for each r ...")
def cost_rows(arch: str) -> list[NetworkCosts]:
    """Full-size SE-ResNet-50 costs for every r in RATIOS (built, never run)."""
    return reduction_table(arch, RATIOS, 224)


@st.cache_data(max_entries=16, show_spinner=False)
def sample_bytes(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


@st.cache_resource(max_entries=4, show_spinner="Reading the dataset statistics ...")
def load_baseline(source: tuple, _data: bytes | None = None) -> report.DatasetStats:
    """A stats.npz from `se-viz analyze`, shared read-only by every session. source:
    ("upload", sha256, name) with the bytes in ``_data``, or ("path", path, fingerprint)."""
    if source[0] == "upload":
        return report.load_stats(_data, name=source[2])
    return report.load_stats(source[1])


# ----------------------------------------------------------------------------- helpers


@st.cache_resource(show_spinner=False)
def warm_imports() -> bool:
    """Import at start-up what the first upload would otherwise wait for: st.table imports
    pandas on first use (about 1 s here), plotly its heatmap validators (about 0.1 s)."""
    import pandas  # noqa: F401

    figures.gate_heatmap({"SE_2_1": np.zeros(2, np.float32)})
    return True


@st.cache_resource
def _paddle_guards() -> list:
    """Process-wide list that keeps Paddle's eager-mode guards alive (model.keep_eager_mode)."""
    return []


def keep_paddle_eager() -> None:
    """Keep Paddle in eager mode for every Streamlit script thread (see
    se_viz.model.keep_eager_mode: Streamlit's short-lived first script thread would
    otherwise take Paddle's eager-mode guard with it)."""
    keep_eager_mode(_paddle_guards())


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Expected errors -> their message; anything else -> logged with traceback + generic text."""
    try:
        yield
    except SEVizError as exc:
        st.error(str(exc))
    except Exception:
        log.exception("unexpected error while %s", what)
        st.error(GENERIC_ERROR.format(what=what))


def chart(fig, key: str, height: int | str = "content") -> None:
    st.plotly_chart(fig, width="stretch", height=height, key=f"fig_{key}")


def top_table(probs: np.ndarray, num_classes: int, k: int = 5) -> dict[str, list]:
    idx = analysis.top_channels(probs, k)
    return {"class": [labels.label_for(i, num_classes) for i in idx],
            "probability": [f"{probs[i]:.1%}" for i in idx]}


def digest_of(upload) -> str:
    """sha256 of an uploaded file, computed once per upload (memo in the session, which
    keeps the 256 newest so that a long session of uploads does not grow it)."""
    memo = st.session_state.setdefault("_digests", {})
    if upload.file_id not in memo:
        memo[upload.file_id] = images.image_digest(upload.getvalue())
        while len(memo) > 256:
            memo.pop(next(iter(memo)))
    return memo[upload.file_id]


def unique(name: str, taken: set[str]) -> str:
    out, n = name, 2
    while out in taken:
        out, n = f"{name} ({n})", n + 1
    return out


# ----------------------------------------------------------------------------- sidebar


def weights_ui() -> WeightsChoice:
    """Where the weights come from: automatic, an uploaded .safetensors, or a local path."""
    kind = st.radio(
        "Weights source", ("Automatic", "Upload .safetensors", "Local file path"),
        key="weights_kind",
        help="Automatic uses the pretrained file in the cache when it is there.")
    if kind == "Upload .safetensors":
        up = st.file_uploader("Weights file (.safetensors)", type=["safetensors"],
                              key="weights_upload",
                              help="Read as safetensors only; never unpickled.")
        if up is not None:
            return WeightsChoice("upload", name=up.name, digest=digest_of(up), data=up.getvalue())
    elif kind == "Local file path":
        path = st.text_input("Path to .pdparams or .safetensors", key="weights_path")
        if path.strip():
            return WeightsChoice("path", name=path.strip())
    return WeightsChoice()


def baseline_ui() -> report.DatasetStats | None:
    """An optional class baseline: the stats.npz that `se-viz analyze` wrote (upload or path)."""
    with st.expander("Class baseline (dataset statistics)"):
        st.caption("Made by `se-viz analyze DIR --out OUT` (OUT/stats.npz). The Class "
                   "baseline view then says how typical each image's gates are for its class.")
        up = st.file_uploader("stats.npz", type=["npz"], key="stats_upload",
                              help="Read with numpy, allow_pickle=False: never unpickled.")
        path = st.text_input("or a local path to stats.npz", key="stats_path").strip()
    try:
        if up is not None:
            return load_baseline(("upload", digest_of(up), up.name), up.getvalue())
        if path:
            where = Path(path).expanduser()  # (size, mtime) in the key: a rewrite reloads
            return load_baseline(("path", str(where), file_fingerprint(where)))
    except SEVizError as exc:
        st.error(str(exc))
    return None


def photos_ui() -> list[Photo]:
    """Sample photos and uploads, de-duplicated by content, with unique names."""
    st.subheader("Photos")
    samples = sorted(p.name for p in ASSETS.glob("*.jpg")) if ASSETS.is_dir() else []
    mb = st.get_option("server.maxUploadSize")
    uploads = st.file_uploader("Your photos", type=UPLOAD_TYPES, accept_multiple_files=True,
                               key="uploads", help=UPLOAD_HELP.format(mb=mb)) or []
    chosen = st.multiselect("Sample photos", samples, key="samples")
    photos: list[Photo] = []
    seen: set[str] = set()
    for name, upload in [(n, None) for n in chosen] + [(u.name, u) for u in uploads]:
        data = sample_bytes(name) if upload is None else upload.getvalue()
        digest = images.image_digest(data) if upload is None else digest_of(upload)
        if digest not in seen and len(seen) < MAX_IMAGES:
            photos.append(Photo(unique(name, {p.name for p in photos}), digest, data))
        seen.add(digest)
    if len(seen) > MAX_IMAGES:
        st.warning(f"Showing the first {MAX_IMAGES} of {len(seen)} images: at most "
                   f"{MAX_IMAGES} are analysed per page. Remove some to see the others.")
    return photos


def model_source(choice: WeightsChoice, arch: str, width: int) -> tuple:
    """load_model's ``source`` for the choice; a file's (size, mtime_ns) is part of it."""
    if choice.kind == "upload":
        return ("upload", choice.digest, choice.name)
    if choice.kind == "path":
        path = Path(choice.name).expanduser()
        if path.exists() and not path.is_file():
            raise WeightsError(f"{path} is not a regular file; give the path of a .pdparams "
                               "or .safetensors weights file.")
        return ("path", str(path), file_fingerprint(path))
    cached = download.cached_path(arch)
    if cached is not None and width == FULL_WIDTH:
        return ("pretrained", str(cached), file_fingerprint(cached))
    return ("untrained",)


def checked_file_model(model, args: tuple):
    """``model`` if its file on disk is unchanged, else that file loaded again. When the
    weights this session saw last changed, the stale model leaves the cache and the session
    is told. ``args``: load_model's (arch, source, width, reduction)."""
    arch, (kind, path, _), width, reduction = args
    try:
        verify_weights(model)  # stat, then sha256 if size or mtime moved
    except WeightsError:
        load_model.clear(*args)
        args = (arch, (kind, path, file_fingerprint(path)), width, reduction)
        model = load_model(*args)
    seen = st.session_state.setdefault("_weights_seen", {})
    old, seen[path] = seen.get(path), (model.info.sha256, args)
    if old and old[0] != model.info.sha256:
        if old[1] != args:
            load_model.clear(*old[1])
        st.info(f"**{Path(path).name} changed on disk** (sha256 `{old[0][:12]}` -> "
                f"`{model.info.sha256[:12]}`) and was reloaded; results use the new weights.")
    return model


def get_model(choice: WeightsChoice, arch: str, width: int, reduction: float):
    """The model for the user's choice; on a weights error, say why and fall back to untrained."""
    try:
        source = model_source(choice, arch, width)
        model = load_model(arch, source, width, reduction, choice.data)
        if source[0] in ("path", "pretrained"):
            model = checked_file_model(model, (arch, source, width, reduction))
        return model
    except SEVizError as exc:
        st.error(f"{exc} Showing untrained weights instead.")
    except Exception:
        log.exception("loading weights %s failed", choice)
        st.error(GENERIC_ERROR.format(what="loading the weights"))
    return load_model(arch, ("untrained",), width, reduction)


def download_weights(arch: str) -> None:
    """Fetch the pretrained file with a progress bar; a failure (offline) is shown, not raised."""
    bar = st.progress(0.0, text="Connecting ...")

    def progress(done: int, total: int | None) -> None:
        mib = f"{done / 2**20:.1f} MiB" + (f" of {total / 2**20:.1f} MiB" if total else "")
        bar.progress(min(done / total, 1.0) if total else 0.0, text=f"Downloaded {mib}")

    try:
        path = download.fetch(arch, progress=progress)
    except SEVizError as exc:
        bar.empty()
        st.session_state["download_error"] = str(exc)
        return
    st.session_state.pop("download_error", None)
    st.success(f"Saved {path.name}.")
    st.rerun()


def render_weights_status(model, width: int) -> None:
    info = model.info
    if width != FULL_WIDTH:
        st.info(f"**Narrow demo model** (SE_VIZ_WIDTH={width}): {width} instead of 64 "
                "channels in the first stage, seeded weights. Fast for tests and demos; "
                "unset SE_VIZ_WIDTH for the real SE-ResNet-50.")
    if info.untrained:
        st.warning("**Untrained weights: the attention shown means nothing.**")
        if st.button("Download pretrained weights", key="download",
                     help=f"Saves {download.PRETRAINED[info.arch].filename} "
                          f"into {download.cache_dir()}"):
            download_weights(info.arch)
        if width != FULL_WIDTH and download.cached_path(info.arch) is not None:
            st.caption("The pretrained file is in the cache, but it only fits the full-size "
                       "model (unset SE_VIZ_WIDTH).")
        if "download_error" in st.session_state:
            st.error(st.session_state["download_error"])
    else:
        name = Path(info.weights.removeprefix("upload:")).name
        st.success(f"**{name}**  \nlayout `{info.layout}`, r = {info.reduction:g}, "
                   f"sha256 `{(info.sha256 or '')[:12]}`"
                   + ("  \npretrained ImageNet weights" if info.pretrained else ""))


# ----------------------------------------------------------------------------- views


def overview_ui(names: list[str]) -> tuple[str, str | None]:
    left, right = st.columns([2, 1])
    mode = left.radio("Channel order", ORDERS, horizontal=True, key="order",
                      help="Sorting by another image lays every image out in that image's order.")
    ref = None
    if mode == ORDERS[2]:
        ref = right.selectbox("Reference image", names, key="order_ref")
    return mode, ref


def channel_orders(gates: dict, mode: str, ref: dict | None) -> dict | None:
    if mode == ORDERS[0]:
        return None
    if mode == ORDERS[1] or ref is None:
        return {b: analysis.channel_order(g, "sorted") for b, g in gates.items()}
    return {b: analysis.channel_order(g, "reference", ref[b]) for b, g in gates.items()}


def render_overview(loaded: Loaded, model) -> None:
    mode, ref = overview_ui(loaded.names)
    ref_gates = loaded.result(ref).gates if ref else None
    ref_key = loaded.key[loaded.names.index(ref)] if ref else None
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        name = photo.name
        with st.container(border=True):
            st.subheader(name)
            left, right = st.columns([1, 2])
            left.image(res.crop, caption="The 224 x 224 crop the network saw")
            with right:
                st.markdown("**Top-5 classes**")
                st.table(top_table(res.probs, model.info.num_classes))
            fig = shared_figure(
                "heatmap", (name, photo.digest, net_key(model), mode, ref_key),
                lambda: figures.gate_heatmap(res.gates, channel_orders(res.gates, mode, ref_gates),
                                             title=f"SE gates of {name} (16 blocks x channels)"))
            chart(fig, f"heatmap_{i}", height=430)


def block_ui(names: list[str]) -> tuple[str, str, int]:
    a, b, c = st.columns(3)
    block = a.selectbox("SE block", BLOCKS, key="block")
    name = b.selectbox("Image", names, key="explore_image")
    k = c.slider("k (top and bottom channels)", 1, 16, 6, key="k")
    return block, name, k


def render_block_explorer(loaded: Loaded, model) -> None:
    block, name, k = block_ui(loaded.names)
    res = loaded.result(name)
    g, s = res.gates[block], res.squeeze[block]
    key = (loaded.key[loaded.names.index(name)], net_key(model), block)
    stats = analysis.gate_stats(g)
    cols = st.columns(5)
    for col, (label, value) in zip(cols, (
            ("mean gate", f"{stats.mean:.3f}"), ("std", f"{stats.std:.3f}"),
            ("entropy (0-1)", f"{stats.entropy:.3f}"), ("gates < 0.1", f"{stats.frac_low:.1%}"),
            ("gates > 0.9", f"{stats.frac_high:.1%}"))):
        col.metric(label, value)
    left, right = st.columns(2)
    split = analysis.squeeze_vs_gate(s, g)
    with left:
        chart(shared_figure("hist", key, lambda: figures.gate_histogram(g, block)), "hist",
              height=340)
    with right:
        chart(shared_figure("scatter", key, lambda: figures.squeeze_gate_scatter(
            s, g, block, split)), "scatter", height=340)
        st.caption(f"Strong channels suppressed: {_ids(split['strong_suppressed'])}  \n"
                   f"Weak channels boosted: {_ids(split['weak_boosted'])}")
    show = st.radio("Show maps as", ("before and after SE", "overlay on the image"),
                    horizontal=True, key="maps_as")
    maps = res.maps[block]
    for title, idx in (("Most amplified (top-k gates)", analysis.top_channels(g, k)),
                       ("Most suppressed (bottom-k gates)", analysis.top_channels(g, k, False))):
        st.markdown(f"**{title}** of {block}")
        render_maps(res.crop, maps[idx].astype(np.float32), idx, g[idx], show, title,
                    key + (title, k))


def render_maps(crop: np.ndarray, before: np.ndarray, idx: np.ndarray, gates: np.ndarray,
                show: str, title: str, key: tuple) -> None:
    """k maps (k, H, W): before SE and after (x * gate) on one colour scale, or overlays.
    ``key`` determines the maps (image, network, block, title, k) for the figure cache."""
    if show == "overlay on the image":
        small = np.asarray(Image.fromarray(crop).resize((THUMB, THUMB), Image.BILINEAR))
        st.image([figures.overlay(small, m) for m in before], width=THUMB, output_format="JPEG",
                 caption=[f"ch {int(i)} · gate {float(g):.2f}" for i, g in zip(idx, gates)])
        return
    rows = [("before SE", before), ("after SE (x * gate)", before * gates[:, None, None])]
    height = 80 + 2 * 700 // max(3, len(idx))
    chart(shared_figure("maps", key, lambda: maps_mosaic(rows, idx, gates)), f"maps_{title}",
          height=height)


def _ids(idx: np.ndarray, most: int = 20) -> str:
    ids = ", ".join(str(int(i)) for i in idx[:most])
    return (ids or "none") + (f" ... ({len(idx)} in all)" if len(idx) > most else "")


def render_compare_blocks(loaded: Loaded, model) -> None:
    name = st.selectbox("Image for the depth profile", loaded.names, key="profile_image")
    table = analysis.stats_table(loaded.result(name).gates)
    chart(figures.stats_profile(table), "profile", height=380)
    stacked = loaded.stacked()
    chart(figures.similarity_heatmap(analysis.block_similarity(stacked), BLOCKS), "similarity",
          height=520)
    st.caption(f"Similarity of gate-value distributions, pooled over {len(loaded.names)} "
               "image(s).")
    fig6 = shared_figure("fig6", (loaded.key, net_key(model)), lambda: figures.figure6(
        stacked, loaded.names, analysis.PAPER_FIG6_BLOCKS))
    chart(fig6, "fig6", height=560)
    st.info(f"**The paper's finding.** {analysis.PAPER_FIG6_FINDING}")


def render_compare_images(loaded: Loaded, model) -> None:
    names = loaded.names
    if len(names) < 2:
        st.info("Load two or more images (sidebar) to compare them.")
        return
    chosen = st.multiselect("Images", names, default=names[:2], key="cmp_images")
    if len(chosen) < 2:
        st.info("Choose at least two images.")
        return
    a, b, c = st.columns(3)
    block = a.selectbox("Block for the side-by-side view", BLOCKS, key="cmp_block")
    first = b.selectbox("Image A", chosen, index=0, key="cmp_a")
    second = c.selectbox("Image B", chosen, index=1, key="cmp_b")
    cols = st.columns(len(chosen))
    for col, n in zip(cols, chosen):
        col.image(loaded.result(n).crop, caption=n)
    side = {block: np.stack([loaded.result(n).gates[block] for n in chosen])}
    chart(shared_figure("side", (loaded.key, tuple(chosen), block, net_key(model)),
                        lambda: figures.figure6(side, chosen, [block])), "side", height=360)
    ga, gb = loaded.result(first).gates, loaded.result(second).gates
    chart(figures.difference_heatmap(ga, gb, f"{second} - {first}"), "diff", height=430)
    k = st.slider("k for the top-k overlap", 1, 64, 10, key="cmp_k")
    table = analysis.compare_images(ga, gb, k)
    chart(figures.distance_bars(table), "distances", height=380)
    order = np.argsort(-table["js"], kind="stable")[:3]
    st.markdown("**Blocks that separate these images most** (largest Jensen-Shannon distance): "
                + ", ".join(f"{table['block'][i]} ({table['js'][i]:.3f})" for i in order))
    st.dataframe({k2: list(v) for k2, v in table.items()}, hide_index=True)


def baseline_ui_for(photo: Photo, res: ImageResult, model, stats: report.DatasetStats,
                    i: int) -> str | None:
    """The baseline class for one image: its predicted class when the dataset has it."""
    top = int(np.argmax(res.probs))
    matched = report.match_class(stats, top, model.info.num_classes)
    options = [ALL_IMAGES, *stats.classes]
    index = options.index(stats.classes[matched]) if matched is not None else 0
    choice = st.selectbox("Compare with", options, index=index, key=f"baseline_class_{i}",
                          help="Defaults to the predicted class when the dataset has a "
                               "folder named like it (WordNet id, name or index).")
    predicted = labels.label_for(top, model.info.num_classes)
    st.caption(f"Predicted: **{predicted}** ({res.probs[top]:.1%})."
               + ("" if matched is not None else " No dataset class matches it."))
    return None if choice == ALL_IMAGES else choice


def render_baseline(loaded: Loaded, model, stats: report.DatasetStats | None = None) -> None:
    if stats is None:
        st.info("Open a dataset's statistics in the sidebar (**Class baseline**) to see how "
                "typical each image's gates are for its class, block by block.")
        st.code("se-viz analyze photos/ --out results/   # then open results/stats.npz",
                language="bash")
        return
    st.markdown(f"Baseline: **{len(stats.classes)} classes, {stats.all_count} images** "
                f"({stats.meta.get('arch', '?')}). Per block: the mean over channels of "
                "|gate - class mean| / class std (0 = exactly typical, about 0.8 for a typical "
                "member of a normal class), and the cosine between the gates and the class mean.")
    sha = stats.meta.get("weights_sha256")
    if sha and model.info.sha256 and sha != model.info.sha256:
        st.warning(f"These statistics were made with other weights (sha256 `{sha[:12]}`, "
                   f"the model here has `{model.info.sha256[:12]}`): compare with care.")
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        with st.container(border=True):
            st.subheader(photo.name)
            cls = baseline_ui_for(photo, res, model, stats, i)
            try:
                t = report.typicality(stats, res.gates, cls)
            except ValueError as exc:
                st.error(f"{exc}.")
                return
            z = t["mean_abs_z"]
            worst = max(z, key=z.get)
            st.markdown(f"Least typical block: **{worst}** (mean |z| {z[worst]:.2f}); most "
                        f"typical: **{min(z, key=z.get)}** ({min(z.values()):.2f}).")
            chart(report.typicality_figure(t), f"baseline_{i}", height=420)


def cost_tables(rows: list[NetworkCosts], r: float) -> tuple[dict, dict]:
    paper = {p.reduction: p for p in analysis.PAPER_REDUCTION_TABLE}
    whole = {"r": [f"{x.reduction:g}" for x in rows],
             "params (M)": [f"{x.params_total / 1e6:.2f}" for x in rows],
             "SE params (M)": [f"{x.params_se / 1e6:.2f}" for x in rows],
             "GMACs": [f"{x.flops_total / 1e9:.3f}" for x in rows],
             "SE MMACs": [f"{x.flops_se / 1e6:.2f}" for x in rows],
             "paper params (M)": [_paper(paper, x.reduction, 3) for x in rows],
             "paper top-1 err (%)": [_paper(paper, x.reduction, 1) for x in rows],
             "paper top-5 err (%)": [_paper(paper, x.reduction, 2) for x in rows]}
    row = next(x for x in rows if x.reduction == r)
    stages = {"stage": list(STAGES),
              "params (M)": [f"{v / 1e6:.2f}" for v in row.stage_params],
              "SE params (M)": [f"{v / 1e6:.3f}" for v in row.stage_se_params],
              "GMACs": [f"{v / 1e9:.3f}" for v in row.stage_flops],
              "SE MMACs": [f"{v / 1e6:.3f}" for v in row.stage_se_flops]}
    return whole, stages


def _paper(paper: dict, r: float, column: int) -> str:
    row = paper.get(int(r)) if float(r).is_integer() else None
    return f"{row[column]:g}" if row else "—"


def render_reduction(loaded: Loaded, model) -> None:
    rows = cost_rows(model.info.arch)
    st.markdown("Parameters and multiply-adds (the paper's \"FLOPs\") of the full-size "
                f"`{model.info.arch}` at 224 x 224, counted from built models, beside the "
                "paper's Table 10.")
    r = st.selectbox("r for the per-stage breakdown", RATIOS, index=RATIOS.index(16),
                     key="cost_r")
    whole, stages = cost_tables(rows, r)
    st.table(whole)
    st.caption(f"Paper: {analysis.PAPER_CITATION} ResNet-50 without SE: "
               f"{analysis.PAPER_REDUCTION_TABLE[-1].params_m} M parameters, "
               f"{analysis.PAPER_REDUCTION_TABLE[-1].top1_err}% top-1 error.")
    st.markdown(f"**Per stage at r = {r}**")
    st.table(stages)
    chart(shared_figure("reduction", (model.info.arch, RATIOS),
                        lambda: figures.reduction_figure(rows)), "reduction", height=520)
    render_emulation(loaded, model)


def render_emulation(loaded: Loaded, model) -> None:
    own = model.info.reduction
    st.subheader("Emulate a larger r with the loaded weights")
    st.warning("**Emulation, not a retrained network.** A smaller bottleneck is imitated by "
               "keeping only the most important hidden SE units (ranked on these images) and "
               "zeroing the rest; a network trained at that r would learn different weights.")
    choices = [x for x in RATIOS if x > own]
    if not choices:
        st.info(f"The model already uses r = {own:g}; there is no larger r to emulate.")
        return
    with st.form("emulation"):
        target = st.selectbox("Emulated r", choices, key="emulate_r")
        if st.form_submit_button("Run emulation"):
            st.session_state["emu_spec"] = target
    target = st.session_state.get("emu_spec")
    if target is None or target not in choices:
        return
    squeeze = {b: np.stack([r.squeeze[b] for r in loaded.results]) for b in BLOCKS}
    masks = analysis.emulation_masks(se_parameters(model), squeeze, own, target)
    spec = f"emulate r={target:g} " + images.image_digest(
        b"".join(masks[b].tobytes() for b in BLOCKS))
    intervention = hooks.Intervention(hidden_masks=masks)
    st.markdown(f"**Emulated r = {target}** (model r = {own:g})")
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        out = modified_run(photo, res, model, spec, intervention)
        with st.expander(photo.name, expanded=i == 0):
            fig = shared_figure("emulation", (photo.digest, net_key(model), spec),
                                lambda: figures.emulation_figure(res.gates, out.gates))
            chart(fig, f"emu_{i}", height=360)
            render_topk_change(res.probs, out.probs, model, f"emu_top_{i}",
                               (photo.digest, net_key(model), spec))


def render_topk_change(before: np.ndarray, after: np.ndarray, model, key: str,
                       cache_key: tuple) -> None:
    """Top-5 before and after an intervention (probs (K,)) as bars and as a table."""
    change = analysis.topk_change(before, after, 5)
    name = lambda idx: [labels.label_for(i, model.info.num_classes) for i in idx]  # noqa: E731
    fig = shared_figure("topk", cache_key, lambda: figures.topk_compare(
        name(change["before_idx"]), change["before_prob"],
        name(change["after_idx"]), change["after_prob"]))
    chart(fig, key, height=320)
    st.table({"before": [f"{n} ({p:.1%})" for n, p in zip(name(change["before_idx"]),
                                                         change["before_prob"])],
              "after": [f"{n} ({p:.1%})" for n, p in zip(name(change["after_idx"]),
                                                       change["after_prob"])]})
    st.caption(f"{change['kept']} of the top-5 kept; top-1 "
               + ("changed." if change["top1_changed"] else "unchanged."))


def intervention_ui() -> tuple | None:
    """The submitted intervention (scope, target, force label) or None before any submit."""
    with st.form("intervention"):
        scope = st.radio("Where", SCOPES, key="iv_scope")
        a, b, c = st.columns(3)
        block = a.selectbox("Block", BLOCKS, key="iv_block")
        stage = b.selectbox("Stage", list(STAGES), index=3, key="iv_stage")
        force = c.radio("Force the gates to", list(FORCE), key="iv_force")
        if st.form_submit_button("Run intervention"):
            target = {SCOPES[0]: block, SCOPES[1]: stage}.get(scope, "stage 5")
            value = FORCE[force] if scope != SCOPES[2] else 1.0
            st.session_state["iv_spec"] = (scope, target, value)
    return st.session_state.get("iv_spec")


def render_interventions(loaded: Loaded, model) -> None:
    st.markdown("Force a block's gates (or a whole stage's) to a constant and see how the "
                "prediction changes. 1 switches SE off; the block's mean keeps the overall "
                "scale but removes the channel selectivity. The paper reports that removing "
                "the last stage's SE costs little accuracy.")
    spec = intervention_ui()
    if spec is None:
        return
    scope, target, value = spec
    blocks = STAGES[target] if target in STAGES else (target,)
    st.markdown(f"**{', '.join(blocks)}** forced to "
                + ("each image's own mean gate" if value == "mean" else f"{value:g}"))
    for i, (photo, res) in enumerate(zip(loaded.photos, loaded.results)):
        gates = {b: float(res.gates[b].mean()) if value == "mean" else float(value)
                 for b in blocks}
        spec = repr((blocks, value))
        out = modified_run(photo, res, model, spec, hooks.Intervention(gates=gates))
        with st.expander(photo.name, expanded=True):
            render_topk_change(res.probs, out.probs, model, f"iv_top_{i}",
                               (photo.digest, net_key(model), spec))


def export_meta(model) -> dict:
    info = model.info
    return {"se_viz_version": se_viz.__version__, "arch": info.arch, "width": info.width,
            "reduction": info.reduction, "num_classes": info.num_classes,
            "weights": info.weights, "layout": info.layout, "weights_sha256": info.sha256 or "",
            "untrained": info.untrained, "preprocessing": model.preprocessing.describe()}


def render_export(loaded: Loaded, model) -> None:
    files, meta = loaded.names, export_meta(model)
    logits = np.stack([r.logits for r in loaded.results])
    gates = loaded.stacked()
    st.markdown(f"Gates of all 16 blocks, predictions and metadata for {len(files)} image(s). "
                "CSV: one row per value (file, array, index, value); NPZ: one (N, C) array per "
                "block; JSON: the same plus each image's top-5.")
    names = labels.imagenet_labels() if model.info.num_classes == 1000 else None
    makers: dict[str, Callable[[], bytes]] = {
        "CSV": lambda: export.to_csv(files, logits, gates, meta),
        "NPZ": lambda: export.to_npz(files, logits, gates, meta),
        "JSON": lambda: export.to_json(files, logits, gates, meta, names),
    }
    mimes = {"CSV": "text/csv", "NPZ": "application/octet-stream", "JSON": "application/json"}
    for col, (fmt, make) in zip(st.columns(3), makers.items()):
        with col:
            st.download_button(f"Download {fmt}", make, file_name=f"se_gates.{fmt.lower()}",
                               mime=mimes[fmt], key=f"export_{fmt}", on_click="ignore")
    st.markdown("**Figures as standalone HTML** (plotly.js inlined, works offline)")
    options = [f"Gate heatmap: {n}" for n in files] + ["Depth profile", "Figure 6 view"]
    which = st.selectbox("Figure", options, key="export_figure")
    st.download_button("Download figure (HTML)", lambda: figures.to_html(
        export_figure(loaded, which)).encode("utf-8"), file_name="se_viz_figure.html",
        mime="text/html", key="export_html", on_click="ignore")


def export_figure(loaded: Loaded, which: str):
    if which.startswith("Gate heatmap: "):
        name = which.removeprefix("Gate heatmap: ")
        return figures.gate_heatmap(loaded.result(name).gates, title=f"SE gates of {name}")
    if which == "Depth profile":
        return figures.stats_profile(analysis.stats_table(loaded.results[0].gates))
    return figures.figure6(loaded.stacked(), loaded.names, analysis.PAPER_FIG6_BLOCKS)


VIEWS = (render_overview, render_block_explorer, render_compare_blocks, render_compare_images,
         render_baseline, render_reduction, render_interventions, render_export)


# ----------------------------------------------------------------------------- page


def analyse_all(photos: list[Photo], model) -> Loaded:
    """Run every photo (cached); a bad one shows its error and is left out."""
    kept, results = [], []
    with st.spinner(f"Running {len(photos)} image(s) through the network ..."):
        for photo in photos:
            with guard(f"analysing '{photo.name}'"):
                results.append(analyse_image(photo, model))
                kept.append(photo)
    return Loaded(tuple(kept), tuple(results))


def render_welcome() -> None:
    st.info("Drop one or more photos into the sidebar, or pick a sample photo, to see the "
            "gates of all 16 SE blocks.")
    st.markdown(
        "Every SE block squeezes each channel to its mean, passes the vector through a small "
        "bottleneck (C -> C/r -> C) and a sigmoid, and multiplies each channel by the result: "
        "the **gate**, between 0 (channel switched off) and 1 (kept). Blocks are named as in "
        "the paper: SE_2_1 (first block of stage 2) to SE_5_3.")
    # Also loads the browser's Plotly bundle now, not when the first photo's heatmap arrives.
    chart(shared_figure("gate_curve", (), figures.gate_curve), "gate_curve", height=320)


def app() -> None:
    width = env_int("SE_VIZ_WIDTH", FULL_WIDTH, "64 (SE-ResNet-50) or 8 (fast demo)")
    with st.sidebar:
        photos = photos_ui()
        st.subheader("Model")
        arch = st.selectbox("Architecture", ARCHS, key="arch",
                            help="se_resnet50_vd: PaddleClas (deep stem, avg-pool shortcut); "
                                 "se_resnet50: the paper's / timm's layout.")
        status = st.container()
        choice = weights_ui()
        with st.expander("Advanced"):
            reduction = st.selectbox("Reduction ratio r of the weights", RATIOS,
                                     index=RATIOS.index(16), key="reduction",
                                     help="Pretrained SE-ResNet-50 files use r = 16.")
        baseline = baseline_ui()
    with status:
        model = get_model(choice, arch, width, reduction)
        render_weights_status(model, width)
    if model.info.untrained:
        st.warning("**Untrained weights: the attention shown means nothing.** Download the "
                   "pretrained file or choose a weights file in the sidebar.")
    if not photos:
        render_welcome()
        return
    loaded = analyse_all(photos, model)
    if not loaded.results:
        return
    for tab, label, view in zip(st.tabs(TABS, key="view", on_change="rerun"), TABS, VIEWS):
        if tab.open is False:
            continue
        with tab, guard(f"drawing the {label} view"):
            if view is render_baseline:
                view(loaded, model, baseline)
            else:
                view(loaded, model)


def main() -> None:
    st.set_page_config(page_title="SE gates of SE-ResNet-50", page_icon=":eye:", layout="wide")
    st.title("SE gates of SE-ResNet-50")
    st.caption("What every Squeeze-and-Excitation block attends to, for your photos.")
    start = time.perf_counter()
    with guard("building the page"):
        keep_paddle_eager()
        warm_imports()
        app()
    log.debug("page script ran in %.1f ms", 1000 * (time.perf_counter() - start))


if __name__ == "__main__":
    main()
