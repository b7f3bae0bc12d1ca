"""``se-viz archs``: every network se_viz builds, its family, attention blocks and costs.

Counts come from the built network (`se_viz.engine.networks.build`): its own block list,
its parameters and, where `se_viz.engine.costs` can count it, its multiply-adds at 224 x 224.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..arch import ARCHS, PRETRAINED, SPECS
from .common import EXIT_OK

NOT_AVAILABLE = "not available"
# what building or counting a network that se_viz cannot build or count yet raises
NOT_BUILT = (ImportError, AttributeError, NotImplementedError, KeyError)
NOT_COUNTED = (ImportError, AttributeError, NotImplementedError, KeyError, TypeError,
               ValueError, RuntimeError)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archs", help="list the networks: family, attention blocks, "
                                     "parameters, multiply-adds, pretrained file")
    p.add_argument("--no-counts", action="store_true",
                   help="do not build the networks (no blocks, parameters or multiply-adds)")
    p.set_defaults(func=cmd_archs)


@dataclass(frozen=True)
class ArchRow:
    arch: str
    family: str
    blocks: str
    params: str
    macs: str
    file: str
    cached: str


def counts(arch: str) -> tuple[str, str, str]:
    """(attention blocks, parameters, multiply-adds at 224) of an untrained ``arch``, as
    text: "not available" where it cannot be built yet, "n/a" where it cannot be counted."""
    try:
        from ..engine.networks import build

        model = build(arch)
    except NOT_BUILT:
        return NOT_AVAILABLE, "n/a", "n/a"
    blocks = model.info.blocks
    kinds = "/".join(sorted({b.kind.upper() for b in blocks}))
    try:
        from ..engine.model import count_parameters

        params = f"{count_parameters(model) / 1e6:.2f} M"
    except NOT_COUNTED:
        params = "n/a"
    try:
        from ..engine.costs import model_costs

        macs = f"{model_costs(model, 224).flops_total / 1e9:.2f} G"
    except NOT_COUNTED:
        macs = "n/a"
    return f"{len(blocks)} {kinds}", params, macs


def arch_row(arch: str, with_counts: bool = True) -> ArchRow:
    from ..engine import download

    spec, file = SPECS[arch], PRETRAINED.get(arch)
    blocks, params, macs = counts(arch) if with_counts else ("-", "-", "-")
    cached = "yes" if download.cached_path(arch) is not None else "no"
    return ArchRow(arch, spec.family, blocks, params, macs,
                   file.filename if file else "none", cached if file else "-")


HEAD = ArchRow("arch", "family", "attention", "params", "MACs@224", "pretrained file", "cached")


def cmd_archs(args: argparse.Namespace) -> int:
    rows = [HEAD] + [arch_row(a, not args.no_counts) for a in ARCHS]
    widths = [max(len(getattr(r, f)) for r in rows) for f in ArchRow.__dataclass_fields__]
    for row in rows:
        cells = [getattr(row, f) for f in ArchRow.__dataclass_fields__]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return EXIT_OK
