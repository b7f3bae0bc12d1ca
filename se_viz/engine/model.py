"""A built network seen through its own description: attention layers, parameters.

Every network (`se_viz.engine.networks`) lists its attention blocks in ``model.info.blocks``;
this module finds the layers behind that list. Nothing here knows a family.
"""

from __future__ import annotations

import numpy as np
from paddle import nn

from ..blocks import AttentionBlock
from .attention import EcaModule, SEModule


def attention_layers(model: nn.Layer) -> list[tuple[AttentionBlock, nn.Layer]]:
    """(block description, its attention layer) for every attention block, forward order.

    TypeError for a layer that is not an se_viz network (no ``info.blocks``)."""
    blocks = getattr(getattr(model, "info", None), "blocks", None)
    if not blocks:
        raise TypeError(f"expected an se_viz network (se_viz.build_model), got "
                        f"{type(model).__name__}")
    subs = dict(model.named_sublayers())
    out = []
    for b in blocks:
        layer = subs.get(b.path)
        if not isinstance(layer, (SEModule, EcaModule)):
            raise TypeError(f"{type(model).__name__}: no attention layer at {b.path!r} "
                            f"(found {type(layer).__name__})")
        out.append((b, layer))
    return out


def se_blocks(model: nn.Layer) -> list[tuple[str, str, nn.Layer]]:
    """(block name, module path, attention layer) for every block, in forward order."""
    return [(b.name, b.path, layer) for b, layer in attention_layers(model)]


def count_parameters(layer: nn.Layer) -> int:
    """Number of trainable parameters (BN running statistics excluded)."""
    return int(sum(int(np.prod(p.shape)) for p in layer.parameters() if p.trainable))
