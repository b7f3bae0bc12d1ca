"""``se-viz atlas``: a channel's top or bottom images, or the images closest to a photo, from
the gate store of ``se-viz analyze`` (`se_viz.dataset.atlas`)."""

from __future__ import annotations

import argparse
import json

from .common import EXIT_FAILED, EXIT_OK, positive, warn


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("atlas", help="a channel's top images, or the images closest to a photo",
                       description="Channel atlas over the gate store of 'se-viz analyze': the "
                                   "images with the highest (or lowest) gate of one channel, "
                                   "or the images whose gates in one block are closest (cosine) "
                                   "to a photo's.")
    p.add_argument("results", metavar="RESULTS", help="an 'se-viz analyze' output folder")
    p.add_argument("--block", required=True, metavar="B", help="attention block, e.g. SE_4_6")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--channel", type=int, metavar="C", help="channel index in the block")
    what.add_argument("--like", metavar="IMAGE", help="list the images closest to this photo "
                      "(captured with the network that made the store)")
    p.add_argument("--top", type=positive, default=10, metavar="K",
                   help="how many images (default: %(default)s)")
    p.add_argument("--bottom", action="store_true", help="the lowest gates (with --channel)")
    p.add_argument("--class", dest="klass", metavar="NAME", help="only images of this class")
    p.add_argument("--json", action="store_true", help="print a JSON list, best first")
    p.add_argument("--root", metavar="DIR", help="where the image folder is now, if it moved "
                   "(default: where it was analysed)")
    p.add_argument("--weights", metavar="PATH", help="with --like: the weights file the store "
                   "was made with, if it moved (checked by sha256)")
    p.set_defaults(func=cmd_atlas, usage_error=p.error)


def cmd_atlas(args: argparse.Namespace) -> int:
    """0: listed; 1: listed, but some listed files are missing or changed (or an error)."""
    from ..dataset.atlas import GateStore

    if args.like is not None and args.bottom:
        args.usage_error("--bottom goes with --channel, not with --like")
    if args.like is None and args.weights:
        args.usage_error("--weights goes with --like (it rebuilds the store's network)")
    store = GateStore.open(args.results, args.root)
    if args.like is None:
        hits = store.top(args.block, args.channel, args.top, args.bottom, args.klass)
        value, title = "gate", (f"{'bottom' if args.bottom else 'top'} {len(hits)} of "
                                f"{args.block} channel {args.channel}")
    else:
        model = store.build_network(args.weights)[0] if args.weights else None
        hits = store.like(args.like, args.block, args.top, args.klass, model=model)
        value, title = "similarity", f"{len(hits)} closest to {args.like} in {args.block}"
    rows = [{"rank": i + 1, "index": h.index, "file": h.file, "class": h.class_name,
             value: getattr(h, value), "path": str(h.path), "status": h.status}
            for i, h in enumerate(hits)]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        scope = f", class {store.classes[store.class_label(args.klass)]}" if args.klass else ""
        print(f"{title} ({store.n_images} images{scope}; {args.results})")
        for r in rows:
            flag = "" if r["status"] == "ok" else f"  [{r['status']}]"
            print(f"{r['rank']:>4}  {r[value]:.5f}  {r['class']}  {r['file']}{flag}")
    moved = [r["file"] for r in rows if r["status"] != "ok"]
    if moved:
        warn(f"{len(moved)} listed file(s) moved, were deleted or changed since the analysis "
             f"(under {store.root}): {', '.join(moved)}. Pass --root DIR if the folder moved; "
             "re-run 'se-viz analyze' into a new --out folder if the images changed.")
        return EXIT_FAILED
    return EXIT_OK
