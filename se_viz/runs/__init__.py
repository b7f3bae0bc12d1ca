"""Runs of the network for an interactive front end: per-image results shared by every
session, interventions on them, and the fair queue that serves many users in turn.

    images.py    one image through the network (`Photo`, `ImageResult`, `run_image`), under
                 an intervention (`Modified`, `run_modified`, `stage_gates`, `emulation`),
                 one SE block step by step (`walkthrough`)
    results.py   `Results`: every session's results in one bounded cache, computed in turn
    queue.py     `FairQueue`: first come, first served; `wait_text` for a waiting user

The app (`se_viz.app`) shows what is computed here and keeps no domain logic of its own;
the command line and benchmarks can use the same functions. Paddle is only imported when
a network actually runs (`se_viz.engine`). The names others use are importable from here.
"""

from __future__ import annotations

from .images import (ImageResult, Modified, Photo, Walkthrough, emulation, net_key, run_image,
                     run_modified, stage_gates, walkthrough)
from .queue import FairQueue, Turn, wait_text
from .results import RESULT_ENTRIES, Results

__all__ = ["Photo", "ImageResult", "Modified", "net_key", "run_image", "run_modified",
           "stage_gates", "emulation", "Walkthrough", "walkthrough", "Results",
           "RESULT_ENTRIES", "FairQueue", "Turn", "wait_text"]
