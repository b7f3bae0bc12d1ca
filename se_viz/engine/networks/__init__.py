"""Every network se_viz builds, one module per family; each describes its attention blocks.

The contract every network keeps (tests/test_networks.py checks it for each arch):

* ``factory(num_classes=1000, **options) -> nn.Layer`` in eval mode, untrained (random
  Paddle initialisation; `se_viz.build_model` adds weights);
* ``model.info``: a `se_viz.arch.ModelInfo` whose ``blocks`` lists the network's
  `se_viz.blocks.AttentionBlock` in forward order, made where the blocks are built;
* the layer at each block's ``path`` is a `se_viz.engine.attention.SEModule` or
  `EcaModule` (the recorder hooks its ``pool``, ``gate`` and ``act``);
* ``model.head_key``: the state-dict key of the classifier's weight (Paddle layout
  [in, out]), from which a file's number of classes is read;
* module names are those of the family's weight files (timm's or PaddleClas's), so a file
  loads by renaming BN statistics and transposing Linear weights only.

Modules: resnet (SE-ResNet-50, the two original layouts), resnet_family (SE-ResNeXt,
legacy SENet, ECA-ResNet-D), mobile (EfficientNet, MobileNetV3, LCNet, timm's and
PaddleClas's), regnet (RegNetY).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from paddle import nn

from ...arch import SPECS, check_arch


def factory(arch: str):
    """The function that builds ``arch`` (imports its family's module on first use)."""
    spec = SPECS[check_arch(arch)]
    module = importlib.import_module(f"{__name__}.{spec.module}")
    return getattr(module, arch)


def build(arch: str, num_classes: int = 1000, **options: Any) -> nn.Layer:
    """An untrained ``arch`` in eval mode with ``num_classes`` outputs."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    model = factory(arch)(num_classes=int(num_classes), **options)
    model.eval()
    return model


@functools.lru_cache(maxsize=64)
def _lazy(arch: str, num_classes: int) -> tuple[dict[str, tuple], str]:
    import paddle

    with paddle.LazyGuard():  # no parameter memory: names and shapes only
        model = factory(arch)(num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, model.head_key


def signature(arch: str, num_classes: int | None = None) -> dict[str, tuple]:
    """``arch``'s state-dict keys and shapes (Paddle naming), without allocating weights."""
    return dict(_lazy(arch, int(num_classes or 1000))[0])


def head_key(arch: str) -> tuple[str, str]:
    """(the classifier weight's key in Paddle naming, the same in a torch file's naming)."""
    key = _lazy(arch, 1000)[1]
    if arch == "se_resnet50":
        return key, "fc.weight"  # timm's seresnet50 files load through a key map
    return key, key


def build_like(info: Any) -> nn.Layer:
    """An untrained network of the same arch, classes and options as ``info`` describes."""
    options = ({"reduction": info.reduction, "width": info.width, "se_impl": info.se_impl}
               if info.arch in ("se_resnet50_vd", "se_resnet50") else {})
    return build(info.arch, info.num_classes, **options)
