"""The state one refit run (`se_viz.refit.run`) shares with its steps (`steps`): its
settings and its context. Its own module, so that the run and its steps import it without
importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset.analyze import RunOptions
from ..dataset.files import FileList
from .pairs import Pairs


@dataclass(frozen=True)
class RefitSettings:
    """Everything that changes the numbers; a resumed run must use the same values (the
    list of r is free: later calls may add more)."""

    arch: str = "se_resnet50_vd"
    weights: str | None = None  # a path, "pretrained", or None (seeded, untrained)
    reduction: float | None = None       # r of the base network
    num_classes: int | None = None  # None: from the weights file (1000 without one)
    width: int | None = None        # SE-ResNet-50 only (None: the network's own)
    seed: int = 0
    image_size: int | None = None
    batch_size: int = 16
    shard_size: int = 256
    limit_per_class: int | None = None
    holdout: float = 0.2
    steps: int = 400            # full-batch Adam steps of each block's fit
    lr: float = 3e-3
    finetune: bool = False
    finetune_epochs: int = 2
    finetune_lr: float = 1e-4

    def fit_key(self) -> dict:
        """The fitting settings that go into the manifest's key."""
        keys = ["holdout", "seed", "steps", "lr", "finetune"] + \
            (["finetune_epochs", "finetune_lr"] if self.finetune else [])
        from ..analysis.se_fit import FitSettings

        # the fit's arithmetic is part of the key: a folder fitted by another version's
        # optimiser (float64 Adam before "fit": "float32-adam") is refit, not resumed
        return {"refit": {**{k: getattr(self, k) for k in keys},
                          "fit": f"{FitSettings().dtype}-adam"}}



@dataclass
class Context:
    """One run's shared state: the folder, the base network, the split and the pairs."""

    out: Path
    files: FileList
    settings: RefitSettings
    run: RunOptions
    model: Any
    pre: Any
    manifest: dict
    pairs: Pairs = field(default=None)  # logits and index of every usable image
    train: np.ndarray = field(default=None)  # file positions
    held: np.ndarray = field(default=None)

    @property
    def key(self) -> str:
        return self.manifest["key_sha256"]

    def blocks(self) -> list[tuple[str, int]]:
        key = self.manifest["key"]
        return list(zip(key["blocks"], key["channels"]))
