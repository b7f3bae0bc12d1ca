"""Command line: ``python -m se_viz`` (also installed as ``se-viz``). All argparse lives here.

    se-viz capture IMAGE... [--arch A] [--weights PATH|pretrained] [--reduction R]
                            [--se-impl linear|conv] [--out FILE]
    se-viz weights info|fetch|install|convert
    se-viz analyze DIR --out OUT

Expected problems (bad images, bad weights, offline) print one line on stderr and give a
non-zero exit status; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .version import __version__
from .arch import ARCHS, PRETRAINED, SE_IMPLS
from .errors import DatasetError, SEVizError
from .paths import cache_dir, graph_cache_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INCOMPLETE = 3


def _err(message: str) -> None:
    print(f"se-viz: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"se-viz: warning: {message}", file=sys.stderr)


def _progress_bar(desc: str):
    """A tqdm bar on stderr driven by download's (done, total) callback."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
               leave=True)

    def update(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
    return bar, update


def resolve_weights(arch: str, weights: str | None) -> str | None:
    """--weights default: the cached pretrained file if present, else None (untrained)."""
    from .engine import download

    if weights is not None:
        return weights
    cached = download.cached_path(arch)
    if cached is not None:
        return str(cached)
    _warn(f"no pretrained weights for {arch} in the cache; running with UNTRAINED (seeded "
          "random) weights, so the gates mean nothing. Get the real file with "
          f"'python -m se_viz weights fetch --arch {arch}' (needs internet) or save it by hand "
          f"as {download.expected_path(arch)}")
    return None


def _load_model(args: argparse.Namespace):
    from .engine import download
    from .engine.build import build_model

    weights = resolve_weights(args.arch, args.weights)
    progress = None
    bar = None
    if weights == "pretrained" and download.cached_path(args.arch) is None:
        bar, progress = _progress_bar(PRETRAINED[args.arch].filename)
    try:
        return build_model(args.arch, weights, reduction=args.reduction,
                           num_classes=args.num_classes, width=args.width,
                           se_impl=args.se_impl, progress=progress)
    finally:
        if bar is not None:
            bar.close()


def _capture_stream(model, paths: Sequence[str], batch_size: int):
    """Decode and capture ``paths`` batch by batch (memory bounded by one batch).

    Returns (usable paths, Capture or None, unusable paths); each unusable file gets one
    line on stderr naming it and the reason.
    """
    import numpy as np

    from .engine.capture import capture
    from .images import load_image, preprocess
    from .results import Capture

    good, bad, parts, pending, names = [], [], [], [], []
    for k, path in enumerate(paths):
        try:
            pending.append(preprocess(load_image(path), model.preprocessing))
            names.append(path)
        except SEVizError as exc:
            _err(str(exc))
            bad.append(path)
        if pending and (len(pending) == batch_size or k == len(paths) - 1):
            parts.append(capture(model, np.stack(pending), batch_size=batch_size))
            good.extend(names)
            pending, names = [], []
    return good, (Capture.concat(parts) if parts else None), bad


def cmd_capture(args: argparse.Namespace) -> int:
    from . import export
    from .labels import imagenet_labels, label_for

    if args.out and Path(args.out).suffix.lower() not in export.FORMATS:
        _err(f"--out must end in {', '.join(export.FORMATS)}, got '{args.out}'")
        return EXIT_USAGE
    model = _load_model(args)
    good, cap, bad = _capture_stream(model, args.images, args.batch_size)
    if cap is None:
        _err("no usable image; nothing written")
        return EXIT_FAILED
    if args.out:
        labels = imagenet_labels() if model.info.num_classes == 1000 else None
        export.write(args.out, good, cap.logits, cap.gates, export.metadata(model), labels)
        print(f"wrote {len(good)} image(s), {len(cap.gates)} blocks -> {args.out}")
    else:
        idx, prob = cap.top_k(args.top)
        for name, row_i, row_p in zip(good, idx, prob):
            print(name)
            for rank, (i, p) in enumerate(zip(row_i, row_p), 1):
                print(f"  {rank}. {label_for(int(i), model.info.num_classes):<32s} {p:7.2%}")
        if model.info.untrained:
            print("(untrained weights: these predictions and gates mean nothing)")
    if bad:
        _err(f"{len(bad)} of {len(args.images)} file(s) could not be used: {', '.join(bad)}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_weights_info(args: argparse.Namespace) -> int:
    from .engine import download, traced

    print(f"cache folder: {cache_dir()}  (set SE_VIZ_HOME to move it)")
    for row in download.describe_cache():
        state = f"present, {row['size']:,} bytes" if row["present"] else "missing"
        print(f"{row['arch']:<15s} {state}\n  file: {row['path']}\n  from: {row['url']}\n"
              f"  {row['description']}")
    graphs = sorted(graph_cache_dir().glob("*.onnx"))
    size = sum(g.stat().st_size for g in graphs) / 2**20
    print(f"fast graphs: {len(graphs)} file(s), {size:.0f} MiB in {graph_cache_dir()} "
          f"(traced from the model on first use, at most {traced.KEEP_GRAPHS} kept; "
          "safe to delete)")
    return EXIT_OK


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from .engine import download

    archs = ARCHS if args.arch == "all" else (args.arch,)
    for arch in archs:
        cached = download.cached_path(arch)
        if cached is not None:
            print(f"{arch}: already cached at {cached}")
            continue
        bar, progress = _progress_bar(PRETRAINED[arch].filename)
        try:
            path = download.fetch(arch, progress=progress, timeout=args.timeout, url=args.url)
        finally:
            bar.close()
        print(f"{arch}: saved {path}")
    return EXIT_OK


def cmd_weights_install(args: argparse.Namespace) -> int:
    from .engine import download
    from .engine.build import build_model

    expected = download.expected_path(args.arch)
    if Path(args.file).suffix.lower() != expected.suffix:
        _err(f"the cache holds the official {expected.name}; '{Path(args.file).name}' is another "
             f"format. Use it directly with --weights {args.file}")
        return EXIT_FAILED
    build_model(args.arch, args.file, width=args.width)  # refuse a file that does not fit
    path = download.install_file(args.arch, args.file)
    print(f"{args.arch}: installed {args.file} -> {path}")
    return EXIT_OK


def cmd_weights_convert(args: argparse.Namespace) -> int:
    from .engine.build import build_model
    from .engine.weights import export_state, save_safetensors

    out = Path(args.output)
    if out.suffix.lower() != ".safetensors":
        _err(f"the output must be a .safetensors file, got '{out.name}'")
        return EXIT_USAGE
    arch = args.arch or _guess_arch(args.input)
    model = build_model(arch, args.input, reduction=args.reduction,
                        num_classes=args.num_classes, width=args.width, se_impl=args.se_impl)
    meta = {"format": "se_viz", "arch": arch, "reduction": model.info.reduction,
            "num_classes": model.info.num_classes, "source": Path(args.input).name,
            "source_layout": model.info.layout, "source_sha256": model.info.sha256,
            "se_viz_version": __version__}
    save_safetensors(export_state(model), out, meta)
    print(f"converted {args.input} ({model.info.layout} layout, {arch}) -> {out}")
    return EXIT_OK


def _guess_arch(path: str) -> str:
    from .arch import LAYOUT_ARCH
    from .engine.weights import detect_layout, read_file

    arrays, _, _ = read_file(path)
    return LAYOUT_ARCH.get(detect_layout(arrays), "se_resnet50_vd")


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"the reduction ratio r must be >= 1, got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _model_options(p: argparse.ArgumentParser, arch_default: str | None = "se_resnet50_vd"
                   ) -> None:
    p.add_argument("--arch", choices=ARCHS, default=arch_default,
                   help="network layout (default: %(default)s)")
    p.add_argument("--reduction", type=_ratio, default=16, help="SE reduction ratio r (16)")
    p.add_argument("--se-impl", choices=SE_IMPLS, default="linear",
                   help="SE block's fully connected layers: nn.Linear (PaddleClas) or 1x1 "
                        "conv (timm); the same numbers (default: %(default)s)")
    p.add_argument("--num-classes", type=_positive, default=1000, help="classifier size (1000)")
    p.add_argument("--width", type=_positive, default=64, help=argparse.SUPPRESS)  # tests/demos


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="se-viz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"se_viz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    cap = sub.add_parser("capture", help="capture every SE block's gates for images")
    cap.add_argument("images", nargs="+", metavar="IMAGE")
    _model_options(cap)
    cap.add_argument("--weights", metavar="PATH|pretrained",
                     help="weights file, or 'pretrained' to download the default "
                          "(default: the cached pretrained file, else untrained)")
    cap.add_argument("--out", metavar="FILE", help="write .npz, .json or .csv; without it, "
                                                   "print the top-5 classes per image")
    cap.add_argument("--batch-size", type=_positive, default=8)
    cap.add_argument("--top", type=_positive, default=5, help=argparse.SUPPRESS)
    cap.set_defaults(func=cmd_capture)

    w = sub.add_parser("weights", help="inspect, download, install or convert weight files")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wsub.add_parser("info", help="where the cache is and what it holds"
                    ).set_defaults(func=cmd_weights_info)
    f = wsub.add_parser("fetch", help="download the pretrained file(s) into the cache")
    f.add_argument("--arch", choices=(*ARCHS, "all"), default="se_resnet50_vd")
    f.add_argument("--url", help="download from this URL instead (a mirror)")
    f.add_argument("--timeout", type=float, default=10.0, help="connect/read timeout, s")
    f.set_defaults(func=cmd_weights_fetch)
    i = wsub.add_parser("install", help="place a weights file you already have in the cache")
    i.add_argument("file")
    i.add_argument("--arch", choices=ARCHS, default="se_resnet50_vd")
    i.add_argument("--width", type=_positive, default=64, help=argparse.SUPPRESS)
    i.set_defaults(func=cmd_weights_install)
    c = wsub.add_parser("convert", help="write any supported file in se_viz's layout")
    c.add_argument("input", metavar="IN")
    c.add_argument("output", metavar="OUT.safetensors")
    _model_options(c, arch_default=None)
    c.set_defaults(func=cmd_weights_convert)

    _add_analyze(sub)
    return parser


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="gate statistics over an image folder",
                       description="SE gate statistics over an image folder: the paper's "
                                   "Fig. 6/7 at any scale, resumable, several processes.")
    p.add_argument("folder", metavar="DIR", help="one sub-folder of images per class")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (resumable)")
    _model_options(p)
    p.add_argument("--weights", metavar="PATH|pretrained",
                   help="weights file, or 'pretrained' (default: the cached pretrained file, "
                        "else untrained)")
    p.add_argument("--batch-size", type=_positive, default=16)
    _workers_option(p)
    p.add_argument("--limit-per-class", type=_positive, metavar="N",
                   help="use the first N images (sorted) of each class")
    p.add_argument("--shard-size", type=_positive, default=256,
                   help="images per shard, the unit of resuming (default: %(default)s)")
    p.add_argument("--merge-only", action="store_true",
                   help="only merge the finished shards in OUT into stats and report")
    p.add_argument("--merge-timeout", type=float, metavar="SECONDS",
                   help="how long rank 0 waits for other ranks' shards (default: forever)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--image-size", type=_positive, help=argparse.SUPPRESS)  # tests
    p.add_argument("--max-shards", type=_positive, help=argparse.SUPPRESS)  # tests
    p.set_defaults(func=cmd_analyze)


def _workers_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)),
                   help="decoding processes, 0 = decode here (default: %(default)s)")


def cmd_analyze(args: argparse.Namespace) -> int:
    """``analyze``: 0 ok, 1 some files skipped (outputs written), 3 stopped early."""
    from .dataset import RunOptions, Settings, analyze, distributed_rank

    if args.workers < 0:
        raise DatasetError(f"--workers must be >= 0, got {args.workers}")
    weights = None if args.merge_only else resolve_weights(args.arch, args.weights)
    settings = Settings(args.arch, weights, args.reduction, args.num_classes, args.width,
                        args.seed, args.image_size, args.batch_size, args.shard_size,
                        args.limit_per_class)
    rank, world = distributed_rank()
    options = RunOptions(args.workers, rank, world, not args.no_progress, args.merge_only,
                         args.merge_timeout, args.max_shards)
    result = analyze(args.folder, args.out, settings, options)
    who = f"rank {rank}/{world}: " if world > 1 else ""
    print(f"{who}computed {result.computed_shards} shard(s), reused {result.reused_shards} "
          f"({result.seconds:.1f} s)")
    if not result.complete:
        print(f"{who}stopped early; run the same command again to continue")
        return EXIT_INCOMPLETE
    if not result.merged:
        return EXIT_OK
    out = result.out
    print(f"{result.n_files - len(result.skipped)} of {result.n_files} images -> "
          f"{out / 'stats.npz'}, {out / 'per_image.csv'}, {out / 'report.html'}")
    if result.skipped:
        _err_skipped(result.skipped, out / "skipped.txt")
        return EXIT_FAILED
    return EXIT_OK


def _err_skipped(skipped: Sequence[tuple[str, str]], listing: Path) -> None:
    lines = "".join(f"\n  {name}: {why}" for name, why in skipped[:20])
    more = f"\n  ... ({len(skipped) - 20} more)" if len(skipped) > 20 else ""
    _err(f"{len(skipped)} file(s) could not be used and were skipped "
         f"(all listed in {listing}):{lines}{more}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SEVizError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to resume" if args.command == "analyze"
             else "interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
