"""se_viz benchmark suite: one command, one table, every figure measured in this run.

    python benchmarks/run.py            # full run (about 3-4 minutes on 2 cores)
    python benchmarks/run.py --quick    # smoke test (under 2 minutes)
    python benchmarks/run.py --json results.json
    python benchmarks/run.py --quick --families efficientnet_b0 regnety_008   # some networks

Every timing is a median over repeated calls after warm-up; cases that are compared run
interleaved in one process. Graphs are built into a temporary cache (removed at the end),
so the build time is a cold one. The PyTorch peer runs in its own process when torch can
be imported by ``--torch-python`` (default: this interpreter, or $SE_VIZ_TORCH_PYTHON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import numpy as np  # noqa: E402

from common import Plan, Row, interleaved, machine, median_ms, spread, table  # noqa: E402

ISSUE = {"ort": 40.6, "onednn": 47.5, "torch": "60-62", "eager2": "195-247", "eager1": "296-406"}
GFLOP = 8.18  # canonical SE-ResNet-50 at 224 (the vd stem adds about 6%)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats: a smoke test")
    ap.add_argument("--json", type=Path, help="also write the rows and machine info here")
    ap.add_argument("--arch", default="se_resnet50_vd", choices=["se_resnet50_vd", "se_resnet50"])
    ap.add_argument("--families", nargs="*", metavar="ARCH",
                    help="networks for the per-family table (default: every arch; "
                         "give none to skip it)")
    ap.add_argument("--families-only", action="store_true",
                    help="run the per-family table alone")
    ap.add_argument("--weights", help="weights file (default: seeded, untrained)")
    ap.add_argument("--timm-onnx", type=Path, default=None,
                    help="folder of benchmarks/timm_export.py's files: the floor rows "
                         "(default $SE_VIZ_TIMM_ONNX or ~/.cache/se_viz/timm_onnx)")
    ap.add_argument("--no-refit", action="store_true", help="skip the refit rows (~1 min)")
    ap.add_argument("--torch-python", default=os.environ.get("SE_VIZ_TORCH_PYTHON", sys.executable),
                    help="interpreter with torch for the PyTorch peer")
    return ap.parse_args()


def inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 224, 224)).astype(np.float32)


def _plain_forward(model, images):  # plain Python for the tracer, as in se_viz.engine.traced
    return model(images)


def plain_graph(model):
    """The model's plain forward (logits only, no recorder), traced and converted the same
    way as the fast engine's graph, in an ONNX Runtime session with the same options."""
    from se_viz.engine import traced

    return traced.ort_session(plain_onnx(model), traced.cpu_threads(),
                              size=traced.own_size(model))


def plain_onnx(model) -> bytes:
    """The ONNX bytes of ``model``'s plain forward (see `plain_graph`)."""
    import tempfile

    import paddle

    from se_viz.engine import traced

    forward = paddle.jit.not_to_static(_plain_forward)

    class Plain(paddle.nn.Layer):  # a wrapper: to_static must not replace model.forward
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            return forward(self.inner, images)

    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", "images")]
    with tempfile.TemporaryDirectory() as tmp, traced.quiet():
        prefix = Path(tmp) / "plain"
        paddle.jit.save(paddle.jit.to_static(Plain(model), input_spec=spec, full_graph=True),
                        str(prefix))
        return traced.to_onnx(prefix)


def build_rows(model_factory) -> list[Row]:
    """Cold trace into the empty cache, then a second model object loading it from disk,
    then the first page load of the app as a fresh process does it (model + maps graph)."""
    from se_viz.engine import traced
    sec = "Fast graph (traced, ONNX Runtime), once per network and weights"
    start = time.perf_counter()
    model = model_factory()
    built_s = time.perf_counter() - start
    _, built = traced.graph_for(model)
    _, loaded = traced.graph_for(model_factory())
    _, maps = traced.graph_for(model, maps=True)
    size = built.path.stat().st_size / 2**20 if built.path else float("nan")
    return [
        Row(sec, "build the model (seeded weights)", built_s, "s"),
        Row(sec, "make the graph: trace, key, paddle2onnx, probe, session", built.seconds, "s",
            "", f"{size:.0f} MiB file"),
        Row(sec, "make the variant with feature-map outputs (app)", maps.seconds, "s",
            "", "once per network and weights, at app start-up"),
        Row(sec, "new model object, same weights: trace for the key, load from disk",
            loaded.seconds, "s", f"{built.seconds / loaded.seconds:.1f}x faster than making it",
            loaded.source),
        Row(sec, "first page load on an empty cache: model + maps graph",
            built_s + maps.seconds, "s", "what the app waits for before its first page",
            "a fresh process: benchmarks/vs_previous.py measures that too"),
        Row(sec, "cached at", "$SE_VIZ_HOME or ~/.cache/se_viz + /graphs/<key>.<sha>.onnx",
            note=f"threads: {built.threads}"),
    ]


def engine_rows(model, plan: Plan) -> tuple[list[Row], float]:
    """Batch 1: Paddle eager (1 thread, all cores) and the fast graph, plain vs capture.

    Each engine's cases are interleaved with each other; the engines run one after the
    other, so no engine's idle worker threads sit on another's timings.
    """
    import paddle

    import se_viz
    from se_viz.engine.runtime import cpu_threads, set_cpu_threads
    sec = "Engines, batch 1, ms per image"
    x, xt = inputs(1), paddle.to_tensor(inputs(1))
    plain = plain_graph(model)
    canonical = se_viz.build_model("se_resnet50") if model.info.arch != "se_resnet50" else model

    def eager_plain():
        with paddle.no_grad():
            return model(xt).numpy()

    def eager_one_thread():
        set_cpu_threads(1)
        try:
            return eager_plain()
        finally:
            set_cpu_threads()

    f = interleaved({"fast": lambda: plain.run(None, {"images": x}),
                     "fast_cap": lambda: se_viz.capture(model, x),
                     "timm_cap": lambda: se_viz.capture(canonical, x)},
                    plan.n("fast"), plan.warmup)
    time.sleep(0.5)
    e = interleaved({"eager": eager_plain,
                     "eager_cap": lambda: se_viz.capture(model, x, engine="eager")},
                    plan.n("slow"), plan.warmup)
    e1 = interleaved({"eager1": eager_one_thread}, max(3, plan.n("heavy")), 1)
    t = {**f, **e, **e1}
    m = {k: median_ms(v) for k, v in t.items()}
    return _engine_table(sec, m, t, cpu_threads()), m["timm_cap"]


def _engine_table(sec: str, m: dict, t: dict, n: int) -> list[Row]:
    return [
        Row(sec, "Paddle eager forward, 1 thread (Paddle's default)", m["eager1"], "ms",
            f"issue: {ISSUE['eager1']}"),
        Row(sec, f"Paddle eager forward, {n} threads", m["eager"], "ms",
            f"issue: {ISSUE['eager2']}", f"{m['eager1'] / m['eager']:.2f}x vs 1 thread"),
        Row(sec, "Paddle eager capture all 16 gates (hooks)", m["eager_cap"], "ms",
            f"{m['eager_cap'] / m['eager']:.3f}x eager forward", "interleaved with the above"),
        Row(sec, "fast graph forward, logits only", m["fast"], "ms",
            f"issue: ORT {ISSUE['ort']}, oneDNN {ISSUE['onednn']}",
            f"{GFLOP * 1e3 / m['fast']:.0f} GFLOP/s; {spread(t['fast'])}"),
        Row(sec, "se_viz.capture all 16 gates + squeeze (fast path)", m["fast_cap"], "ms",
            f"{m['fast_cap'] / m['fast']:.3f}x fast forward (goal <= 1.03)",
            f"paired: median of per-round ratios {paired(t['fast_cap'], t['fast']):.3f}x; "
            f"{spread(t['fast_cap'])}"),
        Row(sec, "speed-up of capture: eager hooks -> fast path", m["eager_cap"] / m["fast_cap"],
            "x"),
        Row(sec, "se_viz.capture, timm layout se_resnet50 (fast path)", m["timm_cap"], "ms",
            "same network as the PyTorch peer", spread(t["timm_cap"])),
    ]


def paired(a: list[float], b: list[float]) -> float:
    """Median of a[i] / b[i] over the interleaved rounds: each ratio compares two calls made
    moments apart, so slow drifts of a shared machine cancel."""
    return float(np.median(np.asarray(a) / np.asarray(b)))


def torch_rows(python: str, fast_ms: float, plan: Plan) -> list[Row]:
    """PyTorch eager in its own process, compared with se_viz.capture of the same network."""
    sec = "Engines, batch 1, ms per image"
    cmd = [python, str(HERE / "torch_peer.py"), "--repeats", str(plan.n("slow")),
           "--warmup", str(plan.warmup)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Row(sec, "PyTorch peer", "skipped", note=str(exc)[:80])]
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return [Row(sec, "PyTorch peer", "skipped", note=f"torch not usable: {last[:80]}")]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    b1, b8 = res["ms_per_image"]["1"], res["ms_per_image"].get("8")
    return [Row(sec, "PyTorch eager forward (own process, after the above)", b1, "ms",
                f"issue: {ISSUE['torch']}", res["engine"]),
            Row(sec, "timm-layout capture speed-up over PyTorch eager forward", b1 / fast_ms,
                "x", "goal >= 1.5", f"PyTorch batch 8: {b8:.1f} ms/img" if b8 else "")]


def family_rows(archs: list[str], plan: Plan) -> list[Row]:
    """Every network at batch 1, 224x224: se_viz.capture (fast path: every gate + squeeze)
    against the same network's plain forward traced the same way, interleaved."""
    import se_viz
    from se_viz.engine import costs, traced
    sec = "Every network: capture vs plain forward, batch 1, ms per image"
    x = inputs(1)
    rows = []
    for arch in archs:
        model = se_viz.build_model(arch)
        plain = plain_graph(model)
        traced.graph_for(model)
        t = interleaved({"plain": lambda: plain.run(None, {"images": x}),
                         "capture": lambda: se_viz.capture(model, x)},
                        plan.n("fast"), plan.warmup, gap_s=0.0)  # floor.py: why no gap
        gmacs = costs.model_costs(model, 224).flops_total / 1e9
        m = {k: median_ms(v) for k, v in t.items()}
        rows.append(Row(sec, f"{arch}: {len(model.info.blocks)} blocks, {gmacs:.2f} GMACs",
                        m["capture"], "ms",
                        f"{paired(t['capture'], t['plain']):.3f}x plain {m['plain']:.1f} ms",
                        f"{2 * gmacs * 1e3 / m['plain']:.0f} GFLOP/s plain; "
                        f"{spread(t['capture'])}"))
        traced.forget(model)
    return rows


def throughput_rows(model, plan: Plan) -> list[Row]:
    import se_viz
    sec = "Throughput of se_viz.capture (fast path)"
    time.sleep(0.5)
    xs = {n: inputs(n) for n in (1, 8, 32)}
    cases = {n: (lambda n=n: se_viz.capture(model, xs[n], batch_size=n)) for n in xs}
    t = interleaved(cases, plan.n("heavy"), plan.warmup)
    rows = []
    for n, times in t.items():
        ms = median_ms(times) / n
        goal = "goal <= 45 ms/img" if n == 8 else ""
        rows.append(Row(sec, f"batch {n}", 1e3 / ms, "img/s", goal, f"{ms:.1f} ms/img"))
    x8 = xs[8]
    e8 = interleaved({"e": lambda: se_viz.capture(model, x8, engine="eager")},
                     max(2, plan.n("heavy") // 2), 1)["e"]
    rows.append(Row(sec, "eager hooks capture, batch 8", 8e3 / median_ms(e8), "img/s",
                    f"issue: {ISSUE['eager2']} ms/img", f"{median_ms(e8) / 8:.1f} ms/img"))
    return rows


def agreement_rows(model) -> list[Row]:
    """Fast path vs eager hooks on the sample photos: largest differences, top-5."""
    import se_viz
    from se_viz.images import load_image
    sec = "Fast path vs eager hooks (sample photos)"
    photos = sorted((ROOT / "assets").glob("*.jpg"))
    imgs = [load_image(p) for p in photos] if photos else None
    x = imgs or inputs(4, seed=3)
    a, b = se_viz.capture(model, x, engine="fast"), se_viz.capture(model, x, engine="eager")
    gate = max(float(np.abs(a.gates[k] - b.gates[k]).max()) for k in a.gates)
    sq = max(float(np.abs(a.squeeze[k] - b.squeeze[k]).max()) for k in a.squeeze)
    same = int((a.top_k(5)[0] == b.top_k(5)[0]).all(axis=1).sum())
    what = f"{len(a)} photos" if imgs else f"{len(a)} random inputs"
    return [Row(sec, "largest gate difference", gate, "", "limit 1e-4", what),
            Row(sec, "largest squeeze difference", sq, "", "limit 1e-4"),
            Row(sec, "largest logit difference", float(np.abs(a.logits - b.logits).max())),
            Row(sec, "same top-5 (in order)", f"{same}/{len(a)}")]


def memory_rows(arch: str, quick: bool) -> list[Row]:
    """Peak RSS of one capture, each in a fresh process (the graph comes from the cache)."""
    sec = "Peak memory of one capture (own process)"
    runs = [("fast", 1), ("fast", 32)] + ([] if quick else [("eager", 1), ("eager", 32)])
    rows = []
    for engine, n in runs:
        cmd = [sys.executable, str(HERE / "memory_probe.py"), "--engine", engine,
               "--batch", str(n), "--arch", arch]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            rows.append(Row(sec, f"{engine}, batch {n}", "failed", note=proc.stderr[-80:]))
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(Row(sec, f"{engine}, batch {n}: peak RSS", r["peak_mb"], "MiB",
                        f"+{r['peak_mb'] - r['baseline_mb']:.0f} MiB over the loaded process",
                        "" if r["peak_is_capture_only"] else "peak of the whole process"))
    return rows


def header(args: argparse.Namespace, info: dict, weights: str) -> str:
    cmd = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    return (f"se_viz benchmarks ({'quick' if args.quick else 'full'}): {cmd}\n"
            f"machine: {info.get('cpu', '?')}, {info['cores']} cores, AVX-512 "
            f"{'yes' if info.get('avx512') else 'no'}; Python {info['python']}; "
            f"load average at start {info['load_avg'][0]:.2f}\n"
            f"model: {args.arch}, {weights}, 224x224 float32\n")


def main() -> None:
    args = parse_args()
    plan = Plan(warmup=1, repeats=4, quick=True) if args.quick else Plan(2, 30, False)
    info = machine()
    home = tempfile.mkdtemp(prefix="se_viz_bench_")
    os.environ["SE_VIZ_HOME"] = home  # cold graph cache, removed at the end
    started = time.perf_counter()
    try:
        import se_viz
        from app_bench import run as app_rows
        from se_viz.engine import traced as fast

        if args.families_only:
            from se_viz.arch import ARCHS
            print(header(args, info, "seeded, untrained"), flush=True)
            rows = family_rows(args.families or list(ARCHS), plan)
            return _report(rows, started, args, info)

        def factory():
            return se_viz.build_model(args.arch, weights=args.weights)
        model = factory()
        weights = "weights " + Path(args.weights).name if args.weights else "seeded, untrained"
        print(header(args, info, weights), flush=True)
        rows = build_rows(factory)
        eng, fast_ms = engine_rows(model, plan)
        rows += eng + torch_rows(args.torch_python, fast_ms, plan)
        rows += throughput_rows(model, plan) + agreement_rows(model)
        rows += app_rows(model, ROOT / "assets" / "cat_chelsea.jpg", plan)
        rows += memory_rows(args.arch, args.quick)
        fast.forget(model)
        from se_viz.arch import ARCHS
        rows += family_rows(list(ARCHS) if args.families is None else args.families, plan)
        rows += floor_section(args, plan)
        if not (args.quick or args.no_refit):
            rows += refit_rows()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    _report(rows, started, args, info)


def floor_section(args: argparse.Namespace, plan: Plan) -> list[Row]:
    """benchmarks/floor.py's rows: capture vs ONNX Runtime on timm's export (--quick: the
    issue's network at batch 1 only); a "skipped" row saying how when there are no files."""
    import floor

    folder = args.timm_onnx or floor.DEFAULT_DIR
    archs = ["se_resnet50"] if args.quick else list(floor.ARCHS)
    batches = [1] if args.quick else [1, 8]
    return floor.floor_rows(folder, archs, batches, max(plan.n("fast"), 10), quiet=True)


def refit_rows() -> list[Row]:
    """benchmarks/refit_bench.py's fit rows: 16 blocks at r = 32 from 500 images' pairs."""
    import refit_bench

    from se_viz.engine.build import build_model

    model = build_model("se_resnet50_vd", None)
    data = refit_bench.pairs(model, 500, Path(tempfile.gettempdir()) / "se_viz_refit_bench")
    rows, _ = refit_bench.bench_fit(model, data, 32, 400)
    rows[0].vs = "goal <= 60 s"
    return rows


def _report(rows: list[Row], started: float, args: argparse.Namespace, info: dict) -> None:
    elapsed = time.perf_counter() - started
    print(table(rows))
    print(f"\n{len(rows)} figures in {elapsed:.0f} s; load average now "
          f"{os.getloadavg()[0]:.2f}")
    if args.json:
        info["load_avg_end"] = os.getloadavg()
        args.json.write_text(json.dumps({"machine": info, "quick": args.quick,
                                         "seconds": elapsed,
                                         "rows": [r.as_dict() for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
