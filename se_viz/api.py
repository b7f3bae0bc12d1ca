"""The public entry points: build a model (with weights) and describe it."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from . import download
from .errors import WeightsError
from .images import PADDLECLAS_EVAL, TIMM_EVAL
from .model import ARCHS, SEResNet, init_seeded
from .weights import load_arrays, read_file


def build_model(arch: str = "se_resnet50_vd", weights: str | os.PathLike | None = None,
                reduction: float = 16, num_classes: int = 1000, *, width: int = 64,
                seed: int = 0, progress: Callable[[int, int | None], None] | None = None
                ) -> SEResNet:
    """An SE-ResNet-50 (``arch`` "se_resnet50_vd" or "se_resnet50") in eval mode.

    weights: None -> deterministic seeded initialisation (reported as untrained);
    a path to .pdparams / .safetensors (/.pth with torch) in any supported layout;
    "pretrained" -> the default ImageNet file, downloaded once into the cache.
    ``model.info`` describes the result; ``model.preprocessing`` is the matching
    evaluation preprocessing.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    model = SEResNet(arch, reduction=reduction, num_classes=num_classes, width=width)
    model.preprocessing = PADDLECLAS_EVAL
    if weights is None:
        init_seeded(model, seed)
        model.eval()
        return model
    pretrained = isinstance(weights, str) and weights == "pretrained"
    if pretrained:
        path = download.fetch(arch, progress=progress)
    else:
        path = Path(weights)
    arrays, meta, digest = read_file(path)
    layout = load_arrays(model, arrays, path.name)
    if layout == "timm":
        model.preprocessing = TIMM_EVAL
    model.info = replace(model.info, weights=str(path), layout=layout, sha256=digest,
                         pretrained=pretrained or _is_cached_pretrained(path),
                         extra={"metadata": meta, "fingerprint": file_fingerprint(path)})
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
    identical file is fine). Untrained models have no file and always pass.
    """
    info = model.info
    if info.untrained or info.sha256 is None:
        return
    if file_fingerprint(info.weights) == info.extra.get("fingerprint"):
        return
    from .download import sha256_file

    try:
        digest = sha256_file(info.weights)
    except OSError:
        digest = None
    if digest != info.sha256:
        raise WeightsError(f"{Path(info.weights).name} changed on disk after it was loaded "
                           f"(sha256 {info.sha256[:12]} -> {(digest or 'missing')[:12]}); "
                           "reload the model to use the new file.")
    info.extra["fingerprint"] = file_fingerprint(info.weights)


def _is_cached_pretrained(path: Path) -> bool:
    try:
        return any(path.resolve() == download.expected_path(a).resolve() for a in ARCHS)
    except OSError:
        return False


__all__ = ["build_model", "verify_weights", "file_fingerprint", "WeightsError"]
