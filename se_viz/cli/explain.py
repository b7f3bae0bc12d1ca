"""``se-viz explain``: class evidence per image (Grad-CAM, LayerCAM, gate gradients and
attribution) written as .npz/.json/.csv and, with ``--png DIR``, one overlay per image and
block (the map over the crop the network saw)."""

from __future__ import annotations

import argparse
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..errors import SEVizError
from .capture import class_names
from .common import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, fraction, load_model,
                     model_options, positive, weights_options)

CAMS = ("gradcam", "layercam")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="class evidence per image: Grad-CAM, LayerCAM and "
                                       "gate attribution (gate x d logit / d gate)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    model_options(p)
    weights_options(p)
    p.add_argument("--class", dest="target", metavar="K",
                   help="the class to explain for every image: an index or an exact class "
                        "name (default: each image's top-1 class)")
    p.add_argument("--blocks", nargs="+", metavar="B",
                   help="blocks whose Grad-CAM and LayerCAM to compute (default: all); "
                        "gradients and attribution always cover every block")
    p.add_argument("--out", metavar="FILE", help="write .npz, .json or .csv")
    p.add_argument("--png", metavar="DIR",
                   help="write one PNG per image and block: the map over the crop")
    p.add_argument("--cam", choices=CAMS, default="gradcam",
                   help="the map the PNGs show (default: %(default)s)")
    p.add_argument("--opacity", type=fraction, default=0.5,
                   help="the map's opacity in the PNGs (default: %(default)s)")
    p.add_argument("--batch-size", type=positive, default=8)
    p.set_defaults(func=cmd_explain)


def parse_class(text: str | None, num_classes: int,
                names: Sequence[str] | None) -> int | None:
    """``--class``: an index in 0..K-1 or an exact class name (case-insensitive)."""
    if text is None:
        return None
    try:
        k = int(text)
    except ValueError:
        found = [i for i, n in enumerate(names or ()) if n.lower() == text.strip().lower()]
        if len(found) != 1:
            why = "no class is named" if not found else "several classes are named"
            raise ValueError(f"--class: {why} {text!r}; give a class index 0 .. "
                             f"{num_classes - 1}") from None
        return found[0]
    if not 0 <= k < num_classes:
        raise ValueError(f"--class {k} is out of range: this network has {num_classes} "
                         f"classes, 0 .. {num_classes - 1}")
    return k


def check_blocks(asked: Sequence[str] | None, model) -> list[str] | None:
    """``--blocks``: names of this network's attention blocks (`model.info.blocks`)."""
    if asked is None:
        return None
    known = [b.name for b in model.info.blocks]
    unknown = [b for b in asked if b not in known]
    if unknown:
        raise ValueError(f"--blocks: unknown block {unknown[0]!r}; this network's blocks "
                         f"are {', '.join(known)}")
    return list(dict.fromkeys(asked))


def png_names(paths: Sequence[str]) -> list[str]:
    """A file-name stem per image: the image's own, with its position added when two
    images share one (a/cat.jpg and b/cat.jpg)."""
    stems = [Path(p).stem or "image" for p in paths]
    seen = Counter(stems)
    return [s if seen[s] == 1 else f"{s}_{k}" for k, s in enumerate(stems)]


def write_pngs(folder: Path, stems: Sequence[str], crops, ev, kind: str,
               opacity: float) -> int:
    """One ``{stem}_{block}.png`` per image and block held: the map over the crop."""
    from PIL import Image

    from ..paths import atomic_write
    from ..plots.evidence import cam_overlay

    maps = ev.cam if kind == "gradcam" else ev.layercam
    for stem, crop, i in zip(stems, crops, range(len(ev))):
        for block, m in maps.items():
            buf = io.BytesIO()
            Image.fromarray(cam_overlay(crop, m[i], opacity)).save(buf, format="PNG")
            atomic_write(folder / f"{stem}_{block}.png", buf.getvalue())
    return len(stems) * len(maps)


def _explain_stream(model, args, target, blocks, folder):
    """Decode and explain ``args.images`` batch by batch (memory bounded by one batch),
    PNGs written per batch. Returns (Evidence or None, usable paths, unusable paths, PNGs)."""
    import numpy as np

    from ..engine.evidence import explain
    from ..images import center_crop, load_image, normalize
    from ..results import Evidence

    pre = model.preprocessing
    stems = dict(zip(args.images, png_names(args.images)))
    good, bad, parts, pngs = [], [], [], 0
    pending: list[tuple[str, np.ndarray]] = []
    for k, path in enumerate(args.images):
        try:
            pending.append((path, np.asarray(center_crop(load_image(path, draft_for=pre),
                                                         pre))))
        except SEVizError as exc:
            err(str(exc))
            bad.append(path)
        if pending and (len(pending) == args.batch_size or k == len(args.images) - 1):
            names, crops = zip(*pending)
            ev = explain(model, np.stack([normalize(c, pre) for c in crops]), target, blocks,
                         batch_size=args.batch_size, names=names)
            if folder is not None:
                pngs += write_pngs(folder, [stems[n] for n in names], crops, ev, args.cam,
                                   args.opacity)
            parts.append(ev)
            good.extend(names)
            pending = []
    return (Evidence.concat(parts) if parts else None), good, bad, pngs


def _print_summary(ev, num_classes: int, names, detail: bool) -> None:
    """Per image the class explained; with ``detail`` also each block's 3 channels with the
    largest attribution."""
    from ..labels import label_for
    from ..maths import top_k

    prob = ev.probabilities
    for i in range(len(ev)):
        t = int(ev.target[i])
        name = label_for(t, num_classes, names)
        name = name if name == f"class {t}" else f"class {t} {name}"
        print(f"{ev.image_name(i)}: {name} ({prob[i, t]:.2%})")
        if detail:
            for block, a in ev.attributions.items():
                idx, val = top_k(a[i], 3)
                print(f"  {block:<10s} " + "  ".join(f"ch {c} {v:+.3g}" for c, v in zip(idx, val)))


def cmd_explain(args: argparse.Namespace) -> int:
    from .. import export

    if args.out and Path(args.out).suffix.lower() not in export.FORMATS:
        err(f"--out must end in {', '.join(export.FORMATS)}, got '{args.out}'")
        return EXIT_USAGE
    folder = Path(args.png) if args.png else None
    if folder is not None and folder.exists() and not folder.is_dir():
        err(f"--png {folder} exists and is not a folder; name a folder for the PNGs")
        return EXIT_USAGE
    model = load_model(args)
    names = class_names(model, args.labels)
    try:
        target = parse_class(args.target, model.info.num_classes, names)
        blocks = check_blocks(args.blocks, model)
    except ValueError as exc:
        err(str(exc))
        return EXIT_USAGE
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    ev, good, bad, pngs = _explain_stream(model, args, target, blocks, folder)
    if ev is None:
        err("no usable image; nothing written")
        return EXIT_FAILED
    _print_summary(ev, model.info.num_classes, names, detail=not (args.out or folder))
    if args.out:
        export.write_evidence(args.out, ev, export.metadata(model), names)
        print(f"wrote {len(good)} image(s), {len(ev.gates)} blocks -> {args.out}")
    if folder is not None:
        print(f"wrote {pngs} PNG(s) -> {folder}")
    if model.info.untrained:
        print("(untrained weights: these classes and maps mean nothing)")
    if bad:
        err(f"{len(bad)} of {len(args.images)} file(s) could not be used: {', '.join(bad)}")
        return EXIT_FAILED
    return EXIT_OK
