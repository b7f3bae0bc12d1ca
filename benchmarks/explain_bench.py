"""se_viz.explain against the eager forward of the same network, and its memory over calls.

    python benchmarks/explain_bench.py                  # every network, batch 1, 224 x 224
    python benchmarks/explain_bench.py --archs se_resnet50_vd efficientnet_b0 --repeats 5
    python benchmarks/explain_bench.py --memory 100      # RSS over 100 explain calls too

Per network: the plain eager forward (no_grad), `se_viz.capture(engine="eager")` and
`se_viz.explain` with Grad-CAM for every block, interleaved; the goal is explain <= 3x the
eager forward. ``--memory N`` runs N explain calls on se_resnet50_vd and prints the RSS
every N/10 calls (after gc + malloc_trim) with its slope per call.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import numpy as np  # noqa: E402

from common import Row, interleaved, median_ms, spread, table  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def trimmed_rss() -> float:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass
    return rss_mib()


def family_rows(archs: list[str], repeats: int) -> list[Row]:
    import paddle

    import se_viz
    sec = "explain (every block) vs eager forward, batch 1, 224 x 224, ms"
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    rows = []
    for arch in archs:
        model = se_viz.build_model(arch)
        xt = paddle.to_tensor(x)

        def forward():
            with paddle.no_grad():
                return model(xt).numpy()
        t = interleaved({"forward": forward,
                         "capture": lambda: se_viz.capture(model, x, engine="eager"),
                         "explain": lambda: se_viz.explain(model, x)}, repeats, 1)
        m = {k: median_ms(v) for k, v in t.items()}
        ratio = float(np.median(np.asarray(t["explain"]) / np.asarray(t["forward"])))
        rows.append(Row(sec, f"{arch} ({len(model.info.blocks)} blocks)", m["explain"], "ms",
                        f"{ratio:.2f}x eager forward {m['forward']:.1f} ms (goal <= 3)",
                        f"eager capture {m['capture']:.1f} ms; {spread(t['explain'])}"))
    return rows


def memory_rows(calls: int) -> list[Row]:
    import se_viz
    sec = f"explain memory over {calls} calls (se_resnet50_vd, 224 x 224)"
    model = se_viz.build_model("se_resnet50_vd")
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    for _ in range(3):  # warm-up: allocator pools, lazy imports
        se_viz.explain(model, x)
    readings, every = [], max(1, calls // 10)
    for i in range(calls):
        se_viz.explain(model, x)
        if (i + 1) % every == 0:
            readings.append(trimmed_rss())
    slope = float(np.polyfit(np.arange(len(readings)) * every, readings, 1)[0]) * 1024
    return [Row(sec, "RSS after each tenth", " ".join(f"{r:.0f}" for r in readings), "MiB"),
            Row(sec, "slope", slope, "KiB/call", "flat: |slope| < 50 KiB per call"),
            Row(sec, "growth first -> last", readings[-1] - readings[0], "MiB")]


def main() -> None:
    from se_viz.arch import ARCHS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="*", default=list(ARCHS))
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--memory", type=int, default=0, metavar="N")
    args = ap.parse_args()
    start = time.perf_counter()
    rows = family_rows(args.archs, args.repeats)
    if args.memory:
        rows += memory_rows(args.memory)
    print(table(rows))
    print(f"\n{len(rows)} figures in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
