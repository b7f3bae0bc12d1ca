"""Command line: ``python -m se_viz`` (also installed as ``se-viz``); all argparse is in here.

    se-viz capture IMAGE... [--arch A] [--weights PATH|pretrained] [--reduction R]
                            [--se-impl linear|conv] [--labels FILE] [--out FILE]
    se-viz explain IMAGE... [--class K] [--blocks B ...] [--out FILE] [--png DIR]
                            [model options as capture]
    se-viz archs [--no-counts]
    se-viz weights info|fetch|install|convert
    se-viz analyze DIR --out OUT
    se-viz refit DIR --reduction R [R ...] --out OUT [--holdout F] [--finetune]
    se-viz atlas RESULTS --block B --channel C [--top K] [--bottom] [--class NAME] [--json]
    se-viz atlas RESULTS --block B --like IMAGE [--top K] [--class NAME] [--json]
    se-viz app [--port P] [--address A]

Expected problems (bad images, bad weights, offline) print one line on stderr and give a
non-zero exit status; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import SEVizError
from ..version import __version__
from . import app, archs, atlas, capture, dataset, explain, weights
from .app import app_command, streamlit_flags
from .common import (EXIT_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, err,
                     resolve_weights)

DESCRIPTION = ("Capture, analyse and refit the channel-attention gates (Squeeze-and-"
               "Excitation, ECA) of SE-ResNets, EfficientNet, MobileNetV3, LCNet and RegNetY "
               "(PaddlePaddle); start the app.")
__all__ = ["main", "build_parser", "app_command", "streamlit_flags", "resolve_weights",
           "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="se-viz", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"se_viz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    capture.add_parser(sub)
    explain.add_parser(sub)
    archs.add_parser(sub)
    weights.add_parser(sub)
    dataset.add_analyze(sub)
    dataset.add_refit(sub)
    atlas.add_parser(sub)
    app.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or EXIT_OK)
    except SEVizError as exc:
        err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        err("interrupted; run the same command again to resume"
             if args.command in ("analyze", "refit") else "interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
