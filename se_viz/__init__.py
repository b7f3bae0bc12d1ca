"""se_viz: see what Squeeze-and-Excitation attention does inside SE-ResNet-50 (PaddlePaddle).

Public API::

    model = se_viz.build_model("se_resnet50_vd", weights="pretrained")
    cap = se_viz.capture(model, [PIL images] or (N, 3, H, W) float32)
    cap.logits  # (N, 1000);  cap.gates["SE_2_1"]  # (N, 256) in [0, 1]
"""

from __future__ import annotations

import warnings as _warnings

from .errors import InvalidImageError, SEVizError, WeightsError

# Paddle warns at import time that ccache (a C++ build cache) is missing; irrelevant here.
_warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

__version__ = "0.1.0"

__all__ = ["build_model", "capture", "Capture", "FeatureMaps", "Intervention",
           "InvalidImageError", "WeightsError", "SEVizError", "load_image", "decode_image",
           "BLOCK_NAMES", "__version__"]

BLOCK_NAMES = tuple(f"SE_{s + 2}_{i + 1}" for s, d in enumerate((3, 4, 6, 3)) for i in range(d))


def __getattr__(name: str):  # lazy: `import se_viz` stays cheap until paddle is needed
    if name == "build_model":
        from .api import build_model
        return build_model
    if name in ("capture", "Capture", "FeatureMaps", "Intervention"):
        from . import hooks
        return getattr(hooks, name)
    if name in ("load_image", "decode_image"):
        from . import images
        return getattr(images, name)
    raise AttributeError(f"module 'se_viz' has no attribute {name!r}")
