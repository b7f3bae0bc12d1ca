"""Capture against the floor: ONNX Runtime's plain forward of timm's own export of the
same network, with the same weights, every family, batch 1 and 8.

    python benchmarks/timm_export.py ...       # once, in a venv with torch + timm (its docstring)
    python benchmarks/floor.py --timm-onnx ~/.cache/se_viz/timm_onnx
    python benchmarks/floor.py --timm-onnx DIR --archs se_resnet50 --batch 1 --repeats 60

For each network, se_viz builds its own network from timm's file (``DIR/<arch>.pth``,
so both sides compute the same numbers) and four cases run interleaved in one process,
back to back, in a new seeded order every round (``graph`` and ``capture`` share a session:
in a fixed order one would always find the other's weights in the caches), ``--gap`` adds
idle time before each call (on this VM the idle second vCPU then takes 5-10 ms to wake,
which swamps what is measured here):

* timm: ONNX Runtime on ``DIR/<arch>.onnx`` (torch's exporter), the same session options
  as se_viz's graphs (threads, spinning, every graph optimisation);
* plain: se_viz's network, logits only, traced and converted the way the fast engine does
  (its session fixed to the network's input size, as the fast engine's);
* graph: the fast engine's graph (logits, every gate and squeeze), ``session.run`` alone;
* capture: ``se_viz.capture(model, x)``, everything a user's call does.

Ratios are medians of per-round ratios. Then where the rest goes: the model check before
every run (`traced.ModelState`), timed right after a forward as captures run it, asking
each tensor for its address and version (as where `compat.tensor_words` cannot read
Paddle's objects) and also comparing the dicts (as where the dict tags are not available),
and the graphs' nodes after ONNX Runtime's optimisations.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import numpy as np  # noqa: E402

from common import Row, interleaved, machine, median_ms, table  # noqa: E402

ARCHS = ("se_resnet50", "seresnext50_32x4d", "legacy_seresnet50", "ecaresnet50d",
         "efficientnet_b0", "mobilenetv3_large_100", "regnety_008", "lcnet_100")
SECTION = "The floor: capture vs ONNX Runtime on timm's export (same weights)"
DEFAULT_DIR = Path(os.environ.get("SE_VIZ_TIMM_ONNX", "~/.cache/se_viz/timm_onnx")).expanduser()


def optimised_ops(onnx_bytes: bytes, threads: int, size=None) -> collections.Counter:
    """Node types of ``onnx_bytes`` after ONNX Runtime's optimisations (as it runs it;
    ``size``: with the height and width fixed, as the fast engine's session)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        if size is not None:
            opts.add_free_dimension_override_by_name("height", int(size[0]))
            opts.add_free_dimension_override_by_name("width", int(size[1]))
        ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
        return collections.Counter(n.op_type for n in graph.node)


def check_cost(model, graph, x: np.ndarray, repeats: int) -> dict[str, float]:
    """Medians (ms) of the model check right after a forward: as captures run it (dict tags,
    the tensors' words read from Paddle's objects), asking each tensor for its address and
    version instead (where the words cannot be read), and comparing the dicts too (where
    the interpreter has no dict tags)."""
    from se_viz.engine import compat, dict_tags, traced

    outs = [o.name for o in graph.session.get_outputs()]
    states = {"used": traced.ModelState(model)}
    saved_tags, saved_words = dict_tags.available, compat.tensor_words
    compat.tensor_words = lambda ts: None
    try:
        states["calls"] = traced.ModelState(model)
        dict_tags.available = lambda: False
        states["compare"] = traced.ModelState(model)
    finally:
        dict_tags.available, compat.tensor_words = saved_tags, saved_words
    times: dict[str, list[float]] = {k: [] for k in states}
    for _ in range(repeats):
        for name, state in states.items():
            graph.session.run(outs, {graph.input: x})
            start = time.perf_counter()
            assert not state.changed()
            times[name].append(time.perf_counter() - start)
    return {k: median_ms(v) for k, v in times.items()}


def arch_rows(arch: str, folder: Path, batches: list[int], repeats: int, gap: float = 0.0
              ) -> list[Row]:
    import se_viz
    from run import paired, plain_onnx
    from se_viz.engine import traced

    model = se_viz.build_model(arch, weights=folder / f"{arch}.pth")
    threads = traced.cpu_threads()
    timm_bytes = (folder / f"{arch}.onnx").read_bytes()
    plain_bytes = plain_onnx(model)
    timm = traced.ort_session(timm_bytes, threads)
    plain = traced.ort_session(plain_bytes, threads, size=traced.own_size(model))
    graph, _ = traced.graph_for(model)
    outs = [o.name for o in graph.session.get_outputs()]
    tin = timm.get_inputs()[0].name
    rows = []
    for n in batches:
        x = np.random.default_rng(n).normal(0, 1, (n, 3, 224, 224)).astype(np.float32)
        gap = float(np.abs(timm.run(None, {tin: x})[0] - se_viz.capture(model, x).logits).max())
        t = interleaved({"timm": lambda: timm.run(None, {tin: x}),
                         "plain": lambda: plain.run(None, {"images": x}),
                         "graph": lambda: graph.session.run(outs, {graph.input: x}),
                         "capture": lambda: se_viz.capture(model, x)}, repeats, 3, gap,
                        shuffle=True)
        m = {k: median_ms(v) / n for k, v in t.items()}
        r = {k: paired(t[k], t["timm"]) for k in t}
        goal = "goal <= 1.03" if arch == "se_resnet50" else "goal <= 1.10"
        rows.append(Row(SECTION, f"{arch}, batch {n}: capture / timm", r["capture"], "x", goal,
                        f"capture {m['capture']:.2f} ms/img, timm {m['timm']:.2f}, plain "
                        f"{m['plain']:.2f} ({r['plain']:.3f}x), graph {m['graph']:.2f} "
                        f"({r['graph']:.3f}x); capture / plain "
                        f"{paired(t['capture'], t['plain']):.3f}x; logits within {gap:.1e}"))
    check = check_cost(model, graph, np.zeros((1, 3, 224, 224), np.float32),
                       max(10, repeats // 2))
    ops = {"timm": optimised_ops(timm_bytes, threads),
           "plain": optimised_ops(plain_bytes, threads, traced.own_size(model))}
    differ = sorted(k for k in ops["timm"].keys() | ops["plain"].keys()
                    if ops["timm"][k] != ops["plain"][k])
    rows.append(Row(SECTION, f"{arch}: model check before each run, right after a forward",
                    check["used"], "ms", f"asking each tensor: {check['calls']:.2f} ms; "
                    f"also comparing the dicts: {check['compare']:.2f} ms",
                    f"{len(model.state_dict())} tensors; nodes after ORT's optimisations: "
                    f"timm {sum(ops['timm'].values())}, se_viz {sum(ops['plain'].values())}"
                    + ("; differ in " + ", ".join(f"{k} {ops['timm'][k]}/{ops['plain'][k]}"
                                                  for k in differ) if differ else "")))
    traced.forget(model)
    return rows


def floor_rows(folder: Path, archs: list[str], batches: list[int], repeats: int,
               gap: float = 0.0, quiet: bool = False) -> list[Row]:
    missing = [a for a in archs if not (folder / f"{a}.onnx").is_file()
               or not (folder / f"{a}.pth").is_file()]
    rows = [Row(SECTION, f"{a}: skipped", float("nan"), "", "",
                f"no {folder}/{a}.onnx + .pth: make them with benchmarks/timm_export.py")
            for a in missing]
    for arch in archs:
        if arch not in missing:
            rows += arch_rows(arch, folder, batches, repeats, gap)
            if not quiet:
                print(table(rows[-len(batches) - 1:]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timm-onnx", type=Path, default=DEFAULT_DIR,
                    help=f"folder of timm_export.py's files (default {DEFAULT_DIR})")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--gap", type=float, default=0.0,
                    help="idle seconds before each timed call (default 0: back to back; "
                         "on this VM an idle gap adds the wake-up of the second vCPU, 5-10 "
                         "ms, to whichever case runs next)")
    args = ap.parse_args()
    os.environ.setdefault("SE_VIZ_HOME", tempfile.mkdtemp(prefix="se_viz_floor_"))
    info = machine()
    print(f"machine: {info.get('cpu', '?')}, {info['cores']} cores; load average "
          f"{info['load_avg'][0]:.2f}", flush=True)
    start = time.perf_counter()
    rows = floor_rows(args.timm_onnx, args.archs, args.batch, args.repeats, args.gap)
    print("\n" + table(rows))
    print(f"\n({time.perf_counter() - start:.0f} s; load average now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
