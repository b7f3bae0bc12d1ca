"""Channel atlas queries on a synthetic gate store of SE-ResNet-50's shape (issue 19).

    python benchmarks/atlas_bench.py                    # 50,000 images x 15,104 gates
    python benchmarks/atlas_bench.py --images 5000      # quicker
    python benchmarks/atlas_bench.py --store DIR        # build (or reuse) the store in DIR
    python benchmarks/atlas_bench.py --capture          # also time one SE-ResNet-50 capture

Writes a results folder (manifest.json + gates.parquet, 1.5 GB at 50,000 images) of random
gates for SE-ResNet-50's 16 blocks (`se_viz.arch.block_channels`: no network is built) in
100 classes, through the writer `se-viz analyze` uses (`se_viz.dataset.store.write_store`),
then times each query in a fresh process: `GateStore.top` of one channel (goal <= 0.5 s and
<= 300 MB extra memory), `per_class`, and `nearest` in one block (goal <= 1 s plus one
capture). Memory: the process's peak RSS during the query (VmHWM, reset through
/proc/self/clear_refs) minus its RSS before it; the store file is read from the page cache
("first" is the first call of a fresh process, "median" of the next ``--repeats``).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import numpy as np  # noqa: E402

N_CLASSES = 100
QUERIES = {  # name -> (method, block, goal in s)
    "top-10, SE_5_3 (2048 ch)": ("top", "SE_5_3", 0.5),
    "top-10, SE_2_1 (256 ch)": ("top", "SE_2_1", 0.5),
    "bottom-10 in one class, SE_5_3": ("top_class", "SE_5_3", 0.5),
    "per-class summary, SE_5_3": ("per_class", "SE_5_3", None),
    "nearest-10, SE_5_3 (2048 ch)": ("nearest", "SE_5_3", 1.0),
    "nearest-10, SE_4_6 (1024 ch)": ("nearest", "SE_4_6", 1.0),
    "nearest-10, SE_2_1 (256 ch)": ("nearest", "SE_2_1", 1.0),
}


def build_store(out: Path, n: int, row_group: int) -> float:
    """A results folder of ``n`` images of random gates; returns the seconds it took."""
    from se_viz.arch import block_channels
    from se_viz.dataset.store import STORE_FILE, StoreChunk, write_store

    channels = block_channels()
    classes = [f"class_{k:03d}" for k in range(N_CLASSES)]
    key = {"format": "se_viz.dataset/1", "n_files": n, "classes": classes,
           "blocks": list(channels), "channels": list(channels.values()),
           "arch": "se_resnet50_vd", "weights_sha256": None, "seed": 0, "reduction": None,
           "num_classes": None, "width": None, "batch_size": 16, "shard_size": 256,
           "preprocessing": {"resize": 256, "crop": 224, "interpolation": "bilinear",
                             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    manifest = {"key": key, "key_sha256": "synthetic", "root": str(out / "images"),
                "weights": "untrained", "untrained": True}
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    rng, width, start = np.random.default_rng(0), sum(channels.values()), time.perf_counter()

    def chunks():
        for lo in range(0, n, 1024):
            m = min(1024, n - lo)
            index = np.arange(lo, lo + m)
            labels = index * N_CLASSES // n
            yield StoreChunk(index, [f"{classes[k]}/{i:06d}.jpg" for i, k in zip(index, labels)],
                             labels, rng.integers(0, 65536, (m, width), dtype=np.uint16),
                             np.full((m, 2), -1, np.int64))
    write_store(out / STORE_FILE, key, "synthetic", chunks(), row_group)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- one query


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        return True
    except OSError:
        return False


def run_query(store_dir: str, name: str, repeats: int) -> dict:
    """In this (fresh) process: open the store, time ``name``; peak extra RSS of the first."""
    import ctypes

    import pyarrow as pa

    from se_viz.dataset.atlas import GateStore

    method, block, _ = QUERIES[name]
    t0 = time.perf_counter()
    store = GateStore.open(store_dir)
    opened = time.perf_counter() - t0
    query = np.random.default_rng(1).uniform(0, 1, store.channels[block])
    call = {"top": lambda: store.top(block, 117, k=10),
            "top_class": lambda: store.top(block, 117, k=10, bottom=True, klass="class_042"),
            "per_class": lambda: store.per_class(block, 117),
            "nearest": lambda: store.nearest(query, block, k=10)}[method]
    times, peaks = [], []
    for _ in range(repeats + 1):
        gc.collect()
        pa.default_memory_pool().release_unused()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before, resettable = rss_mib(), reset_peak()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        peaks.append(rss_mib("VmHWM") - before if resettable else float("nan"))
    return {"open_s": opened, "first_s": times[0], "median_s": float(np.median(times[1:])),
            "peak_extra_mib": max(peaks), "rss_mib": rss_mib()}


def capture_seconds(repeats: int) -> dict:
    """One 224 x 224 image through SE-ResNet-50 (untrained weights, the default engine)."""
    from PIL import Image

    import se_viz
    from se_viz.images import preprocess

    model = se_viz.build_model("se_resnet50_vd", weights=None)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    x = preprocess(img, model.preprocessing)[None]
    start = time.perf_counter()
    se_viz.capture(model, x)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        se_viz.capture(model, x)
        times.append(time.perf_counter() - start)
    return {"first_s": first, "median_s": float(np.median(times))}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--store", type=Path, help="folder for the store (kept; reused if there)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--row-group", type=int, default=None)
    p.add_argument("--capture", action="store_true", help="also time one capture")
    p.add_argument("--query", nargs=2, metavar=("DIR", "NAME"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.query:  # the child process
        print(json.dumps(run_query(args.query[0], args.query[1], args.repeats)))
        return 0
    with tempfile.TemporaryDirectory(prefix="atlas_bench_") as tmp:
        out = args.store or Path(tmp) / "results"
        if not (out / "gates.parquet").exists():
            from se_viz.dataset.store import ROW_GROUP
            seconds = build_store(out, args.images, args.row_group or ROW_GROUP)
            print(f"built {out / 'gates.parquet'}: {args.images:,} images, "
                  f"{(out / 'gates.parquet').stat().st_size / 1e9:.2f} GB in {seconds:.1f} s")
        print(f"{'query':34} {'first s':>8} {'median s':>9} {'goal s':>7} {'peak +MiB':>10}")
        for name, (_, _, goal) in QUERIES.items():
            r = json.loads(subprocess.run(
                [sys.executable, __file__, "--query", str(out), name, "--repeats",
                 str(args.repeats)], capture_output=True, text=True, check=True).stdout)
            print(f"{name:34} {r['first_s']:8.3f} {r['median_s']:9.3f} "
                  f"{goal if goal else '-':>7} {r['peak_extra_mib']:10.1f}")
        print(f"(open: {r['open_s']:.3f} s; a query process's RSS after: {r['rss_mib']:.0f} MiB)")
    if args.capture:
        c = capture_seconds(args.repeats)
        print(f"one capture, SE-ResNet-50 224x224: first {c['first_s']:.3f} s, "
              f"median {c['median_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
