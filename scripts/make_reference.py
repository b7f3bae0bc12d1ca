"""Regenerate the reference fixtures tests/reference/<arch>.npz (run by hand, never by the tests).

Each fixture holds what the reference framework's OWN network code computes for seeded
weights (tests/reference/draw.py) on two seeded images: logits and every attention gate,
plus the batch-norm statistics recalibrated in that framework (drawn statistics would let
activations blow up or die deep in the network). tests/test_reference.py rebuilds the same
weights, loads them into se_viz's network and compares.

timm archs: PyTorch + timm in a separate venv (never in the project's venv or the tests)::

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm==1.0.31 numpy
    /tmp/refenv/bin/python scripts/make_reference.py timm            # or: timm se_resnet50 ...

  (PyPI's torch wheel pulls CUDA libraries, about 5.5 GB in the venv; it runs on CPU.)

PaddleClas archs: PaddlePaddle from the project venv, and PaddleClas's own network files
from a git clone or snapshot of https://github.com/PaddlePaddle/PaddleClas (fixtures made at
commit d178931fca432204e6b7422bac4f92e09ff22fa4). Only the few network files are read (with
`git show HEAD:<path>` when the folder has no work tree); they are copied into a temporary
folder beside stubs for ``ppcls.utils.{logger,save_load}``, so nothing else of ppcls is
imported, and nothing of PaddleClas is kept in this repository::

    git clone https://github.com/PaddlePaddle/PaddleClas /tmp/PaddleClas
    .venv/bin/python scripts/make_reference.py paddleclas --paddleclas /tmp/PaddleClas

  (The committed fixtures used a git snapshot without work tree, /work/.mirror/
  PaddlePaddle+PaddleClas/repo, at that commit.) Same versions give byte-identical arrays.

Both print, per arch, the gate spread checks (tests/reference/draw.py ``gate_checks``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "reference"
sys.path.insert(0, str(OUT))
import draw  # noqa: E402  (numpy only; shared with tests/test_reference.py)

SEED, INPUT_SEED, CALIB_SEED = 0, 1, 2
SIZE, N, CALIB_N, CALIB_NOISE = 128, 2, 16, 4

# arch -> (timm model name, steep)
TIMM = {
    "se_resnet50": ("seresnet50", 3.0),
    "seresnext50_32x4d": ("seresnext50_32x4d", 3.0),
    "legacy_seresnet50": ("legacy_seresnet50", 3.0),
    "ecaresnet50d": ("ecaresnet50d", 3.0),
    "efficientnet_b0": ("efficientnet_b0", 3.0),
    "mobilenetv3_large_100": ("mobilenetv3_large_100", 3.0),
    "regnety_008": ("regnety_008", 3.0),
    "regnety_032": ("regnety_032", 3.0),
    "lcnet_100": ("lcnet_100", 6.0),
}
TIMM_GATE = re.compile(r"(.*\.)?(se\.gate|se_module\.sigmoid)")

# arch -> (file under ppcls/arch/backbone, factory, gate sublayer pattern, steep, hard gate).
# SE_ResNet50_vd applies its sigmoid functionally: its gate is sigmoid(excitation output).
PADDLECLAS = {
    "se_resnet50_vd": ("model_zoo/se_resnet_vd.py", "SE_ResNet50_vd",
                       r".*\.scale\.excitation", 3.0, False),
    "se_resnext50_vd_32x4d": ("model_zoo/se_resnext_vd.py", "SE_ResNeXt50_vd_32x4d",
                              r".*\.scale\.sigmoid", 3.0, False),
    "mobilenetv3_large_x1_0": ("legendary_models/mobilenet_v3.py", "MobileNetV3_large_x1_0",
                               r".*\.mid_se\.hardsigmoid", 3.0, True),
    "pplcnet_x1_0": ("legendary_models/pp_lcnet.py", "PPLCNet_x1_0",
                     r".*\.se\.hardsigmoid", 3.0, True),
}
_PPCLS_SUPPORT = ("base/theseus_layer.py", "legendary_models/custom_devices_layers.py")
_STUBS = {
    "ppcls/utils/logger.py": "def warning(*a, **k):\n    pass\n\ninfo = debug = error = warning\n",
    "ppcls/utils/save_load.py": ("def load_dygraph_pretrain(*a, **k):\n"
                                 "    raise RuntimeError('stub: no pretrained weights here')\n"),
}


def calibration_batch() -> np.ndarray:
    """CALIB_N seeded images, CALIB_NOISE white-noise images and the two test images: BN
    statistics are those of this batch, so neither the test images nor white noise (se_viz's
    fast engine checks its graph on a noise image) are outliers that a random network
    amplifies."""
    noise = np.random.default_rng(CALIB_SEED).normal(0.0, 1.0, (CALIB_NOISE, 3, SIZE, SIZE))
    return np.concatenate([draw.draw_input(CALIB_SEED, CALIB_N, SIZE), noise.astype(np.float32),
                           draw.draw_input(INPUT_SEED, N, SIZE)])


def save(arch: str, reference: str, layout: str, shapes: dict, steep: float, bn: dict,
         logits: np.ndarray, paths: list[str], gates: list[np.ndarray], versions: dict,
         hard: bool) -> None:
    keys, table = draw.pack_shapes(shapes)
    bn_keys = [k for k in shapes if k in bn]
    arrays = dict(
        arch=np.array(arch), reference=np.array(reference), layout=np.array(layout),
        keys=keys, shapes=table, seed=np.int64(SEED), steep=np.float64(steep),
        input_seed=np.int64(INPUT_SEED), input_size=np.int64(SIZE), input_n=np.int64(N),
        calib_seed=np.int64(CALIB_SEED), calib_n=np.int64(CALIB_N),
        calib_noise=np.int64(CALIB_NOISE),
        bn_keys=np.array(bn_keys, dtype=str),
        bn_values=np.concatenate([bn[k].astype(np.float32).ravel() for k in bn_keys]),
        logits=logits.astype(np.float32), gate_paths=np.array(paths, dtype=str),
        versions=np.array(json.dumps(versions, sort_keys=True)),
        **{f"gates_{i}": g.reshape(g.shape[0], -1).astype(np.float32)
           for i, g in enumerate(gates)})
    path = OUT / f"{arch}.npz"
    np.savez_compressed(path, **arrays)
    checks = draw.gate_checks([a.reshape(a.shape[0], -1) for a in gates], hard=hard)
    print(f"{arch:24s} {path.stat().st_size / 1024:7.0f} KiB  {len(gates):2d} gates  "
          f"|logit| max {np.abs(logits).max():8.3f}  "
          + "  ".join(f"{k} {v:.3f}" for k, v in checks.items()), flush=True)


# ---------------------------------------------------------------- timm (PyTorch)

def _timm_calibrate(model, torch) -> None:
    """BN running statistics := those of one calibration batch (momentum 1, train mode)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
                m.momentum = 1.0
        model(torch.from_numpy(calibration_batch()))
    model.eval()


def _timm_record(model, torch) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """(logits, gate module paths in forward order, gate outputs) on the two test images."""
    paths, gates = [], []

    def hook(path):
        def fn(module, inputs, output):
            paths.append(path)
            gates.append(output.detach().numpy().copy())
        return fn

    handles = [m.register_forward_hook(hook(p)) for p, m in model.named_modules()
               if TIMM_GATE.fullmatch(p)]
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(draw.draw_input(INPUT_SEED, N, SIZE))).numpy()
    finally:
        for h in handles:
            h.remove()
    return logits, paths, gates


def run_timm(archs: list[str]) -> None:
    import timm
    import torch

    torch.set_num_threads(1)
    versions = dict(torch=torch.__version__, timm=timm.__version__, numpy=np.__version__,
                    python=platform.python_version())
    for arch in archs:
        name, steep = TIMM[arch]
        model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        state = draw.draw_state(shapes, SEED, "timm", steep)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        _timm_calibrate(model, torch)
        bn = {k: v.numpy().copy() for k, v in model.state_dict().items()
              if draw.is_bn_stat(k, "timm")}
        logits, paths, gates = _timm_record(model, torch)
        hard = "hard" in type(model.get_submodule(paths[0])).__name__.lower()
        save(arch, f"timm:{name}", "timm", shapes, steep, bn, logits, paths, gates, versions,
             hard)


# ---------------------------------------------------------------- PaddleClas (paddle)

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def _source(repo: Path, rel: str) -> str:
    path = repo / "ppcls" / "arch" / "backbone" / rel
    if path.is_file():
        return path.read_text()
    return _git(repo, "show", f"HEAD:ppcls/arch/backbone/{rel}")  # a snapshot without work tree


def _extract(repo: Path, dest: Path) -> None:
    """PaddleClas's network files under dest/ppcls/..., with empty package inits and stubs."""
    files = {rel: _source(repo, rel) for rel in
             [*_PPCLS_SUPPORT, *{v[0] for v in PADDLECLAS.values()}]}
    for rel, text in files.items():
        target = dest / "ppcls" / "arch" / "backbone" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for rel, text in _STUBS.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    for folder in [p for p in (dest / "ppcls").rglob("*") if p.is_dir()] + [dest / "ppcls"]:
        (folder / "__init__.py").touch()


def _paddle_calibrate(model, paddle) -> None:
    """BN running statistics := those of one calibration batch (momentum 0, train mode)."""
    bn_types = (paddle.nn.BatchNorm, paddle.nn.layer.norm._BatchNormBase)
    with paddle.no_grad():
        for layer in model.sublayers():
            if isinstance(layer, bn_types):
                layer.training = True
                layer._momentum = 0.0
        model(paddle.to_tensor(calibration_batch()))
    model.eval()


def _paddle_record(model, paddle, gate_re: str
                   ) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """(logits, gate sublayer paths in forward order, gates) on the two test images. A gate
    pattern ending in "excitation" names the Linear whose output SE_ResNet_vd passes to
    F.sigmoid (functional there): the hook applies the same F.sigmoid."""
    paths, gates = [], []
    functional = gate_re.endswith("excitation")

    def hook(path):
        def fn(layer, inputs, output):
            paths.append(path)
            gate = paddle.nn.functional.sigmoid(output) if functional else output
            gates.append(gate.numpy().copy())
        return fn

    handles = [layer.register_forward_post_hook(hook(p))
               for p, layer in model.named_sublayers() if re.fullmatch(gate_re, p)]
    try:
        with paddle.no_grad():
            logits = model(paddle.to_tensor(draw.draw_input(INPUT_SEED, N, SIZE))).numpy()
    finally:
        for h in handles:
            h.remove()
    return logits, paths, gates


def run_paddleclas(archs: list[str], repo: Path) -> None:
    import paddle

    try:
        commit = _git(repo, "rev-parse", "HEAD").strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit = "unknown"
    versions = dict(paddle=paddle.__version__, paddleclas_commit=commit, numpy=np.__version__,
                    python=platform.python_version())
    with tempfile.TemporaryDirectory(prefix="ppcls_ref_") as tmp:
        _extract(repo, Path(tmp))
        sys.path.insert(0, tmp)
        for arch in archs:
            _paddleclas_one(arch, paddle, versions)


def _paddleclas_one(arch: str, paddle, versions: dict) -> None:
    rel, factory, gate_re, steep, hard = PADDLECLAS[arch]
    module = importlib.import_module("ppcls.arch.backbone." + rel[:-3].replace("/", "."))
    with paddle.utils.unique_name.guard():  # PaddleClas names its parameters explicitly
        model = getattr(module, factory)(class_num=1000)
    model.eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = model.set_state_dict(
        draw.draw_state(shapes, SEED, "paddleclas", steep))
    if missing or unexpected:  # set_state_dict only warns
        raise SystemExit(f"{arch}: state did not load ({missing[:3]}, {unexpected[:3]})")
    _paddle_calibrate(model, paddle)
    bn = {k: v.numpy().copy() for k, v in model.state_dict().items()
          if draw.is_bn_stat(k, "paddleclas")}
    logits, paths, gates = _paddle_record(model, paddle, gate_re)
    save(arch, f"paddleclas:{factory}", "paddleclas", shapes, steep, bn, logits, paths,
         gates, versions, hard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=("timm", "paddleclas"))
    parser.add_argument("archs", nargs="*", help="default: every arch of that framework")
    parser.add_argument("--paddleclas", type=Path, help="PaddleClas clone or git snapshot")
    args = parser.parse_args()
    table = TIMM if args.framework == "timm" else PADDLECLAS
    archs = args.archs or list(table)
    unknown = [a for a in archs if a not in table]
    if unknown:
        parser.error(f"not {args.framework} archs: {unknown}; choose from {list(table)}")
    if args.framework == "timm":
        run_timm(archs)
    elif args.paddleclas is None:
        parser.error("paddleclas needs --paddleclas PATH (a PaddleClas clone or snapshot)")
    else:
        run_paddleclas(archs, args.paddleclas)


if __name__ == "__main__":
    main()
