"""The app's views, one module each: its tab label (``LABEL``) and ``render(page)`` side by
side. `VIEWS` is the one table of them, in tab order; a tab's label greps to its module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import (block_explorer, channel_atlas, class_baseline, class_evidence, compare_blocks,
               compare_images, export, interventions, overview, reduction, se_block)


@dataclass(frozen=True)
class View:
    label: str
    render: Callable


VIEWS = tuple(View(m.LABEL, m.render) for m in (
    overview, block_explorer, se_block, compare_blocks, compare_images, class_baseline,
    channel_atlas, reduction, interventions, class_evidence, export))
LABELS = tuple(v.label for v in VIEWS)
