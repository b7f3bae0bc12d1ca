"""How long `se-viz refit` takes on the full-size SE-ResNet-50 (a benchmark, not a test).

    .venv/bin/python benchmarks/refit_bench.py [--images 500] [--r 32] [--steps 400]
        [--dtype float32|float64] [--no-finetune]

1. pairs: 500 generated 224 x 224 images captured once by the seeded full-size network
   (fast engine), cached in $TMPDIR/se_viz_refit_bench/ (keyed by the settings);
2. the blockwise refit of all 16 blocks at one r from those pairs (numpy, full-batch Adam,
   its steps in --dtype: float32 by default, float64 as before 2026-12);
3. --finetune's end-to-end cost per image: distillation steps (forward + backward through
   the frozen backbone, SE parameters trained) beside the eager forward alone and the fast
   capture per image, measured interleaved in this one run.

Prints a markdown table (benchmarks/common.py) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, interleaved, machine, median_ms, spread, table  # noqa: E402


def synthetic_images(n: int, seed: int = 0, size: int = 224) -> np.ndarray:
    """(n, 3, size, size) float32: smooth coloured blobs, normalised like real inputs."""
    rng = np.random.default_rng(seed)
    small = rng.normal(0, 1, (n, 3, 7, 7)).astype(np.float32)
    up = np.repeat(np.repeat(small, size // 7, axis=2), size // 7, axis=3)
    return (up + rng.normal(0, 0.3, up.shape)).astype(np.float32)


def pairs(model, n: int, cache: Path) -> dict[str, np.ndarray]:
    """{"z_<block>", "s_<block>", "logits"} of n synthetic images (cached on disk)."""
    from se_viz.engine.capture import capture

    path = cache / f"pairs_{n}.npz"
    if path.exists():
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    out: dict[str, list] = {}
    for lo in range(0, n, 50):
        cap = capture(model, synthetic_images(min(50, n - lo), seed=lo), batch_size=16)
        for b in cap.gates:
            out.setdefault(f"z_{b}", []).append(cap.squeeze[b])
            out.setdefault(f"s_{b}", []).append(cap.gates[b])
        out.setdefault("logits", []).append(cap.logits)
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def bench_fit(model, data: dict, r: float, steps: int, dtype: str = "float32"
              ) -> tuple[list[Row], dict]:
    from se_viz.analysis.se_fit import FitSettings, fit_block, gate_errors, hidden_widths
    from se_viz.engine.weights import se_parameters

    base = se_parameters(model)
    widths = hidden_widths(model.info.blocks, r)
    n = data["logits"].shape[0]
    train = slice(0, int(0.8 * n))
    held = slice(int(0.8 * n), n)
    fitted, per_block, errors = {}, {}, {}
    start = time.perf_counter()
    for i, b in enumerate(base):
        t = time.perf_counter()
        fit = fit_block(base[b], data[f"z_{b}"][train], data[f"s_{b}"][train], widths[b],
                        FitSettings(steps=steps, dtype=dtype), block=i)
        per_block[b] = time.perf_counter() - t
        fitted[b] = fit.params
        errors[b] = gate_errors(fit.params, data[f"z_{b}"][held], data[f"s_{b}"][held])["rmse"]
    total = time.perf_counter() - start
    slowest = max(per_block, key=per_block.get)
    rows = [Row("refit (numpy)", f"all 16 blocks at r = {r:g}, {train.stop} training pairs",
                total, "s", "", f"{steps} Adam steps per block, {dtype}"),
            Row("refit (numpy)", "per Adam step, all blocks", 1e3 * total / steps, "ms"),
            Row("refit (numpy)", f"slowest block ({slowest})", per_block[slowest], "s"),
            Row("refit (numpy)", "held-out gate RMSE, mean over blocks",
                float(np.mean(list(errors.values()))), "", "",
                "seeded untrained network: an easy target")]
    return rows, fitted


def bench_finetune(model, fitted: dict, r: float, batch: int, repeats: int) -> list[Row]:
    from se_viz.engine.capture import capture
    from se_viz.engine.finetune import DistillSettings, Step, distill
    from se_viz.engine.hooks import capture_hooks
    from se_viz.engine.se_weights import refit_model, save_se_weights

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "se.safetensors"
        save_se_weights(path, fitted, base=model.info, reduction=r)
        student = refit_model(model, path)
    x = synthetic_images(batch, seed=10_000)
    teacher = capture(model, x, batch_size=batch).logits
    capture(model, x[:1])  # the fast graph is made before timing
    cases = {"distill": lambda: distill(student, [Step(x, teacher, batch)],
                                        DistillSettings(lr=1e-4)),
             "eager forward": lambda: capture_hooks(model, x),
             "fast capture": lambda: capture(model, x, batch_size=batch)}
    times = interleaved(cases, repeats, warmup=1)
    per = {k: median_ms(v) / batch for k, v in times.items()}
    return [Row("--finetune", f"distillation step, per image (batch {batch})", per["distill"],
                "ms", "", spread([t / batch for t in times["distill"]])),
            Row("--finetune", "eager forward (hooks), per image", per["eager forward"], "ms"),
            Row("--finetune", "fast capture (ONNX Runtime), per image", per["fast capture"],
                "ms"),
            Row("--finetune", "distill / eager forward", per["distill"] / per["eager forward"],
                "x"),
            Row("--finetune", "distill / fast capture", per["distill"] / per["fast capture"],
                "x", "", "one epoch of --finetune vs the pairs pass over the same images")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--r", type=float, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=8, help="finetune batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="of the fit's Adam steps (float64: the method before 2026-12)")
    p.add_argument("--no-finetune", action="store_true", help="time the pairs and the fit only")
    args = p.parse_args()

    from se_viz.engine.build import build_model

    model = build_model("se_resnet50_vd", None)  # seeded, full size, r = 16
    cache = Path(tempfile.gettempdir()) / "se_viz_refit_bench"
    start = time.perf_counter()
    data = pairs(model, args.images, cache)
    rows = [Row("pairs", f"{args.images} images captured (or read from {cache})",
                time.perf_counter() - start, "s")]
    fit_rows, fitted = bench_fit(model, data, args.r, args.steps, args.dtype)
    rows += fit_rows
    if not args.no_finetune:
        rows += bench_finetune(model, fitted, args.r, args.batch, args.repeats)
    print(table(rows))
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
