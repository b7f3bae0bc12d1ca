"""``se-viz capture``: every attention block's gates for a list of images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..errors import SEVizError
from .common import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, load_model, model_options,
                     positive, weights_options)


def add_parser(sub: argparse._SubParsersAction) -> None:
    cap = sub.add_parser("capture", help="capture every attention block's gates for images")
    cap.add_argument("images", nargs="+", metavar="IMAGE")
    model_options(cap)
    cap.add_argument("--se-weights", metavar="FILE",
                     help="SE blocks refit at another r by 'se-viz refit' (OUT/se_r8."
                          "safetensors) on these weights; --reduction stays the base's r")
    weights_options(cap)
    cap.add_argument("--out", metavar="FILE", help="write .npz, .json or .csv; without it, "
                                                   "print the top-5 classes per image")
    cap.add_argument("--batch-size", type=positive, default=8)
    cap.add_argument("--top", type=positive, default=5, help=argparse.SUPPRESS)
    cap.set_defaults(func=cmd_capture)



def _capture_stream(model, paths: Sequence[str], batch_size: int):
    """Decode and capture ``paths`` batch by batch (memory bounded by one batch).

    Returns (usable paths, Capture or None, unusable paths); each unusable file gets one
    line on stderr naming it and the reason.
    """
    import numpy as np

    from ..engine.capture import capture
    from ..images import load_image, preprocess
    from ..results import Capture

    good, bad, parts, pending, names = [], [], [], [], []
    for k, path in enumerate(paths):
        try:
            pending.append(preprocess(load_image(path, draft_for=model.preprocessing),
                                      model.preprocessing))
            names.append(path)
        except SEVizError as exc:
            err(str(exc))
            bad.append(path)
        if pending and (len(pending) == batch_size or k == len(paths) - 1):
            parts.append(capture(model, np.stack(pending), batch_size=batch_size))
            good.extend(names)
            pending, names = [], []
    return good, (Capture.concat(parts) if parts else None), bad


def class_names(model, labels_file: str | None) -> tuple[str, ...] | None:
    """The network's class names: its own (``model.info.class_names``), else those of
    ``--labels`` (checked against the head), else ImageNet-1k's for a 1000-class head."""
    from ..labels import imagenet_labels, read_labels

    own = getattr(model.info, "class_names", None)
    if own:
        return tuple(own)
    if labels_file:
        try:
            return read_labels(labels_file, model.info.num_classes)
        except ValueError as exc:
            raise SEVizError(f"--labels: {exc}") from None
    return imagenet_labels() if model.info.num_classes == 1000 else None


def cmd_capture(args: argparse.Namespace) -> int:
    from .. import export
    from ..labels import label_for

    if args.out and Path(args.out).suffix.lower() not in export.FORMATS:
        err(f"--out must end in {', '.join(export.FORMATS)}, got '{args.out}'")
        return EXIT_USAGE
    model = load_model(args)
    names = class_names(model, args.labels)
    good, cap, bad = _capture_stream(model, args.images, args.batch_size)
    if cap is None:
        err("no usable image; nothing written")
        return EXIT_FAILED
    if args.out:
        export.write(args.out, good, cap.logits, cap.gates, export.metadata(model), names)
        print(f"wrote {len(good)} image(s), {len(cap.gates)} blocks -> {args.out}")
    else:
        idx, prob = cap.top_k(args.top)
        for name, row_i, row_p in zip(good, idx, prob):
            print(name)
            for rank, (i, p) in enumerate(zip(row_i, row_p), 1):
                name_i = label_for(int(i), model.info.num_classes, names)
                print(f"  {rank}. {name_i:<32s} {p:7.2%}")
        if model.info.untrained:
            print("(untrained weights: these predictions and gates mean nothing)")
    if bad:
        err(f"{len(bad)} of {len(args.images)} file(s) could not be used: {', '.join(bad)}")
        return EXIT_FAILED
    return EXIT_OK
