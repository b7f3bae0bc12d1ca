"""Export timm's own networks to ONNX: the yardstick of benchmarks/floor.py (run by hand in a
venv with torch + timm, never in the project's venv or the tests).

For each arch, timm's network gets the seeded live weights of the reference fixtures
(tests/reference/draw.py; BN statistics recalibrated as in scripts/make_reference.py), is
saved as ``OUT/<arch>.pth`` (se_viz loads that file, so both sides run the same numbers)
and exported as ``OUT/<arch>.onnx`` with torch's TorchScript exporter (opset 17, constant
folding, a dynamic batch axis, 224 x 224: what timm's ``onnx_export.py`` writes)::

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm==1.0.31 numpy onnx onnxscript
    /tmp/refenv/bin/python benchmarks/timm_export.py --out ~/.cache/se_viz/timm_onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests" / "reference")]

import numpy as np  # noqa: E402

import draw  # noqa: E402
import make_reference as ref  # noqa: E402

ARCHS = ("se_resnet50", "seresnext50_32x4d", "legacy_seresnet50", "ecaresnet50d",
         "efficientnet_b0", "mobilenetv3_large_100", "regnety_008", "regnety_032", "lcnet_100")
SIZE = 224


def export(arch: str, out: Path) -> dict:
    import timm
    import torch

    name, steep = ref.TIMM[arch]
    model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = draw.draw_state(shapes, ref.SEED, "timm", steep)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    ref._timm_calibrate(model, torch)
    torch.save(model.state_dict(), out / f"{arch}.pth")
    x = torch.from_numpy(draw.draw_input(ref.INPUT_SEED, 1, SIZE))
    with torch.no_grad():
        logits = model(x).numpy()
        torch.onnx.export(model, (x,), str(out / f"{arch}.onnx"), opset_version=17,
                          input_names=["input0"], output_names=["output0"],
                          dynamic_axes={"input0": {0: "batch"}, "output0": {0: "batch"}},
                          do_constant_folding=True, dynamo=False)
    np.save(out / f"{arch}.logits.npy", logits)
    return {"arch": arch, "timm": name, "torch": torch.__version__, "timm_version": timm.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("archs", nargs="*", default=list(ARCHS))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    made = [export(a, args.out) for a in args.archs]
    (args.out / "exports.json").write_text(json.dumps(made, indent=1))
    for m in made:
        print(f"{m['arch']:24s} {args.out / (m['arch'] + '.onnx')}")


if __name__ == "__main__":
    main()
