"""Facts from the SENet paper (Hu et al., TPAMI 2020) that the views compare against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ..blocks import AttentionBlock, stages


class PaperRow(NamedTuple):
    """One row of the paper's reduction-ratio table (errors in %, params in millions)."""

    reduction: int | str
    top1_err: float
    top5_err: float
    params_m: float


PAPER_CITATION = ("Hu, Shen, Albanie, Sun, Wu. Squeeze-and-Excitation Networks. IEEE TPAMI "
                  "42(8), 2020, Table 10: SE-ResNet-50 on ImageNet, single-crop 224x224 "
                  "error (%) and parameters at different reduction ratios r.")
PAPER_REDUCTION_TABLE: tuple[PaperRow, ...] = (
    PaperRow(2, 22.29, 6.00, 45.7),
    PaperRow(4, 22.25, 6.09, 35.7),
    PaperRow(8, 22.26, 5.99, 30.7),
    PaperRow(16, 22.28, 6.03, 28.1),
    PaperRow(32, 22.72, 6.20, 26.9),
    PaperRow("ResNet-50", 23.30, 6.55, 25.6),
)
# the networks of the paper's tables: SE-ResNet-50 in se_viz's two layouts and the authors' own
PAPER_ARCHS = ("se_resnet50_vd", "se_resnet50", "legacy_seresnet50")
PAPER_FIG6_BLOCKS = ("SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1", "SE_5_2", "SE_5_3")
PAPER_FIG6_FINDING = (
    "In the paper's Fig. 6 (goldfish, pug, plane, cliff) the early blocks' gates are nearly "
    "the same for every class, so early SE is class-agnostic, while deeper blocks become "
    "class-specific; SE_5_2 saturates near 1 (almost an identity) and SE_5_3 differs across "
    "classes mostly in scale, so removing the last stage's SE costs little accuracy.")


def figure6_blocks(blocks: Sequence[AttentionBlock], arch: str = "", most: int = 6
                   ) -> tuple[str, ...]:
    """The blocks of the Fig. 6 view for a network: the paper's six for the paper's
    SE-ResNet-50 (``arch`` in `PAPER_ARCHS`), else the last block of every stage, plus the
    first of the last stage, at most ``most`` of them, in forward order."""
    names = [b.name for b in blocks]
    if arch in PAPER_ARCHS and all(b in names for b in PAPER_FIG6_BLOCKS):
        return PAPER_FIG6_BLOCKS
    per_stage = list(stages(blocks).values())
    chosen = {s[-1] for s in per_stage} | ({per_stage[-1][0]} if per_stage else set())
    picked = [n for n in names if n in chosen]
    return tuple(picked[-most:])
