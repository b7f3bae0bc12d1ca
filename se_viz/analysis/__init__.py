"""Numbers about captured gates, numpy only (no paddle, no plotly).

    stats.py          per-block statistics, channel orders, comparisons between images/blocks
    excitation.py     the SE MLP in numpy, written once (gate and activation per block)
    paper.py          the SENet paper's tables and findings
    reduction.py      SE hidden-unit importance and masks emulating a narrower bottleneck
    dataset_stats.py  per-class statistics of a data set (stats.npz) and typicality
    se_fit.py         fitting an SE block's MLP at another width to the base network's
                      (squeeze, gate) pairs, and its figures of merit (se-viz refit's maths)

The names most views use are importable from here directly.
"""

from __future__ import annotations

from .excitation import se_forward
from .paper import (PAPER_CITATION, PAPER_FIG6_BLOCKS, PAPER_FIG6_FINDING,
                    PAPER_REDUCTION_TABLE, PaperRow, figure6_blocks)
from .reduction import emulation_masks, hidden_unit_importance
from .stats import (HIGH, LOW, STAT_FIELDS, GateStats, block_similarity, channel_order,
                    class_specificity, compare_images, cosine, gate_histogram, gate_stats,
                    js_distance, normalized_entropy, pad_blocks, squeeze_vs_gate, stats_table,
                    top_channels, topk_change, topk_overlap)

__all__ = ["PAPER_CITATION", "PAPER_FIG6_BLOCKS", "PAPER_FIG6_FINDING", "PAPER_REDUCTION_TABLE",
           "PaperRow", "figure6_blocks", "se_forward", "emulation_masks",
           "hidden_unit_importance", "HIGH", "LOW", "STAT_FIELDS",
           "GateStats", "block_similarity", "channel_order", "class_specificity",
           "compare_images", "cosine", "gate_histogram", "gate_stats", "js_distance",
           "normalized_entropy", "pad_blocks", "squeeze_vs_gate", "stats_table",
           "top_channels", "topk_change", "topk_overlap"]
