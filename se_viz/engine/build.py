"""Build a model with its weights, and check later that the weights file is unchanged."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..arch import check_arch, preprocessing_for
from ..images import PADDLECLAS_EVAL
from ..errors import WeightsError
from . import download
from .model import FACTORIES, SEResNet
from .weights import init_seeded, load_arrays, read_bytes, read_file


def build_model(arch: str = "se_resnet50_vd", weights: str | os.PathLike | None = None,
                reduction: float = 16, num_classes: int = 1000, *, width: int = 64,
                seed: int = 0, se_impl: str = "linear",
                progress: Callable[[int, int | None], None] | None = None,
                se_weights: str | os.PathLike | None = None) -> SEResNet:
    """An SE-ResNet-50 (``arch`` "se_resnet50_vd" or "se_resnet50") in eval mode.

    weights: None -> deterministic seeded initialisation (reported as untrained);
    a path to .pdparams / .safetensors (/.pth with torch) in any supported layout;
    "pretrained" -> the default ImageNet file, downloaded once into the cache.
    se_impl: the SE block's fully connected layers as "linear" (nn.Linear, PaddleClas) or
    "conv" (1x1 nn.Conv2D, timm); the same numbers from the same files.
    se_weights: an SE-only file of ``se-viz refit`` (OUT/se_r8.safetensors) refit on these
    base weights (``reduction`` is the base's r): the network then has its SE blocks at the
    file's r (WeightsError for a file refit on other weights, arch or shapes).
    ``model.info`` describes the result; ``model.preprocessing`` is the matching
    evaluation preprocessing.
    """
    model = FACTORIES[check_arch(arch)](reduction, num_classes, width, se_impl)
    model.preprocessing = PADDLECLAS_EVAL
    if weights is None:
        init_seeded(model, seed)
        model.info = replace(model.info, extra={"seed": seed})
        model.eval()
        return _with_se(model, se_weights)
    pretrained = isinstance(weights, str) and weights == "pretrained"
    path = download.fetch(arch, progress=progress) if pretrained else Path(weights)
    arrays, meta, digest = read_file(path)
    layout = load_arrays(model, arrays, path.name)
    model.preprocessing = preprocessing_for(layout)
    model.info = replace(model.info, weights=str(path), layout=layout, sha256=digest,
                         pretrained=pretrained or _is_cached_pretrained(path),
                         extra={"metadata": meta, "fingerprint": file_fingerprint(path)})
    model.eval()
    return _with_se(model, se_weights)


def _with_se(model: SEResNet, se_weights: str | os.PathLike | None) -> SEResNet:
    """``model`` with the SE blocks of an SE-only file (`se_viz.engine.se_weights`)."""
    if se_weights is None:
        return model
    from .se_weights import load_se_file

    return load_se_file(model, se_weights)


def model_from_bytes(arch: str, data: bytes, name: str, *, reduction: float = 16,
                     width: int = 64, se_impl: str = "linear") -> SEResNet:
    """A model with uploaded weights: ``data`` is only ever read as safetensors."""
    arrays, meta, digest = read_bytes(data, name)
    model = FACTORIES[check_arch(arch)](reduction, 1000, width, se_impl)
    layout = load_arrays(model, arrays, name)
    model.preprocessing = preprocessing_for(layout)
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


def verify_weights(model: SEResNet) -> None:
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
