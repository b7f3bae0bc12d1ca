"""SE gate statistics over an image folder: the paper's Fig. 6/7 at any scale, resumable.

    se-viz analyze DIR --out OUT                  (or: python -m se_viz.dataset DIR --out OUT)
    python -m paddle.distributed.launch --nproc_per_node N "$(command -v python)" \\
        -m se_viz.dataset DIR --out OUT           (several processes, GPUs or nodes)

DIR is an ImageFolder: one sub-folder per class (searched recursively); images lying
directly in DIR form one class named after DIR. The sorted file list is cut into shards
of S consecutive files. Each shard's float64 partial sums (count, sum and sum of squares
of every gate, per class) and per-image rows are written atomically to
``OUT/shards/shard_XXXXX.npz``; finished shards are never recomputed. Rank r of W (from
``PADDLE_TRAINER_ID`` / ``PADDLE_TRAINERS_NUM``) computes shards i with i % W == r; rank 0
waits for every shard file, then merges them in shard order, so any number of processes
gives bit-identical results. OUT (a folder shared by all ranks) then holds:

    manifest.json    settings + hash of the file list; a resume with other settings refuses
    files.jsonl      the file list, line i = ["class", "path/relative/to/DIR"] of image i
    stats.npz        per-class and all-image means/stds (format: se_viz.report)
    per_image.csv    file, class, prediction, top-1 probability; per block mean, entropy, top-5
    per_image.parquet  the same table
    gates.parquet    every image's gates for every block, 2 bytes a gate (`store`), the
                     channel atlas's store (`atlas`, ``se-viz atlas``)
    skipped.txt      files that could not be used, with the reason
    report.html      standalone Plotly report (se_viz.report)

per_image.csv columns: file, class, pred_index, pred_name, top1_prob, then per block
``SE_s_b_mean``, ``SE_s_b_entropy`` (entropy of g / sum(g) over log C, as
analysis.normalized_entropy) and ``SE_s_b_top5`` (channel indices, space-separated).
Images are decoded and preprocessed in spawned worker processes (never forked after
paddle is imported); the forward pass runs batched in the main process. Exit status of
the command (`se_viz.cli`'s EXIT_*): 0 done, 1 done but some files were skipped (or an
error), 3 stopped early.
Modules: files (listing), decode (worker processes), shards (shard files, manifest, merge
and output tables; numpy only), store (the gate store's format and writer), network_id
(which network made a run), analyze (the run), report (the HTML page), atlas (queries on
the gate store: `atlas.GateStore`). ``se-viz
refit`` (SE blocks refit at other r) is `se_viz.refit`, on the same files, workers and
shards. The command line (``se-viz analyze``) lives in `se_viz.cli`.
"""

from __future__ import annotations

from .analyze import AnalysisResult, RunOptions, Settings, analyze, distributed_rank
from .files import IMAGE_SUFFIXES, FileList, list_images

__all__ = ["analyze", "Settings", "RunOptions", "AnalysisResult", "distributed_rank",
           "list_images", "FileList", "IMAGE_SUFFIXES"]
