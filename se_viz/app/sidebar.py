"""The sidebar: photos, the network, its weights and class names, and optional data (dataset
statistics).

``*_ui()`` functions draw widgets and return the user's choices; `get_model` turns the
choices into the shared model (built once per process per weights source).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import streamlit as st

from .. import images
from ..analysis.dataset_stats import DatasetStats
from ..arch import ARCHS, FAMILIES, REDUCTION_RATIOS, SE_IMPLS, SPECS
from ..blocks import stages
from ..errors import SEVizError, WeightsError
from ..labels import read_labels
from ..runs import Photo
from .common import GENERIC_ERROR, digest_of, log, unique
from .state import MAX_IMAGES, load_baseline, sample_bytes, sample_names

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"]
RATIOS = REDUCTION_RATIOS  # the r offered (one list, in se_viz.arch)
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
class LabelsChoice:
    """An uploaded class-names file (name, digest, data): one name a line, in class order."""

    name: str
    digest: str
    data: bytes = field(repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """What names the file in load_model's cache key."""
        return (self.digest, self.name)


@dataclass(frozen=True)
class NetworkChoice:
    """``reduction``: None for the weights' own r; ``width``: None for the network at its
    published size, else a narrow demo width (both SE-ResNet-50 options); ``labels``: the
    class names the user gave, None for the network's own."""

    arch: str
    weights: WeightsChoice
    reduction: float | None
    se_impl: str
    width: int | None
    labels: LabelsChoice | None = None


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


def labels_ui() -> LabelsChoice | None:
    """Class names for the weights' head (a fine-tuned head of K classes): a text file."""
    up = st.file_uploader("Class names (.txt, one per line)", type=["txt"],
                          key="labels_upload",
                          help="One name per line, in class-index order, as many lines as "
                               "the weights have classes. Without it: ImageNet's names for "
                               "1000 classes, else 'class i'.")
    return None if up is None else LabelsChoice(up.name, digest_of(up), up.getvalue())


def arch_label(arch: str) -> str:
    """An architecture in the picker: name, title, top-1 and whether its pretrained file is
    in the cache."""
    from ..engine import download

    spec = SPECS[arch]
    cached = "cached" if download.cached_path(arch) is not None else "not downloaded"
    return f"{arch} · {spec.title} · top-1 {spec.top1:.2f}% · {cached}"


def narrow_width(arch: str, width: int | None) -> int | None:
    """The demo width (SE_VIZ_WIDTH) for a network built at a width (SE-ResNet-50), None
    for the others: they are built at their own published widths, without a word."""
    from ..engine.weights import RESNET50_ARCHS

    return width if arch in RESNET50_ARCHS else None


def network_ui(width: int | None) -> NetworkChoice:
    family = st.selectbox("Family", FAMILIES, key="family",
                          help="Networks with channel attention, grouped by family.")
    arch = st.selectbox("Architecture", [a for a in ARCHS if SPECS[a].family == family],
                        key="arch", format_func=arch_label,
                        help="'cached': its pretrained file is downloaded and used "
                             "automatically; 'not downloaded': the button below fetches it.")
    weights = weights_ui()
    labels = labels_ui()
    with st.expander("Advanced"):
        reduction = st.selectbox("Reduction ratio r of the weights", (None, *RATIOS),
                                 key="reduction", format_func=lambda r: (
                                     "the network's own" if r is None else str(r)),
                                 help="For networks whose SE width is int(C / r): the r the "
                                      "weights were trained with. Other networks keep their "
                                      "own widths; ECA blocks have no r.")
        se_impl = st.radio("SE implementation", SE_IMPLS, horizontal=True, key="se_impl",
                           help="The SE block's two fully connected layers as nn.Linear "
                                "(PaddleClas) or 1x1 nn.Conv2D (timm): the same numbers.")
    return NetworkChoice(arch, weights, reduction, se_impl, narrow_width(arch, width), labels)


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
def load_model(arch: str, source: tuple, width: int | None, reduction: float | None,
               se_impl: str = "linear", labels: tuple | None = None,
               _data: bytes | None = None, _labels: bytes | None = None) -> Any:
    """The shared model for one weights source and class names; built once per process
    (runs lock it). ``width`` and ``reduction`` None: the network's own.

    source: ("untrained",) | ("pretrained", path, fingerprint) | ("path", path, fingerprint)
    | ("upload", sha256, name) with the bytes in ``_data`` (read as safetensors only). The
    file's (size, mtime_ns) fingerprint is in the key: a changed file is a new model.
    labels: (sha256, name) of a class-names file whose bytes are ``_labels``; names that do
    not fit the head (K classes, read from the weights) are left out (`get_model` says why).
    """
    from ..engine.build import build_model, model_from_bytes
    from ..engine.capture import prepare

    kind = source[0]
    size = {} if width is None else {"width": width}
    if kind == "upload":
        model = model_from_bytes(arch, _data, source[2], reduction=reduction, se_impl=se_impl,
                                 **size)
    else:
        model = build_model(arch, source[1] if kind in ("pretrained", "path") else None,
                            reduction, se_impl=se_impl, **size)
    if _labels is not None:
        try:
            names = read_labels(_labels, model.info.num_classes)
        except ValueError:
            pass
        else:
            model.info = replace(model.info, class_names=names)
    prepare(model)  # the fast graph (with feature maps), so the first upload is quick
    return model


def model_source(choice: WeightsChoice, arch: str, width: int | None) -> tuple:
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
    if cached is not None and width is None:
        return ("pretrained", str(cached), file_fingerprint(cached))
    return ("untrained",)


def checked_file_model(model: Any, args: tuple, labels: bytes | None = None) -> Any:
    """``model`` if its file on disk is unchanged, else that file loaded again. When the
    weights this session saw last changed, the stale model leaves the cache and the session
    is told. ``args``: load_model's (arch, source, width, reduction, se_impl, labels);
    ``labels``: the class-names bytes."""
    from ..engine.build import file_fingerprint, verify_weights

    arch, (kind, path, _), width, reduction, se_impl, names = args
    try:
        verify_weights(model)  # stat, then sha256 if size or mtime moved
    except WeightsError:
        load_model.clear(*args)
        args = (arch, (kind, path, file_fingerprint(path)), width, reduction, se_impl, names)
        model = load_model(*args, _labels=labels)
    seen = st.session_state.setdefault("_weights_seen", {})
    old, seen[path] = seen.get(path), (model.info.sha256, args)
    if old and old[0] != model.info.sha256:
        if old[1] != args:
            load_model.clear(*old[1])
        st.info(f"**{Path(path).name} changed on disk** (sha256 `{old[0][:12]}` -> "
                f"`{model.info.sha256[:12]}`) and was reloaded; results use the new weights.")
    return model


def get_model(choice: NetworkChoice) -> Any:
    """The model for the user's choice, with the user's class names; on a weights error,
    say why and fall back to untrained; an r or width the network does not take is said and
    left out; class names that do not fit its classes are said and left out."""
    model = weighted_model(choice)
    given = choice.labels
    if given is not None and model.info.class_names is None:
        try:
            read_labels(given.data, model.info.num_classes)
        except ValueError as exc:
            st.error(f"**{given.name}**: {exc}. The classes keep their default names.")
    return model


def weighted_model(choice: NetworkChoice) -> Any:
    """`get_model` before its class names are checked."""
    names = None if choice.labels is None else choice.labels.key
    data = None if choice.labels is None else choice.labels.data
    args = (choice.arch, ("untrained",), choice.width, choice.reduction, choice.se_impl, names)
    sized = choice.width is not None or choice.reduction is not None
    try:
        source = model_source(choice.weights, choice.arch, choice.width)
        args = (choice.arch, source, choice.width, choice.reduction, choice.se_impl, names)
        model = load_model(*args, _data=choice.weights.data, _labels=data)
        if source[0] in ("path", "pretrained"):
            model = checked_file_model(model, args, data)
        return model
    except SEVizError as exc:
        st.error(f"{exc} Showing untrained weights instead.")
    except Exception as exc:
        if sized and isinstance(exc, ValueError):  # an r or width it does not take
            st.info(f"{exc}. Showing `{choice.arch}` with its own widths.")
            return weighted_model(replace(choice, width=None, reduction=None))
        log.exception("loading weights %s failed", choice.weights)
        st.error(GENERIC_ERROR.format(what="loading the weights"))
    try:
        return load_model(choice.arch, ("untrained",), choice.width, choice.reduction,
                          choice.se_impl, names, _labels=data)
    except ValueError:  # an r or width it does not take
        if not sized:
            raise
        return load_model(choice.arch, ("untrained",), None, None, choice.se_impl, names,
                          _labels=data)


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


def render_network(info: Any) -> None:
    """What the network is made of: its attention blocks, their kinds and gates."""
    blocks = info.blocks
    kinds = sorted({b.kind.upper() for b in blocks})
    gates = sorted({b.gate.kind.replace("hardsigmoid", "hard sigmoid") for b in blocks})
    n = len(stages(blocks))
    names = info.class_names
    named = (f" named {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
             if names else "")
    st.caption(f"`{info.arch}` ({SPECS[info.arch].family}): {len(blocks)} "
               f"{'/'.join(kinds)} attention blocks in {n} stage{'s' if n > 1 else ''}, "
               f"{' and '.join(gates)} gates; {info.num_classes} classes{named}.")


def render_weights_status(model: Any, width: int | None) -> None:
    from ..engine import download

    info = model.info
    render_network(info)
    narrow = width is not None and info.width == width
    if narrow:
        st.info(f"**Narrow demo model** (SE_VIZ_WIDTH={width}): a narrow network "
                "with seeded weights. Fast for tests and demos; unset SE_VIZ_WIDTH for the "
                "full-size network.")
    if info.untrained:
        st.warning("**Untrained weights: the attention shown means nothing.**")
        if st.button("Download pretrained weights", key="download",
                     help=f"Downloads {download.source_url(info.arch)} into "
                          f"{download.destination_folder(info.arch)}"):
            download_weights(info.arch)
        if narrow and download.cached_path(info.arch) is not None:
            st.caption("The pretrained file is in the cache, but it only fits the full-size "
                       "model (unset SE_VIZ_WIDTH).")
        if "download_error" in st.session_state:
            st.error(st.session_state["download_error"])
    else:
        name = Path(info.weights.removeprefix("upload:")).name
        st.success(f"**{name}**  \nlayout `{info.layout}`, r = {info.reduction:g}, "
                   f"sha256 `{(info.sha256 or '')[:12]}`"
                   + ("  \npretrained ImageNet weights" if info.pretrained else ""))
