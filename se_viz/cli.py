"""Command line: ``python -m se_viz`` (also installed as ``se-viz``).

    se-viz capture IMAGE... [--arch A] [--weights PATH|pretrained] [--reduction R] [--out FILE]
    se-viz weights info|fetch|install|convert
    se-viz analyze DIR --out OUT

Expected problems (bad images, bad weights, offline) print one line on stderr and give a
non-zero exit status; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, download
from .errors import SEVizError

ARCHS = ("se_resnet50_vd", "se_resnet50")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    from .api import build_model

    weights = resolve_weights(args.arch, args.weights)
    progress = None
    bar = None
    if weights == "pretrained" and download.cached_path(args.arch) is None:
        bar, progress = _progress_bar(download.PRETRAINED[args.arch].filename)
    try:
        return build_model(args.arch, weights, reduction=args.reduction,
                           num_classes=args.num_classes, width=args.width, progress=progress)
    finally:
        if bar is not None:
            bar.close()


def _metadata(model) -> dict:
    info = model.info
    return {"se_viz_version": __version__, "arch": info.arch, "reduction": info.reduction,
            "num_classes": info.num_classes, "weights": info.weights, "layout": info.layout,
            "weights_sha256": info.sha256 or "", "untrained": info.untrained,
            "preprocessing": model.preprocessing.describe()}


def _capture_stream(model, paths: Sequence[str], batch_size: int):
    """Decode and capture ``paths`` batch by batch (memory bounded by one batch).

    Returns (usable paths, Capture or None, unusable paths); each unusable file gets one
    line on stderr naming it and the reason.
    """
    from .hooks import Capture, capture
    from .images import load_image, preprocess

    good, bad, parts, pending, names = [], [], [], [], []
    for k, path in enumerate(paths):
        try:
            pending.append(preprocess(load_image(path), model.preprocessing))
            names.append(path)
        except SEVizError as exc:
            _err(str(exc))
            bad.append(path)
        if pending and (len(pending) == batch_size or k == len(paths) - 1):
            import numpy as np
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
        export.write(args.out, good, cap.logits, cap.gates, _metadata(model), labels)
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
    print(f"cache folder: {download.cache_dir()}  (set SE_VIZ_HOME to move it)")
    for row in download.describe_cache():
        state = f"present, {row['size']:,} bytes" if row["present"] else "missing"
        print(f"{row['arch']:<15s} {state}\n  file: {row['path']}\n  from: {row['url']}\n"
              f"  {row['description']}")
    graphs = sorted(download.graph_cache_dir().glob("*.onnx"))
    size = sum(g.stat().st_size for g in graphs) / 2**20
    print(f"fast graphs: {len(graphs)} file(s), {size:.0f} MiB in {download.graph_cache_dir()} "
          f"(built from the weights on first use, at most {download.GRAPHS_KEPT} kept; "
          "safe to delete)")
    return EXIT_OK


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    archs = ARCHS if args.arch == "all" else (args.arch,)
    for arch in archs:
        cached = download.cached_path(arch)
        if cached is not None:
            print(f"{arch}: already cached at {cached}")
            continue
        bar, progress = _progress_bar(download.PRETRAINED[arch].filename)
        try:
            path = download.fetch(arch, progress=progress, timeout=args.timeout, url=args.url)
        finally:
            bar.close()
        print(f"{arch}: saved {path}")
    return EXIT_OK


def cmd_weights_install(args: argparse.Namespace) -> int:
    from .api import build_model

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
    from .api import build_model
    from .weights import export_state, read_file, save_safetensors

    out = Path(args.output)
    if out.suffix.lower() != ".safetensors":
        _err(f"the output must be a .safetensors file, got '{out.name}'")
        return EXIT_USAGE
    arch = args.arch or _guess_arch(args.input)
    model = build_model(arch, args.input, reduction=args.reduction,
                        num_classes=args.num_classes, width=args.width)
    meta = {"format": "se_viz", "arch": arch, "reduction": model.info.reduction,
            "num_classes": model.info.num_classes, "source": Path(args.input).name,
            "source_layout": model.info.layout, "source_sha256": model.info.sha256,
            "se_viz_version": __version__}
    save_safetensors(export_state(model), out, meta)
    print(f"converted {args.input} ({model.info.layout} layout, {arch}) -> {out}")
    return EXIT_OK


def _guess_arch(path: str) -> str:
    from .weights import LAYOUT_ARCH, detect_layout, read_file

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
    from importlib.util import find_spec

    if find_spec("se_viz.dataset") is None:  # pragma: no cover - not installed
        return
    from . import dataset
    add = getattr(dataset, "add_parser", None)
    if add is not None:
        add(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SEVizError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
