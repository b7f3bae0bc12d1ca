"""Peak memory of one capture, measured alone in this fresh process; prints one JSON line.

    python benchmarks/memory_probe.py --engine fast --batch 32

The model is built and its fast graph loaded (from the disk cache the parent filled)
first; then the peak-RSS counter is reset (Linux ``/proc/self/clear_refs``) so the peak
read afterwards belongs to the capture, on top of the process's baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["fast", "eager"], default="fast")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--arch", default="se_resnet50_vd")
    args = ap.parse_args()

    import se_viz
    from se_viz.engine import traced as fast

    model = se_viz.build_model(args.arch)
    if args.engine == "fast":
        fast.graph_for(model)
    x = np.random.default_rng(0).normal(0, 1, (args.batch, 3, 224, 224)).astype(np.float32)
    gc.collect()
    baseline = _status_kb("VmRSS")
    reset = _reset_peak()
    cap = se_viz.capture(model, x, engine=args.engine, batch_size=args.batch)
    peak = _status_kb("VmHWM") if reset else None
    if peak is None:  # no resettable counter: the whole process's peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"engine": args.engine, "batch": args.batch, "images": len(cap),
                      "baseline_mb": (baseline or 0) / 1024, "peak_mb": peak / 1024,
                      "peak_is_capture_only": reset}))


if __name__ == "__main__":
    main()
