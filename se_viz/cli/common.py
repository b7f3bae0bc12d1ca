"""What every se-viz subcommand shares: messages, argument types, model options, the
default weights, a progress bar."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..arch import ARCHS, PRETRAINED, SE_IMPLS
from ..errors import SEVizError

# Exit statuses of every subcommand (one place): 1 also when some inputs were skipped but
# the outputs were written; 2 as argparse's own usage errors; 3 stopped early (resumable);
# 130 interrupted (Ctrl-C: 128 + SIGINT, as a shell reports it).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130


def err(message: str) -> None:
    print(f"se-viz: error: {message}", file=sys.stderr)


def warn(message: str) -> None:
    print(f"se-viz: warning: {message}", file=sys.stderr)


def progress_bar(desc: str):
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
    from ..engine import download

    if weights is not None:
        return weights
    cached = download.cached_path(arch)
    if cached is not None:
        return str(cached)
    warn(f"no pretrained weights for {arch} in the cache; running with UNTRAINED (seeded "
          "random) weights, so the gates mean nothing. Get the real file with "
          f"'python -m se_viz weights fetch --arch {arch}' (needs internet) or save it by hand "
          f"as {download.expected_path(arch)}")
    return None


def load_model(args: argparse.Namespace):
    """The network the model options describe; ``--labels`` (capture) goes to build_model
    when it takes class names."""
    from ..engine import download
    from ..engine.build import build_model

    weights = resolve_weights(args.arch, args.weights)
    progress = None
    bar = None
    if weights == "pretrained" and download.cached_path(args.arch) is None:
        bar, progress = progress_bar(PRETRAINED[args.arch].filename)
    try:
        return build_model(args.arch, weights, reduction=args.reduction,
                           num_classes=args.num_classes, width=args.width,
                           se_impl=args.se_impl, progress=progress,
                           se_weights=getattr(args, "se_weights", None),
                           labels=getattr(args, "labels", None))
    except ValueError as exc:  # the options or the labels file: each message says what to fix
        labels = getattr(args, "labels", None)
        if labels and "labels" in str(exc):
            raise SEVizError(f"--labels {labels}: {exc}") from None
        raise SEVizError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()


def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"the reduction ratio r must be >= 1, got {text}")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def model_options(p: argparse.ArgumentParser, arch_default: str | None = "se_resnet50_vd"
                   ) -> None:
    p.add_argument("--arch", choices=ARCHS, default=arch_default,
                   help="network layout (default: %(default)s)")
    p.add_argument("--reduction", type=ratio, default=None,
                   help="SE reduction ratio r of SE-ResNet-50 weights (default 16; other "
                        "networks have their own widths)")
    p.add_argument("--se-impl", choices=SE_IMPLS, default="linear",
                   help="SE block's fully connected layers: nn.Linear (PaddleClas) or 1x1 "
                        "conv (timm); the same numbers (default: %(default)s)")
    p.add_argument("--num-classes", type=positive, default=None,
                   help="classifier size (default: read from the weights file, else 1000)")
    p.add_argument("--width", type=positive, default=None, help=argparse.SUPPRESS)  # demos


def weights_options(p: argparse.ArgumentParser) -> None:
    """--weights and --labels: the network's file and its class names (capture, explain)."""
    p.add_argument("--weights", metavar="PATH|pretrained",
                   help="weights file, or 'pretrained' to download the default "
                        "(default: the cached pretrained file, else untrained)")
    p.add_argument("--labels", metavar="FILE",
                   help="class names, one per line in class-index order (a network "
                        "fine-tuned on other classes; default: ImageNet-1k's names)")


def workers_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)),
                   help="decoding processes, 0 = decode here (default: %(default)s)")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def err_skipped(skipped: Sequence[tuple[str, str]], listing: Path) -> None:
    lines = "".join(f"\n  {name}: {why}" for name, why in skipped[:20])
    more = f"\n  ... ({len(skipped) - 20} more)" if len(skipped) > 20 else ""
    err(f"{len(skipped)} file(s) could not be used and were skipped "
         f"(all listed in {listing}):{lines}{more}")
