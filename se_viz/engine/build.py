"""Build a model with its weights, and check later that the weights file is unchanged."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from paddle import nn

from ..arch import check_arch, preprocessing_for
from ..errors import WeightsError
from ..labels import read_labels
from . import download, networks
from .weights import (RESNET50_ARCHS, classes_in_file, init_seeded, load_arrays, read_bytes,
                      read_file)


def build_model(arch: str = "se_resnet50_vd", weights: str | os.PathLike | None = None,
                reduction: float | None = None, num_classes: int | None = None, *,
                width: int | None = None, seed: int = 0, se_impl: str = "linear",
                progress: Callable[[int, int | None], None] | None = None,
                se_weights: str | os.PathLike | None = None,
                labels: str | os.PathLike | bytes | Sequence[str] | None = None) -> nn.Layer:
    """A network ``arch`` (any of `se_viz.arch.ARCHS`) in eval mode, with its weights.

    weights: None -> deterministic seeded initialisation (reported as untrained);
    a path to .pdparams / .safetensors (/ PyTorch .pth, read without torch) in the network's layout (and, for
    SE-ResNet-50, either of its layouts), loaded strictly; "pretrained" -> the default
    ImageNet file, downloaded once into the cache.
    num_classes: None -> read from the file's classifier (a fine-tuned head of K classes
    loads as it is), 1000 without a file. labels: the class names (a text file, one a line,
    or a list), kept in ``model.info.class_names``.
    reduction, width, se_impl: SE-ResNet-50 only (r, default 16; first-stage width, default
    its published 64; the SE layers as "linear" or 1x1 "conv"); other networks have their
    own fixed widths.
    se_weights: an SE-only file of ``se-viz refit`` (OUT/se_r8.safetensors) refit on these
    base weights: the network then has its SE blocks at the file's r.
    ``model.info`` describes the result (``info.blocks``: its attention blocks);
    ``model.preprocessing`` is the matching evaluation preprocessing.
    """
    options = _options(check_arch(arch), reduction, width, se_impl)
    if weights is None:
        model = networks.build(arch, num_classes or 1000, **options)
        init_seeded(model, seed)
        # no file: PaddleClas's for the SE-ResNet-50 layouts (as before), else the network's own
        model.preprocessing = preprocessing_for("paddleclas", arch)
        model.info = replace(model.info, extra={"seed": seed})
    else:
        pretrained = isinstance(weights, str) and weights == "pretrained"
        path = download.fetch(arch, progress=progress) if pretrained else Path(weights)
        arrays, meta, digest = read_file(path)
        model = networks.build(arch, num_classes or classes_in_file(arrays, arch) or 1000,
                               **options)
        layout = load_arrays(model, arrays, path.name)
        model.preprocessing = preprocessing_for(layout, arch)
        model.info = replace(model.info, weights=str(path), layout=layout, sha256=digest,
                             pretrained=pretrained or _is_cached_pretrained(path),
                             extra={"metadata": meta, "fingerprint": file_fingerprint(path)})
    if labels is not None:
        model.info = replace(model.info, class_names=read_labels(labels,
                                                                 model.info.num_classes))
    model.eval()
    return _with_se(model, se_weights)


def _options(arch: str, reduction: float | None, width: int | None, se_impl: str) -> dict:
    """The build options ``arch`` takes: r, width and SE form are SE-ResNet-50's."""
    if arch in RESNET50_ARCHS:
        return {"reduction": 16 if reduction is None else reduction, "se_impl": se_impl,
                **({} if width is None else {"width": width})}
    if reduction is not None or width is not None:
        raise ValueError(f"reduction and width apply to {' and '.join(RESNET50_ARCHS)} only; "
                         f"{arch} is built with its own published widths (refit other SE "
                         "widths with 'se-viz refit')")
    return {}


def _with_se(model: nn.Layer, se_weights: str | os.PathLike | None) -> nn.Layer:
    """``model`` with the SE blocks of an SE-only file (`se_viz.engine.se_weights`)."""
    if se_weights is None:
        return model
    from .se_weights import load_se_file

    return load_se_file(model, se_weights)


def model_from_bytes(arch: str, data: bytes, name: str, *, reduction: float | None = None,
                     width: int | None = None, se_impl: str = "linear",
                     num_classes: int | None = None) -> nn.Layer:
    """A model with uploaded weights: ``data`` is only ever read as safetensors."""
    arrays, meta, digest = read_bytes(data, name)
    options = _options(check_arch(arch), reduction, width, se_impl)
    model = networks.build(arch, num_classes or classes_in_file(arrays, arch) or 1000,
                           **options)
    layout = load_arrays(model, arrays, name)
    model.preprocessing = preprocessing_for(layout, arch)
    model.info = replace(model.info, weights=f"upload:{name}", layout=layout, sha256=digest,
                         extra={"metadata": meta})
    model.eval()
    return model


def file_fingerprint(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime_ns) of a file: a cheap change detector; (-1, -1) if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def verify_weights(model: nn.Layer) -> None:
    """Raise WeightsError if the model's weights file changed on disk since it was loaded.

    A cheap stat check first; when size or mtime moved, the sha256 decides (a touched but
    identical file is fine). Untrained models and uploads have no file and always pass.
    """
    info = model.info
    if info.untrained or info.sha256 is None or "fingerprint" not in info.extra:
        return
    if file_fingerprint(info.weights) == info.extra.get("fingerprint"):
        return
    try:
        digest = download.sha256_file(info.weights)
    except OSError:
        digest = None
    if digest != info.sha256:
        raise WeightsError(f"{Path(info.weights).name} changed on disk after it was loaded "
                           f"(sha256 {info.sha256[:12]} -> {(digest or 'missing')[:12]}); "
                           "reload the model to use the new file.")
    info.extra["fingerprint"] = file_fingerprint(info.weights)


def _is_cached_pretrained(path: Path) -> bool:
    """The file is a known pretrained file in se_viz's or the Hugging Face cache."""
    return download.is_pretrained_file(path)
