"""se_viz: see what Squeeze-and-Excitation attention does inside SE-family CNNs (PaddlePaddle).

Public API::

    model = se_viz.build_model("se_resnet50_vd", weights="pretrained")
    cap = se_viz.capture(model, [PIL images] or (N, 3, H, W) float32)
    cap.logits  # (N, 1000);  cap.gates["SE_2_1"]  # (N, 256) in [0, 1]
    se_viz.plots.heatmap(cap, 0)  # a plotly Figure (notebooks)

Importing se_viz is cheap: paddle is imported when a model is built or a capture runs.
"""

from __future__ import annotations

import warnings as _warnings

from .errors import InvalidImageError, SEVizError, WeightsError
from .results import Capture, DeletionCurve, Evidence, FeatureMaps, Intervention
from .version import __version__

# Paddle warns at import time that ccache (a C++ build cache) is missing; irrelevant here.
_warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)


__all__ = ["build_model", "capture", "explain", "deletion", "Capture", "Evidence",
           "DeletionCurve", "FeatureMaps", "Intervention",
           "InvalidImageError", "WeightsError", "SEVizError", "load_image", "decode_image",
           "BLOCK_NAMES", "plots", "__version__"]

_LAZY = {"build_model": ("engine.build", "build_model"),
         "capture": ("engine.capture", "capture"),
         "explain": ("engine.evidence", "explain"),
         "deletion": ("engine.evidence", "deletion"),
         "load_image": ("images", "load_image"),
         "decode_image": ("images", "decode_image")}


def __getattr__(name: str):  # lazy: `import se_viz` stays cheap until paddle is needed
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value  # resolved once: `se_viz.capture` is on every call's path
        return value
    if name == "plots":
        return importlib.import_module(".plots", __name__)
    if name == "BLOCK_NAMES":  # kept for old callers: SE-ResNet-50's names only
        _warnings.warn("se_viz.BLOCK_NAMES lists SE-ResNet-50's blocks only; read "
                       "model.info.blocks (every network's own list)", DeprecationWarning,
                       stacklevel=2)
        return importlib.import_module(".arch", __name__).BLOCK_NAMES
    raise AttributeError(f"module 'se_viz' has no attribute {name!r}")
