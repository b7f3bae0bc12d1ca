"""``se-viz weights info|fetch|install|convert``: the weights cache and weight files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arch import ARCHS, PRETRAINED
from ..paths import cache_dir, graph_cache_dir
from ..version import __version__
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, model_options, positive, progress_bar


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    i.add_argument("--width", type=positive, default=None, help=argparse.SUPPRESS)
    i.set_defaults(func=cmd_weights_install)
    c = wsub.add_parser("convert", help="write any supported file in se_viz's layout")
    c.add_argument("input", metavar="IN")
    c.add_argument("output", metavar="OUT.safetensors")
    model_options(c, arch_default=None)
    c.set_defaults(func=cmd_weights_convert)



def cmd_weights_info(args: argparse.Namespace) -> int:
    from ..engine import download, traced

    print(f"cache folder: {cache_dir()}  (set SE_VIZ_HOME to move it)")
    for row in download.describe_cache():
        state = f"present, {row['size']:,} bytes" if row["present"] else "missing"
        print(f"{row['arch']:<15s} {state}\n  file: {row['path']}\n  from: {row['url']}\n"
              f"  {row['description']}")
        if row.get("hub_cache"):
            print(f"  also looked for in the Hugging Face cache: {row['hub_cache']}")
    graphs = sorted(graph_cache_dir().glob("*.onnx"))
    size = sum(g.stat().st_size for g in graphs) / 2**20
    print(f"fast graphs: {len(graphs)} file(s), {size:.0f} MiB in {graph_cache_dir()} "
          f"(traced from the model on first use, at most {traced.KEEP_GRAPHS} kept; "
          "safe to delete)")
    return EXIT_OK


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from ..engine import download

    archs = ARCHS if args.arch == "all" else (args.arch,)
    for arch in archs:
        cached = download.cached_path(arch)
        if cached is not None:
            print(f"{arch}: already cached at {cached}")
            continue
        bar, progress = progress_bar(PRETRAINED[arch].filename)
        try:
            path = download.fetch(arch, progress=progress, timeout=args.timeout, url=args.url)
        finally:
            bar.close()
        print(f"{arch}: saved {path}")
    return EXIT_OK


def cmd_weights_install(args: argparse.Namespace) -> int:
    from ..engine import download
    from ..engine.build import build_model

    expected = download.expected_path(args.arch)
    if Path(args.file).suffix.lower() != expected.suffix:
        err(f"the cache holds the official {expected.name}; '{Path(args.file).name}' is another "
             f"format. Use it directly with --weights {args.file}")
        return EXIT_FAILED
    # refuse a file that does not fit: the pretrained slot holds an ImageNet-1k network
    build_model(args.arch, args.file, num_classes=1000, width=args.width)
    path = download.install_file(args.arch, args.file)
    print(f"{args.arch}: installed {args.file} -> {path}")
    return EXIT_OK


def cmd_weights_convert(args: argparse.Namespace) -> int:
    from ..engine.build import build_model
    from ..engine.weights import export_state, save_safetensors

    out = Path(args.output)
    if out.suffix.lower() != ".safetensors":
        err(f"the output must be a .safetensors file, got '{out.name}'")
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
    from ..arch import LAYOUT_ARCH
    from ..engine.weights import detect_layout, read_file

    arrays, _, _ = read_file(path)
    return LAYOUT_ARCH.get(detect_layout(arrays), "se_resnet50_vd")
