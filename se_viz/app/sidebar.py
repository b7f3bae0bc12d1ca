"""The sidebar: photos, the network and its weights, and optional data (dataset statistics).

``*_ui()`` functions draw widgets and return the user's choices; `get_model` turns the
choices into the shared model (built once per process per weights source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from .. import images
from ..analysis.dataset_stats import DatasetStats
from ..arch import ARCHS, SE_IMPLS
from ..errors import SEVizError, WeightsError
from ..runs import Photo
from .common import GENERIC_ERROR, digest_of, log, unique
from .state import (FULL_WIDTH, MAX_IMAGES, load_baseline, sample_bytes, sample_names)

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"]
RATIOS = (1, 2, 4, 8, 16, 32, 64)
UPLOAD_HELP = ("PNG, JPEG, WebP, BMP, TIFF or GIF; several at once. Limits: {mb} MB per file, "
               f"{images.MAX_BYTES // 2**20} MB and {images.MAX_PIXELS // 10**6} megapixels per "
               f"image; the first {MAX_IMAGES} different images are analysed, the rest listed.")


@dataclass(frozen=True)
class WeightsChoice:
    """kind "auto" (pretrained if cached, else untrained), "upload" (name, digest, data of a
    .safetensors file) or "path" (name = the path typed in)."""

    kind: str = "auto"
    name: str = ""
    digest: str = ""
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NetworkChoice:
    arch: str
    weights: WeightsChoice
    reduction: float
    se_impl: str
    width: int


# ----------------------------------------------------------------------------- widgets
def photos_ui() -> list[Photo]:
    """Sample photos and uploads, de-duplicated by content, with unique names."""
    st.subheader("Photos")
    mb = st.get_option("server.maxUploadSize")
    uploads = st.file_uploader("Your photos", type=UPLOAD_TYPES, accept_multiple_files=True,
                               key="uploads", help=UPLOAD_HELP.format(mb=mb)) or []
    chosen = st.multiselect("Sample photos", sample_names(), key="samples")
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


def network_ui(width: int) -> NetworkChoice:
    arch = st.selectbox("Architecture", ARCHS, key="arch",
                        help="se_resnet50_vd: PaddleClas (deep stem, avg-pool shortcut); "
                             "se_resnet50: the paper's / timm's layout.")
    weights = weights_ui()
    with st.expander("Advanced"):
        reduction = st.selectbox("Reduction ratio r of the weights", RATIOS,
                                 index=RATIOS.index(16), key="reduction",
                                 help="Pretrained SE-ResNet-50 files use r = 16.")
        se_impl = st.radio("SE implementation", SE_IMPLS, horizontal=True, key="se_impl",
                           help="The SE block's two fully connected layers as nn.Linear "
                                "(PaddleClas) or 1x1 nn.Conv2D (timm): the same numbers.")
    return NetworkChoice(arch, weights, reduction, se_impl, width)


def baseline_ui() -> DatasetStats | None:
    """An optional class baseline: the stats.npz that `se-viz analyze` wrote (upload or path)."""
    from ..engine.build import file_fingerprint

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


# ----------------------------------------------------------------------------- the model
@st.cache_resource(max_entries=4, show_spinner="Building the model and its fast graph ...")
def load_model(arch: str, source: tuple, width: int, reduction: float, se_impl: str = "linear",
               _data: bytes | None = None) -> Any:
    """The shared model for one weights source; built once per process (runs lock it).

    source: ("untrained",) | ("pretrained", path, fingerprint) | ("path", path, fingerprint)
    | ("upload", sha256, name) with the bytes in ``_data`` (read as safetensors only). The
    file's (size, mtime_ns) fingerprint is in the key: a changed file is a new model.
    """
    from ..engine.build import build_model, model_from_bytes
    from ..engine.capture import prepare

    kind = source[0]
    if kind == "upload":
        model = model_from_bytes(arch, _data, source[2], reduction=reduction, width=width,
                                 se_impl=se_impl)
    else:
        model = build_model(arch, source[1] if kind in ("pretrained", "path") else None,
                            reduction, width=width, se_impl=se_impl)
    prepare(model)  # the fast graph (with feature maps), so the first upload is quick
    return model


def model_source(choice: WeightsChoice, arch: str, width: int) -> tuple:
    """load_model's ``source`` for the choice; a file's (size, mtime_ns) is part of it."""
    from ..engine import download
    from ..engine.build import file_fingerprint

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


def checked_file_model(model: Any, args: tuple) -> Any:
    """``model`` if its file on disk is unchanged, else that file loaded again. When the
    weights this session saw last changed, the stale model leaves the cache and the session
    is told. ``args``: load_model's (arch, source, width, reduction, se_impl)."""
    from ..engine.build import file_fingerprint, verify_weights

    arch, (kind, path, _), width, reduction, se_impl = args
    try:
        verify_weights(model)  # stat, then sha256 if size or mtime moved
    except WeightsError:
        load_model.clear(*args)
        args = (arch, (kind, path, file_fingerprint(path)), width, reduction, se_impl)
        model = load_model(*args)
    seen = st.session_state.setdefault("_weights_seen", {})
    old, seen[path] = seen.get(path), (model.info.sha256, args)
    if old and old[0] != model.info.sha256:
        if old[1] != args:
            load_model.clear(*old[1])
        st.info(f"**{Path(path).name} changed on disk** (sha256 `{old[0][:12]}` -> "
                f"`{model.info.sha256[:12]}`) and was reloaded; results use the new weights.")
    return model


def get_model(choice: NetworkChoice) -> Any:
    """The model for the user's choice; on a weights error, say why and fall back to untrained."""
    args = (choice.arch, ("untrained",), choice.width, choice.reduction, choice.se_impl)
    try:
        source = model_source(choice.weights, choice.arch, choice.width)
        args = (choice.arch, source, choice.width, choice.reduction, choice.se_impl)
        model = load_model(*args, _data=choice.weights.data)
        if source[0] in ("path", "pretrained"):
            model = checked_file_model(model, args)
        return model
    except SEVizError as exc:
        st.error(f"{exc} Showing untrained weights instead.")
    except Exception:
        log.exception("loading weights %s failed", choice.weights)
        st.error(GENERIC_ERROR.format(what="loading the weights"))
    return load_model(choice.arch, ("untrained",), choice.width, choice.reduction,
                      choice.se_impl)


def download_weights(arch: str) -> None:
    """Fetch the pretrained file with a progress bar; a failure (offline) is shown, not raised."""
    from ..engine import download

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


def render_weights_status(model: Any, width: int) -> None:
    from ..engine import download

    info = model.info
    if width != FULL_WIDTH:
        st.info(f"**Narrow demo model** (SE_VIZ_WIDTH={width}): {width} instead of 64 "
                "channels in the first stage, seeded weights. Fast for tests and demos; "
                "unset SE_VIZ_WIDTH for the real SE-ResNet-50.")
    if info.untrained:
        st.warning("**Untrained weights: the attention shown means nothing.**")
        if st.button("Download pretrained weights", key="download",
                     help=f"Downloads {download.source_url(info.arch)} into "
                          f"{download.destination_folder(info.arch)}"):
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
