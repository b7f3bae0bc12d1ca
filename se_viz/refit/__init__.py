"""``se-viz refit``: the SE blocks of a trained network refit at other reduction ratios r on
an image folder, resumable, on one or several processes (`run` describes the steps).

Modules: run (the run: `refit`, `RefitResult`), context (`RefitSettings` and the state the
steps share), pairs (the base network's (squeeze, gate) pairs, in shards), steps
(fine-tuning and evaluation), files (where each file of OUT lives, `REFIT_FORMAT`), report
(OUT/report.html). The folder machinery (file list, decode workers, shards, manifest) is
`se_viz.dataset`'s; the maths `se_viz.analysis.se_fit`'s; the figures
`se_viz.plots.refit_figures`'. The command line (``se-viz refit``) lives in `se_viz.cli`.
"""

from __future__ import annotations

from .context import RefitSettings
from .files import REFIT_FORMAT
from .run import RefitResult, refit

__all__ = ["refit", "RefitSettings", "RefitResult", "REFIT_FORMAT"]
