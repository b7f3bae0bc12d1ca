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
                         extra={"metadata": meta})
    model.eval()
    return model


def _is_cached_pretrained(path: Path) -> bool:
    try:
        return any(path.resolve() == download.expected_path(a).resolve() for a in ARCHS)
    except OSError:
        return False


__all__ = ["build_model", "WeightsError"]
