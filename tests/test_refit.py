"""se-viz refit: SE blocks refit at other reduction ratios, their files, figures, resuming,
several processes. Tiny seeded network (width 8, 10 classes, 32x32 crops) on generated PNGs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from se_viz.analysis.se_fit import (FitSettings, fit_block, gate_errors, hidden_widths,
                                   holdout_split, not_reducible, se_gates, se_parameter_count,
                                   uses_ratio)
from se_viz.arch import hidden_width
from se_viz.blocks import HARD_SIGMOID, AttentionBlock
from se_viz.cli import main as cli_main
from se_viz.dataset import RunOptions
from se_viz.refit import RefitSettings, refit
from se_viz.errors import DatasetError, WeightsError
from se_viz.results import SEParameters

from .conftest import make_tiny
from .test_dataset import make_folder

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RATIOS = (4, 16, 32, 64)  # the tiny base network has r = 16
TINY = RefitSettings(weights=None, width=8, num_classes=10, image_size=32, batch_size=4,
                     shard_size=8, steps=200)
QUIET = RunOptions(workers=0, progress=False)
CLI_TINY = ["--width", "8", "--num-classes", "10", "--image-size", "32", "--batch-size", "4",
            "--shard-size", "8", "--steps", "200", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"), per_class=10)


@pytest.fixture(scope="module")
def ref(folder, tmp_path_factory) -> Path:
    """One uninterrupted single-process refit of ``folder`` at every r of RATIOS."""
    out = tmp_path_factory.mktemp("refit")
    result = refit(folder, out, list(RATIOS), TINY, QUIET)
    assert result.complete and result.written and result.computed_shards == 4
    assert result.fitted == tuple(float(r) for r in RATIOS) and not result.skipped
    return out


def doc_of(out: Path) -> dict:
    return json.loads((out / "refit.json").read_text("utf-8"))


def tiny_pre(model):
    return replace(model.preprocessing, resize=32, crop=32)


@pytest.fixture(scope="module")
def blocks():
    """The tiny base network's own attention blocks (TINY's network)."""
    return make_tiny(num_classes=10).info.blocks


# --------------------------------------------------------------------------- the fit


def test_refit_at_the_base_r_reproduces_the_gates_on_held_out_images(ref, blocks):
    fit = doc_of(ref)["fits"]["16"]
    assert fit["n_held_out"] == 6 and fit["n_train"] == 24
    assert list(fit["blocks"]) == [b.name for b in blocks]
    for b in blocks:
        row = fit["blocks"][b.name]
        assert row["hidden"] == hidden_width(b.channels, 16) == b.hidden
        assert row["objective"] == "kl"
        assert row["rmse"] < 1e-5 and row["max"] < 1e-4, (b.name, row)
    e2e = fit["end_to_end"]
    assert e2e["top1_agreement"] == 1.0 and e2e["mean_kl"] < 1e-7
    assert max(e2e["gate_mad"].values()) < 1e-5


def test_the_optimiser_recovers_a_block_from_a_perturbed_start():
    """Not only the exact start: from a perturbed copy of the true block, the fit at the
    same width comes back to its gates on held-out squeeze values."""
    rng = np.random.default_rng(0)
    c, h = 64, 8
    true = SEParameters(rng.normal(0, 0.3, (c, h)), rng.normal(0, 0.1, h),
                        rng.normal(0, 0.5, (h, c)), rng.normal(0, 0.1, c))
    z = np.abs(rng.normal(0, 1, (600, c)))
    s = se_gates(true, z)
    start = SEParameters(*(np.asarray(a) + rng.normal(0, 0.1, np.shape(a))
                           for a in (true.w1, true.b1, true.w2, true.b2)))
    fit = fit_block(start, z[:500], s[:500], h, FitSettings(steps=600, lr=1e-2))
    before, after = gate_errors(start, z[500:], s[500:]), gate_errors(fit.params, z[500:],
                                                                        s[500:])
    assert after["rmse"] < 0.15 * before["rmse"] and after["rmse"] < 0.02, (before, after)
    assert fit.kl < fit.start_kl and fit.steps == 600
    again = fit_block(start, z[:500], s[:500], h, FitSettings(steps=600, lr=1e-2))
    np.testing.assert_array_equal(again.params.w1, fit.params.w1)  # deterministic


def test_a_hard_sigmoid_block_is_fitted_through_its_own_gate():
    """MobileNetV3 / LCNet gates clip(x / 6 + 0.5, 0, 1): the fit minimises the squared gate
    error through the gate's derivative (the sigmoid's BCE would be the wrong loss), and
    recovers a perturbed block as the sigmoid fit does."""
    rng = np.random.default_rng(1)
    c, h = 48, 8
    true = SEParameters(rng.normal(0, 0.3, (c, h)), rng.normal(0, 0.1, h),
                        rng.normal(0, 0.8, (h, c)), rng.normal(0, 0.3, c))
    z = np.abs(rng.normal(0, 1, (600, c)))
    s = se_gates(true, z, HARD_SIGMOID)
    assert ((s == 0) | (s == 1)).mean() > 0.02  # some gates saturate, as in a real network
    np.testing.assert_allclose(s, np.clip(
        (np.maximum(z @ true.w1 + true.b1, 0) @ true.w2 + true.b2) / 6 + 0.5, 0, 1))
    start = SEParameters(*(np.asarray(a) + rng.normal(0, 0.1, np.shape(a))
                           for a in (true.w1, true.b1, true.w2, true.b2)))
    fit = fit_block(start, z[:500], s[:500], h, FitSettings(steps=600, lr=1e-2),
                    gate=HARD_SIGMOID)
    assert fit.objective == "mse" and fit.loss < fit.start_loss
    before = gate_errors(start, z[500:], s[500:], HARD_SIGMOID)
    after = gate_errors(fit.params, z[500:], s[500:], HARD_SIGMOID)
    assert after["rmse"] < 0.3 * before["rmse"], (before, after)
    sigmoid_fit = fit_block(start, z[:500], s[:500], h, FitSettings(steps=600, lr=1e-2))
    assert after["rmse"] < gate_errors(sigmoid_fit.params, z[500:], s[500:],
                                       HARD_SIGMOID)["rmse"]


def test_the_kl_is_summed_per_element_so_float32_keeps_a_small_kl():
    """Known answer: the loss is the mean KL(s || sigmoid(x)) and its gradient on x is
    (sigmoid(x) - s) / size; in float32 the loss of a near fit keeps the float64 value
    (the BCE and the targets' entropy cancel per element, before the sum)."""
    from se_viz.analysis.se_fit import _entropy, _kl_loss
    from se_viz.blocks import SIGMOID

    rng = np.random.default_rng(2)
    t = rng.normal(0, 2, (300, 64))
    s = SIGMOID(t)
    x = t + rng.normal(0, 1e-3, t.shape)  # a near fit: KL ~ 1e-7
    p = SIGMOID(x)
    kl = np.mean(s * np.log(s / p) + (1 - s) * np.log((1 - s) / (1 - p)))
    loss, grad = _kl_loss(x.copy(), s, _entropy(s), SIGMOID)
    assert loss == pytest.approx(kl, rel=1e-6)
    np.testing.assert_allclose(grad, (p - s) / s.size, rtol=1e-9, atol=1e-20)
    x32, s32 = x.astype(np.float32), s.astype(np.float32)
    loss32, grad32 = _kl_loss(x32.copy(), s32, _entropy(s32).astype(np.float32), SIGMOID)
    assert grad32.dtype == np.float32
    p32 = SIGMOID(x32.astype(np.float64))
    s64 = s32.astype(np.float64)
    kl32 = np.mean(s64 * np.log(s64 / p32) + (1 - s64) * np.log((1 - s64) / (1 - p32)))
    assert loss32 == pytest.approx(kl32, rel=0.05), (loss32, kl32)


def test_float32_steps_fit_as_well_as_float64_and_score_in_float64():
    """The default float32 Adam steps against the float64 ones from the same perturbed
    start: the held-out gate error agrees within 5 %, the reported losses are float64
    scores of the returned parameters, and float32 is deterministic too."""
    rng = np.random.default_rng(3)
    c, h = 96, 12
    true = SEParameters(rng.normal(0, 0.3, (c, h)), rng.normal(0, 0.1, h),
                        rng.normal(0, 0.5, (h, c)), rng.normal(0, 0.1, c))
    z = np.abs(rng.normal(0, 1, (700, c)))
    s = se_gates(true, z)
    start = SEParameters(*(np.asarray(a) + rng.normal(0, 0.05, np.shape(a))
                           for a in (true.w1, true.b1, true.w2, true.b2)))
    fits = {dt: fit_block(start, z[:600], s[:600], h, FitSettings(steps=300, lr=1e-2,
                                                                  dtype=dt))
            for dt in ("float32", "float64")}
    err = {dt: gate_errors(f.params, z[600:], s[600:])["rmse"] for dt, f in fits.items()}
    assert err["float32"] == pytest.approx(err["float64"], rel=0.05), err
    assert err["float32"] < 0.2 * gate_errors(start, z[600:], s[600:])["rmse"], err
    for f in fits.values():
        assert f.params.w1.dtype == np.float32 and f.steps == 300
        p = fit_block(f.params, z[:600], s[:600], h, FitSettings(steps=0))
        assert p.start_loss == pytest.approx(f.loss, rel=1e-9)  # the float64 score
        assert f.loss < f.start_loss
    again = fit_block(start, z[:600], s[:600], h, FitSettings(steps=300, lr=1e-2))
    np.testing.assert_array_equal(again.params.w2, fits["float32"].params.w2)
    with pytest.raises(ValueError, match="float32 or float64"):
        fit_block(start, z[:600], s[:600], h, FitSettings(dtype="float16"))


def test_widths_come_from_the_blocks_and_eca_blocks_have_no_r():
    se = AttentionBlock("SE_2_1", "s1.b0.se", "s1.b0", 2, 1, 96, 24, width_rule="0.25 x in")
    eca = AttentionBlock("SE_2_2", "s1.b1.se", "s1.b1", 2, 2, 256, None, kind="eca",
                         width_rule="kernel 5")
    blocks = (se, eca)
    assert hidden_widths(blocks) == {"SE_2_1": 24}  # its own width at its native r
    assert hidden_widths(blocks, 16) == {"SE_2_1": 6}  # int(C / r)
    assert se_parameter_count(blocks, 16) == 2 * 96 * 6 + 6 + 96
    assert se_parameter_count(blocks) == 2 * 96 * 24 + 24 + 96
    assert list(not_reducible(blocks)) == ["SE_2_2"]
    assert "r does not apply" in not_reducible(blocks)["SE_2_2"]
    assert uses_ratio(blocks, 4) and not uses_ratio(blocks, 16)
    assert not uses_ratio((eca,), 16)  # nothing to reduce


def test_wider_r_is_never_worse_than_narrower_on_the_same_split(ref, blocks):
    fits = doc_of(ref)["fits"]
    for wide, narrow in zip(RATIOS, RATIOS[1:]):
        for block in (b.name for b in blocks):
            a, b = fits[str(wide)]["blocks"][block], fits[str(narrow)]["blocks"][block]
            assert a["rmse"] <= b["rmse"] + 1e-3, (wide, narrow, block, a, b)
        assert fits[str(wide)]["end_to_end"]["mean_kl"] <= \
            fits[str(narrow)]["end_to_end"]["mean_kl"] + 1e-6
    for r in (32, 64):  # refitting beats keeping the most important base units alone
        rows = fits[str(r)]["blocks"].values()
        assert np.mean([x["rmse"] for x in rows]) < np.mean([x["pruned_rmse"] for x in rows])
        assert all(x["kl"] <= x["start_kl"] for x in rows)
    assert [fits[str(r)]["se_params"] for r in RATIOS] == \
        [se_parameter_count(blocks, r) for r in RATIOS]


def test_refit_json_equals_an_independent_recomputation_from_the_written_files(ref, folder):
    """From the files alone: decode the listed held-out images, run the base network and
    the network built with each se_r file (eager hooks), recompute every figure."""
    from se_viz.engine.build import build_model
    from se_viz.engine.capture import capture
    from se_viz.images import load_image

    doc = doc_of(ref)
    train, held = holdout_split(30, 0.2, 0)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert doc["split"]["held_out"] == [names[i] for i in held]
    assert doc["split"]["train"] == [names[i] for i in train]
    base = make_tiny()
    photos = [load_image(folder / n) for n in doc["split"]["held_out"]]
    ref_cap = capture(base, photos, preprocessing=tiny_pre(base), engine="eager")
    for key, fit in doc["fits"].items():
        arrays = load_file(ref / fit["file"])
        model = build_model("se_resnet50_vd", None, width=8, num_classes=10,
                            se_weights=ref / fit["file"])
        cap = capture(model, photos, preprocessing=tiny_pre(base), engine="eager")
        for (block, row), path in zip(fit["blocks"].items(), _se_paths()):
            w1, b1, w2, b2 = (arrays[f"{path}.{k}"].astype(np.float64) for k in
                              ("squeeze.weight", "squeeze.bias", "excitation.weight",
                               "excitation.bias"))
            z = ref_cap.squeeze[block].astype(np.float64)
            d = 1 / (1 + np.exp(-(np.maximum(z @ w1 + b1, 0) @ w2 + b2))) - ref_cap.gates[block]
            assert row["rmse"] == pytest.approx(np.sqrt((d ** 2).mean()), abs=2e-6), key
            assert row["max"] == pytest.approx(np.abs(d).max(), abs=5e-6), key
            mad = np.abs(cap.gates[block] - ref_cap.gates[block]).mean()
            assert fit["end_to_end"]["gate_mad"][block] == pytest.approx(mad, abs=2e-6)
        p, q = ref_cap.probabilities.astype(np.float64), cap.probabilities.astype(np.float64)
        kl = (p * (np.log(p) - np.log(q))).sum(axis=1).clip(0).mean()
        agree = (p.argmax(1) == q.argmax(1)).mean()
        assert fit["end_to_end"]["mean_kl"] == pytest.approx(kl, abs=1e-6)
        assert fit["end_to_end"]["top1_agreement"] == agree


def _se_paths() -> list[str]:
    return [b.path for b in make_tiny(num_classes=10).info.blocks]


# --------------------------------------------------------------------------- SE-only files


def test_se_only_files_round_trip_into_both_se_layouts(ref):
    from se_viz.engine.build import build_model
    from se_viz.engine.capture import capture
    from se_viz.engine.se_weights import refit_model
    from se_viz.engine.weights import export_state, se_parameters

    path = ref / "se_r32.safetensors"
    arrays = load_file(path)
    assert len(arrays) == 64 and all(".scale." in k for k in arrays)
    whole = sum(a.nbytes for a in export_state(make_tiny()).values())
    assert sum(a.nbytes for a in arrays.values()) < 0.2 * whole  # SE blocks only
    models = [build_model("se_resnet50_vd", None, width=8, num_classes=10, se_weights=path,
                          se_impl=impl) for impl in ("linear", "conv")]
    base = make_tiny()
    info = models[0].info
    assert info.reduction == 32 and info.se_weights == str(path)
    assert info.key() != base.info.key() and "|se:" in info.key()
    for block, p in se_parameters(models[0]).items():
        assert p.hidden == hidden_width(p.channels, 32)
    x = np.random.default_rng(0).normal(0, 1, (3, 3, 32, 32)).astype(np.float32)
    lin, conv = (capture(m, x, engine="eager") for m in models)
    for block in lin.gates:
        np.testing.assert_allclose(conv.gates[block], lin.gates[block], atol=1e-6)
        p = se_parameters(models[0])[block]
        np.testing.assert_allclose(se_gates(p, lin.squeeze[block]), lin.gates[block], atol=1e-5)
    copy = refit_model(base, path.read_bytes(), path.name)  # the app's way: base untouched
    np.testing.assert_allclose(capture(copy, x, engine="eager").logits, lin.logits, atol=1e-5)
    assert base.info.reduction == 16 and base.info.se_weights is None


def test_se_only_files_refuse_another_base_arch_or_shape(ref, tmp_path):
    from se_viz.engine.build import build_model
    from se_viz.engine.se_weights import load_se_file, save_se_weights
    from se_viz.engine.weights import export_state, save_safetensors, se_parameters

    path = ref / "se_r32.safetensors"
    tiny = dict(width=8, num_classes=10, se_weights=path)
    with pytest.raises(WeightsError, match="other base weights.*seeded:0"):
        build_model("se_resnet50_vd", None, seed=1, **tiny)
    with pytest.raises(WeightsError, match="refit for se_resnet50_vd.*--arch se_resnet50_vd"):
        build_model("se_resnet50", None, **tiny)
    with pytest.raises(WeightsError, match="other base weights"):
        build_model("se_resnet50_vd", None, reduction=8, **tiny)
    arrays = load_file(path)
    key = "bb_2_0.scale.squeeze.weight"
    arrays[key] = arrays[key][:, :-1]
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    save_file(arrays, tmp_path / "cut.safetensors", metadata=meta)
    with pytest.raises(WeightsError, match=r"bb_2_0.scale.squeeze.weight is \[128, 3\]"):
        build_model("se_resnet50_vd", None, width=8, num_classes=10,
                    se_weights=tmp_path / "cut.safetensors")
    # a base read from a file is identified by its sha256
    save_safetensors(export_state(make_tiny()), tmp_path / "a.safetensors")
    save_safetensors(export_state(make_tiny(seed=2)), tmp_path / "b.safetensors")
    a = build_model("se_resnet50_vd", tmp_path / "a.safetensors", width=8, num_classes=10)
    save_se_weights(tmp_path / "se.safetensors", se_parameters(a), base=a.info, reduction=16)
    ok = build_model("se_resnet50_vd", tmp_path / "a.safetensors", width=8, num_classes=10,
                     se_weights=tmp_path / "se.safetensors")
    assert ok.info.extra["se_sha256"] and ok.info.reduction == 16
    with pytest.raises(WeightsError, match=r"other base weights \(sha256 .*'a.safetensors'"):
        build_model("se_resnet50_vd", tmp_path / "b.safetensors", width=8, num_classes=10,
                    se_weights=tmp_path / "se.safetensors")
    with pytest.raises(WeightsError, match="not an SE-only file"):
        build_model("se_resnet50_vd", None, width=8, num_classes=10,
                    se_weights=tmp_path / "a.safetensors")
    with pytest.raises(WeightsError, match="already has refit SE blocks"):
        load_se_file(ok, tmp_path / "se.safetensors")


def test_capture_command_takes_se_weights(ref, folder, tmp_path, capsys):
    from se_viz.engine.build import build_model
    from se_viz.engine.capture import capture
    from se_viz.images import load_image

    image = str(next(folder.rglob("*.png")))
    out = tmp_path / "gates.npz"
    args = ["capture", image, "--width", "8", "--num-classes", "10", "--se-weights",
            str(ref / "se_r64.safetensors")]
    assert cli_main([*args, "--out", str(out)]) == 0
    model = build_model("se_resnet50_vd", None, width=8, num_classes=10,
                        se_weights=ref / "se_r64.safetensors")
    want = capture(model, [load_image(image)], engine="eager")
    with np.load(out, allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["SE_3_2"], want.gates["SE_3_2"], atol=1e-5)
    capsys.readouterr()
    assert cli_main([*args, "--arch", "se_resnet50"]) == 1
    assert re.search(r"se-viz: error: .*refit for se_resnet50_vd", capsys.readouterr().err)


# --------------------------------------------------------------------------- the run


def test_interrupted_refit_resumes_to_the_same_result(folder, ref, tmp_path, capsys):
    out = tmp_path / "resumed"
    args = ["refit", str(folder), "--reduction", "32", "--out", str(out), *CLI_TINY]
    assert cli_main([*args, "--max-shards", "1"]) == 3
    assert "stopped early" in capsys.readouterr().out and not (out / "refit.json").exists()
    assert cli_main(args) == 0
    assert "reused 1" in capsys.readouterr().out
    for name in ("se_r32.safetensors", "fits/r32.blockwise.safetensors"):
        a, b = load_file(out / name), load_file(ref / name)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert doc_of(out)["fits"]["32"]["blocks"] == doc_of(ref)["fits"]["32"]["blocks"]
    stamp = (out / "se_r32.safetensors").stat().st_mtime_ns
    result = refit(folder, out, [32, 64], TINY, QUIET)  # one more r: the first is reused
    assert result.reused == (32.0,) and result.fitted == (64.0,)
    assert (out / "se_r32.safetensors").stat().st_mtime_ns == stamp
    assert list(doc_of(out)["fits"]) == ["32", "64"]
    with pytest.raises(DatasetError, match="other settings.*holdout"):
        refit(folder, out, [32], replace(TINY, holdout=0.3), QUIET)


def test_bad_files_are_skipped_listed_and_exit_non_zero(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs", per_class=4)
    (root / "pug" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    assert cli_main(["refit", str(root), "--reduction", "32", "--out", str(out),
                     *CLI_TINY]) == 1
    err = capsys.readouterr().err
    assert "pug/broken.png" in err and "skipped" in err
    doc = doc_of(out)
    assert [f for f, _ in doc["skipped"]] == ["pug/broken.png"]
    assert "pug/broken.png" not in doc["split"]["train"] + doc["split"]["held_out"]
    assert len(doc["split"]["train"]) + len(doc["split"]["held_out"]) == 12


def test_bad_settings_are_refused_clearly(folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["refit", str(folder), "--reduction", "0.5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli_main(["refit", str(folder), "--reduction", "8", "--holdout", "1", "--out",
                  str(tmp_path)])
    assert "between 0 and 1" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="not a folder"):
        refit(tmp_path / "nowhere", tmp_path / "o", [8], TINY, QUIET)


def test_report_is_one_standalone_html_page(ref):
    from plotly.offline import get_plotlyjs

    from se_viz.plots.refit_figures import AGREEMENT_TITLE, ERROR_TITLE, PARAMS_TITLE

    text = (ref / "report.html").read_text("utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count(get_plotlyjs()[:400]) == 1 and not re.search(r"<script[^>]+src=", text)
    assert text.count("Plotly.newPlot(") == 3
    for title in (ERROR_TITLE, AGREEMENT_TITLE, PARAMS_TITLE):
        assert json.dumps(title) in text
    assert "Untrained" in text and "22.28" in text  # the paper's r = 16 error is drawn


def test_figures_hold_the_numbers_of_refit_json(ref):
    from se_viz.plots.refit_figures import agreement_figure, block_error_figure, refit_gates_figure

    doc = doc_of(ref)
    fig = block_error_figure(doc)
    lines = {t.name: t for t in fig.data}
    assert list(lines["SE_4_6"].x) == [float(r) for r in RATIOS]
    np.testing.assert_allclose(lines["SE_4_6"].y, [doc["fits"][str(r)]["blocks"]["SE_4_6"]
                                                   ["rmse"] for r in RATIOS], rtol=1e-6)
    agree = {t.name: t for t in agreement_figure(doc).data}
    assert list(agree["paper top-1 error (%)"].y) == [22.29, 22.25, 22.26, 22.28, 22.72]
    base, other = np.array([0.2, 0.9, 0.5]), np.array([0.3, 0.7, 0.5])
    gates = refit_gates_figure("SE_2_1", base, {"r = 8": other}).data
    assert list(gates[0].customdata) == [1, 2, 0]  # channels by base gate
    np.testing.assert_allclose(gates[2].y, (other - base)[[1, 2, 0]], atol=1e-7)


def test_distill_lowers_the_distillation_loss():
    """The fine-tuning step on its own: a network whose SE blocks were perturbed learns
    back the teacher's predictions (every process must see the same steps)."""
    from se_viz.engine.capture import capture
    from se_viz.engine.finetune import DistillSettings, Step, distill, se_parameters_of

    teacher = make_tiny(num_classes=10)
    student = make_tiny(num_classes=10)
    rng = np.random.default_rng(0)
    for _, p in se_parameters_of(student):
        p.set_value(p.numpy() + rng.normal(0, 0.5, p.shape).astype(np.float32))
    x = rng.normal(0, 1, (8, 3, 32, 32)).astype(np.float32)
    logits = capture(teacher, x, engine="eager").logits * 20  # sharp targets
    flags = [p.stop_gradient for p in student.parameters()]
    losses = distill(student, [Step(x, logits, 8)] * 30, DistillSettings(lr=3e-3))
    assert losses[-1] < 0.5 * losses[0], losses
    assert [p.stop_gradient for p in student.parameters()] == flags and not student.training


@pytest.mark.slow
def test_two_processes_under_the_paddle_launcher_equal_one(folder, tmp_path):
    args = ["-m", "se_viz", "refit", str(folder), "--reduction", "16", "64", "--finetune",
            *CLI_TINY, "--steps", "50", "--finetune-epochs", "2"]
    one = subprocess.run([PY, *args, "--out", str(tmp_path / "one")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([PY, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                          "--log_dir", str(tmp_path / "logs"), PY, *args, "--out",
                          str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").glob("workerlog.*")))
    assert two.returncode == 0, (two.stdout[-2000:], logs[-3000:])
    assert "rank 1/2: pairs: computed 2 shard(s)" in logs
    a, b = load_file(tmp_path / "one/se_r64.safetensors"), load_file(tmp_path /
                                                                      "two/se_r64.safetensors")
    start = load_file(tmp_path / "one/fits/r64.blockwise.safetensors")
    moved = max(float(np.abs(a[k] - start[k]).max()) for k in a)
    gap = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert gap < 2e-5 and moved > 50 * gap, (gap, moved)
    fa, fb = doc_of(tmp_path / "one")["fits"], doc_of(tmp_path / "two")["fits"]
    assert fa["64"]["stage"] == "finetuned" and fa["16"]["stage"] == "blockwise"
    np.testing.assert_allclose(fa["64"]["finetune_loss"], fb["64"]["finetune_loss"],
                               rtol=1e-2, atol=1e-9)


def test_a_hard_sigmoid_network_refits_end_to_end_and_an_eca_network_is_refused(folder,
                                                                              tmp_path):
    """PP-LCNet (2 hard-sigmoid SE blocks, PaddleClas layout) with the live reference weights
    of tests/reference: refit at r = 8 writes an SE-only file whose blocks have width
    int(C / 8), fitted through the hard sigmoid (its training loss falls, held-out gates
    closer than the pruned blocks it started from);
    ECA-ResNet has no bottleneck, so r does not apply and the run says so before any work."""
    from se_viz.engine.build import build_model
    from se_viz.engine.weights import save_safetensors

    from .reference.draw import fixture_state, read_fixture

    base = save_safetensors(fixture_state(read_fixture(Path(__file__).parent / "reference"
                                                       / "pplcnet_x1_0.npz")),
                            tmp_path / "base.safetensors")
    settings = replace(TINY, arch="pplcnet_x1_0", weights=str(base), width=None,
                       num_classes=None, image_size=64, steps=300)
    out = tmp_path / "lcnet"
    result = refit(folder, out, [8], settings, QUIET)
    assert result.complete and result.fitted == (8.0,)
    fits = doc_of(out)["fits"]["8"]["blocks"]
    model = build_model("pplcnet_x1_0", base, se_weights=out / "se_r8.safetensors")
    assert [b.hidden for b in model.info.blocks] == [b.channels // 8 for b in model.info.blocks]
    assert all(b.gate.kind == "hardsigmoid" for b in model.info.blocks)
    for b in model.info.blocks:
        fit = fits[b.name]
        assert fit["objective"] == "mse" and fit["hidden"] == b.channels // 8
        assert fit["kl"] < 0.5 * fit["start_kl"], (b.name, fit)  # the fit learns
        assert fit["rmse"] < fit["pruned_rmse"], (b.name, fit)   # held out: better than start
        assert fit["rmse"] < 0.01, (b.name, fit)  # gates spread about 0.1 over channels
    with pytest.raises(DatasetError, match="r does not apply"):
        refit(folder, tmp_path / "eca", [8], replace(settings, arch="ecaresnet50d",
                                                    weights=None), QUIET)
