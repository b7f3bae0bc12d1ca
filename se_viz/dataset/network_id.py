"""Which network made a dataset run: its identity in the manifest, compared with a model.

The identity holds the network's effective values (``ModelInfo``'s, not the settings'
defaults): arch, r, classes, first-stage width, weights sha256 (or the seed of untrained
weights), an SE refit file's sha256, and the attention blocks (name, channels). Standard
library only.
"""

from __future__ import annotations

import json
from typing import Any

FIELDS = {"arch": "arch", "reduction": "r", "num_classes": "classes", "width": "width",
          "weights_sha256": "weights", "seed": "seed", "se_sha256": "SE refit weights",
          "blocks": "blocks"}


def network_identity(info: Any) -> dict:
    """The identity of the network ``info`` (a ``ModelInfo``) describes, JSON-ready."""
    return json.loads(json.dumps({
        "arch": info.arch, "reduction": float(info.reduction),
        "num_classes": int(info.num_classes), "width": int(info.width),
        "weights_sha256": info.sha256,
        "seed": info.extra.get("seed") if info.sha256 is None else None,
        "se_sha256": info.extra.get("se_sha256") if info.se_weights else None,
        "blocks": [[b.name, int(b.channels)] for b in info.blocks]}))


def identity_from_manifest(manifest: dict) -> dict:
    """The manifest's identity; a manifest older than the field gives what its key says
    (None where the key held a default: not compared)."""
    if "network" in manifest:
        return manifest["network"]
    key = manifest["key"]
    return {"arch": key["arch"], "reduction": key.get("reduction"),
            "num_classes": key.get("num_classes"), "width": key.get("width"),
            "weights_sha256": key.get("weights_sha256"), "seed": key.get("seed"),
            "se_sha256": None, "blocks": [list(b) for b in zip(key["blocks"], key["channels"])]}


def network_difference(a: dict, b: dict) -> list[str]:
    """Names of the fields in which identities ``a`` and ``b`` differ (None: unknown)."""
    return [label for field, label in FIELDS.items()
            if a.get(field) is not None and b.get(field) is not None
            and a.get(field) != b.get(field)
            or field in ("weights_sha256", "se_sha256") and a.get(field) != b.get(field)]


def describe_network(n: dict) -> str:
    """One line, e.g. 'se_resnet50_vd (r 16, 1000 classes, width 64, weights 1a2b3c4d5e6f,
    16 blocks)'."""
    weights = (f"weights {n['weights_sha256'][:12]}" if n.get("weights_sha256")
               else f"untrained weights, seed {n.get('seed')}")
    parts = [f"r {n['reduction']:g}" if n.get("reduction") is not None else None,
             f"{n['num_classes']} classes" if n.get("num_classes") is not None else None,
             f"width {n['width']}" if n.get("width") is not None else None, weights,
             f"SE refit {n['se_sha256'][:12]}" if n.get("se_sha256") else None,
             f"{len(n['blocks'])} blocks"]
    return f"{n['arch']} ({', '.join(p for p in parts if p)})"
