"""Capture speed of this checkout against an earlier commit, measured in one run.

    python benchmarks/vs_previous.py                   # against PREVIOUS (before the redesign)
    python benchmarks/vs_previous.py --ref <commit> --rounds 30

The earlier commit's ``se_viz`` package is extracted with ``git archive`` into a temporary
folder. Each implementation runs in its own worker process (its own se_viz on sys.path,
its own empty graph cache), builds the same seeded model and answers timing requests;
the driver alternates between them round by round (A, B, A, B, ...), so the machine's
drift falls on both alike. Printed: the first capture of a fresh process with an empty
cache (model build + fast graph), then batch-1 capture medians and their ratio, for both
layouts. Needs git and the commit in this repository's history.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PREVIOUS = "fe90222"  # main before the redesign: the hand-written ONNX graph (se_viz/fast.py)

WORKER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
t0 = time.perf_counter()
import se_viz
model = se_viz.build_model(sys.argv[2], None)
built = time.perf_counter() - t0
xs = {b: np.random.default_rng(0).normal(0, 1, (b, 3, 224, 224)).astype(np.float32)
      for b in (1, 8)}
x = xs[1]
t1 = time.perf_counter()
se_viz.capture(model, x)
first = time.perf_counter() - t1
t2 = time.perf_counter()
se_viz.capture(model, x, features=["SE_4_6"])
maps = time.perf_counter() - t2
print(json.dumps({"import_build_s": built, "first_capture_s": first, "first_maps_s": maps,
                  "module": se_viz.__file__}), flush=True)
for line in sys.stdin:
    n, b = (int(v) for v in line.split())
    times = []
    for _ in range(n):
        a = time.perf_counter()
        se_viz.capture(model, xs[b], batch_size=b)
        times.append((time.perf_counter() - a) / b)
    print(json.dumps(times), flush=True)
'''


class Worker:
    def __init__(self, root: Path, arch: str, home: Path) -> None:
        env = {**os.environ, "SE_VIZ_HOME": str(home), "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(root), arch],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env,
                                     cwd=str(home))
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker for {root} did not start")
        self.start = json.loads(line)

    def time(self, n: int, batch: int = 1) -> list[float]:
        """Seconds per image of ``n`` captures of ``batch`` images each."""
        self.proc.stdin.write(f"{n} {batch}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def extract(ref: str, into: Path) -> Path:
    """``ref``'s se_viz package under ``into`` (git archive)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "se_viz"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def compare(arch: str, ref: str, rounds: int, per_round: int, tmp: Path) -> dict:
    old_root = extract(ref, tmp / f"old_{arch}")
    old = Worker(old_root, arch, Path(tempfile.mkdtemp(dir=tmp)))
    new = Worker(ROOT, arch, Path(tempfile.mkdtemp(dir=tmp)))
    try:
        assert Path(new.start["module"]).resolve().is_relative_to(ROOT), new.start
        old.time(3), new.time(3), old.time(1, 8), new.time(1, 8)  # warm
        out = {"arch": arch, "old": old.start, "new": new.start}
        for batch, n in ((1, per_round), (8, max(1, per_round // 3))):
            a, b, ratios = [], [], []
            for _ in range(rounds):
                time.sleep(0.05)
                ta = old.time(n, batch)
                time.sleep(0.05)
                tb = new.time(n, batch)
                a += ta
                b += tb
                ratios.append(statistics.median(tb) / statistics.median(ta))
            out[f"b{batch}"] = {"old_ms": 1e3 * statistics.median(a),
                                "new_ms": 1e3 * statistics.median(b),
                                "paired_ratio": statistics.median(ratios)}
    finally:
        old.close()
        new.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=PREVIOUS, help="earlier commit (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--arch", nargs="+", default=["se_resnet50_vd", "se_resnet50"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="se_viz_vs_"))
    try:
        results = [compare(arch, args.ref, args.rounds, args.per_round, tmp)
                   for arch in args.arch]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"se_viz capture, this checkout vs {args.ref} ({args.rounds} alternating rounds of "
          f"{args.per_round} batch-1 / {max(1, args.per_round // 3)} batch-8 captures; "
          "224x224, seeded weights; the paired ratio is the median of per-round ratios)\n")
    print("| arch | first capture, empty cache (s): before / now | batch 1 (ms/img): before / "
          "now | now / before | batch 8 (ms/img): before / now | now / before |")
    print("|---|---|---|---|---|---|")
    for r in results:
        first_old = r["old"]["import_build_s"] + r["old"]["first_capture_s"]
        first_new = r["new"]["import_build_s"] + r["new"]["first_capture_s"]
        b1, b8 = r["b1"], r["b8"]
        print(f"| {r['arch']} | {first_old:.1f} / {first_new:.1f} | {b1['old_ms']:.1f} / "
              f"{b1['new_ms']:.1f} | {b1['paired_ratio']:.3f}x | {b8['old_ms']:.1f} / "
              f"{b8['new_ms']:.1f} | {b8['paired_ratio']:.3f}x |")
    print("\nfirst capture = import + build the model + the first se_viz.capture (makes the "
          "fast graph); the maps variant the app uses: "
          + ", ".join(f"{r['arch']} {r['old']['first_maps_s']:.1f} / "
                      f"{r['new']['first_maps_s']:.1f} s" for r in results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
