"""se_viz's networks against the reference frameworks' own code (timm, PaddleClas).

Each tests/reference/<arch>.npz holds the logits and every attention gate that timm (PyTorch)
or PaddleClas's network files computed for seeded weights on two seeded images
(scripts/make_reference.py, run by hand). Here the same weights are rebuilt with
tests/reference/draw.py (no download, no torch), loaded into se_viz's network through
se_viz.engine.weights and run through both capture engines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .reference.draw import draw_input, fixture_state, gate_checks, read_fixture

HERE = Path(__file__).parent / "reference"
ARCHS = ("se_resnet50", "seresnext50_32x4d", "legacy_seresnet50", "ecaresnet50d",
         "efficientnet_b0", "mobilenetv3_large_100", "regnety_008", "regnety_032", "lcnet_100",
         "se_resnet50_vd", "se_resnext50_vd_32x4d", "mobilenetv3_large_x1_0", "pplcnet_x1_0")
TOL = {"eager": 1e-4, "fast": 5e-4}


def _fixture(arch: str) -> dict:
    path = HERE / f"{arch}.npz"
    if not path.is_file():
        pytest.fail(f"no reference fixture {path.name}: run scripts/make_reference.py "
                    "(see its docstring)")
    return read_fixture(path)


def _capture(arch: str, engine: str):
    import se_viz
    from se_viz.engine.networks import build
    from se_viz.engine.weights import load_arrays

    fx = _fixture(arch)
    model = build(arch, num_classes=1000)
    load_arrays(model, fixture_state(fx), arch)
    x = draw_input(fx["input_seed"], fx["input_n"], fx["input_size"])
    return fx, se_viz.capture(model, x, engine=engine)


@pytest.mark.parametrize("engine", ["eager", "fast"])
@pytest.mark.parametrize("arch", ARCHS)
def test_matches_reference(arch, engine):
    fx, cap = _capture(arch, engine)
    tol = TOL[engine]
    ref = fx["logits"]
    assert cap.logits.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    diff = float(np.abs(cap.logits - ref).max())
    assert diff <= tol * scale, f"{arch} [{engine}] logits differ by {diff:.3g} (scale {scale:.3g})"
    names = list(cap.gates)
    assert len(names) == len(fx["gates"]), (
        f"{arch}: se_viz has {len(names)} attention blocks, the reference "
        f"{len(fx['gates'])} ({fx['gate_paths'][0]} ... {fx['gate_paths'][-1]})")
    for name, path, want in zip(names, fx["gate_paths"], fx["gates"]):
        got = cap.gates[name]
        assert got.shape == want.shape, f"{arch}: {name} is {got.shape}, {path} {want.shape}"
        diff = float(np.abs(got - want).max())
        assert diff <= tol, f"{arch} [{engine}] {name} vs {path}: gates differ by {diff:.3g}"


@pytest.mark.parametrize("arch", ARCHS)
def test_fixture_gates_are_informative(arch):
    """The fixture would hide bugs if its gates sat at one value: every block's gates vary
    across channels and between the two images, and few are saturated."""
    fx = _fixture(arch)
    checks = gate_checks(fx["gates"], hard=False)
    assert checks["min_std_channels"] > 0.05, checks
    assert checks["min_std_images"] > 0.01, checks
    assert checks["max_saturated"] < 0.3, checks
    assert np.abs(fx["logits"]).max() < 100 and np.std(fx["logits"]) > 0.05
