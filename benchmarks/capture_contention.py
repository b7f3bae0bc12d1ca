"""Captures beside Python work: how ONNX Runtime's threads share 2 cores with the app.

    python benchmarks/capture_contention.py [--width 8] [--seconds 4] [--rounds 3]

In a busy app server one thread runs captures back to back (the fair queue's turns) while
other threads do Python work: other sessions' pages, figures, the websocket. This runs
that: captures of the full SE-ResNet-50 with every block's maps (as the app runs them) in
one thread, a Block explorer view change (4 figures + the JSON st.plotly_chart makes) in a
loop in another, for ONNX Runtime sessions of the same graph with 2 threads spinning,
2 threads not spinning (what the app uses: SE_VIZ_SPIN=0) and 1 thread. Rounds are
interleaved so that
the machine's noise falls on all alike. Prints capture and view-change times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0, help="per configuration and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import onnxruntime as ort
    import plotly.io as pio
    import plotly.tools

    import se_viz
    from se_viz import analysis, images
    from se_viz.engine import traced
    from se_viz.plots import gate_histogram, maps_mosaic, squeeze_gate_scatter

    model = se_viz.build_model("se_resnet50_vd", width=args.width)
    seen: list[bytes] = []
    make = traced.ort_session
    traced.ort_session = lambda onnx, threads: seen.append(onnx) or make(onnx, threads)
    graph, _ = traced.graph_for(model, maps=True)
    traced.ort_session = make
    data = (ROOT / "assets" / "cat_chelsea.jpg").read_bytes()
    crop = np.asarray(images.center_crop(images.decode_image(data, "cat"), model.preprocessing),
                      np.uint8)
    batch = images.normalize(crop, model.preprocessing)[None]
    names = [b.name for b in model.info.blocks]
    wanted = graph.outputs[:3] + [graph._map_out[b] for b in names]
    cap = graph.run(batch, names)
    block = "SE_3_4"
    g, s, maps = cap.gates[block][0], cap.squeeze[block][0], cap.features[block].before[0]

    def view() -> None:
        idx = analysis.top_channels(g, 6)
        before = maps[idx].astype(np.float16).astype(np.float32)
        rows = [("before", before), ("after", before * g[idx][:, None, None])]
        for fig in (gate_histogram(g, block),
                    squeeze_gate_scatter(s, g, block, analysis.squeeze_vs_gate(s, g)),
                    maps_mosaic(rows, idx, g[idx]), maps_mosaic(rows, idx, g[idx])):
            pio.to_json(plotly.tools.return_figure_from_figure_or_data(fig, True),
                        validate=False)

    def session(threads: int, spin: bool):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        return ort.InferenceSession(seen[-1], opts, providers=["CPUExecutionProvider"])

    def capture(sess) -> None:
        out = sess.run(wanted, {graph.input: batch})
        for m in out[3:]:
            m.astype(np.float16)

    def trial(sess) -> tuple[list[float], list[float]]:
        stop, caps, views = threading.Event(), [], []

        def burst() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                capture(sess)
                caps.append(time.perf_counter() - t)

        thread = threading.Thread(target=burst)
        thread.start()
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            view()
            views.append(time.perf_counter() - t)
            time.sleep(0.05)  # a user's pace, not a loop
        stop.set()
        thread.join()
        return caps, views

    def alone(fn, n: int = 10) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    n = len(os.sched_getaffinity(0))
    configs = {f"{n} threads, spinning": session(n, True),
               f"{n} threads, no spinning (the app)": session(n, False),
               "1 thread": session(1, False)}
    results = {k: ([], []) for k in configs}
    for _ in range(args.rounds):
        for name, sess in configs.items():
            caps, views = trial(sess)
            results[name][0].extend(caps)
            results[name][1].extend(views)
    print(f"view change alone: {1e3 * alone(view):.0f} ms (SE_VIZ_WIDTH={args.width}, "
          f"{n} cores, load avg {os.getloadavg()[0]:.2f})")
    for name, (caps, views) in results.items():
        rate = len(caps) / (args.rounds * args.seconds)
        print(f"{name}: capture alone {1e3 * alone(lambda: capture(configs[name])):.0f} ms, "
              f"beside views {1e3 * statistics.median(caps):.0f} ms ({rate:.1f}/s); "
              f"view beside captures p50 {1e3 * statistics.median(views):.0f} ms, "
              f"max {1e3 * max(views):.0f} ms")


if __name__ == "__main__":
    main()
