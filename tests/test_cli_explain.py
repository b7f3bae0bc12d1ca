"""se-viz explain: outputs hold what se_viz.explain gives (round trips of .npz/.json, the
.csv rows), the PNG overlays are cam_overlay of the crop, bad input gets one clear line and
an exit status from cli/common.py, good images are still processed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import se_viz
from se_viz import export
from se_viz.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from se_viz.cli.explain import png_names
from se_viz.images import center_crop, load_image
from se_viz.plots import cam_overlay

from .conftest import make_tiny

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "assets" / "cat_chelsea.jpg"
CUP = ROOT / "assets" / "coffee_cup.jpg"
W8 = ["--width", "8"]
BLOCKS = ["SE_2_1", "SE_5_3"]


@pytest.fixture(scope="module")
def tiny():
    """What `--width 8` builds (seed 0, 1000 classes)."""
    return make_tiny(num_classes=1000)


@pytest.fixture(scope="module")
def ref(tiny):
    return se_viz.explain(tiny, [load_image(CAT), load_image(CUP)], blocks=BLOCKS)


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_explain_writes_the_evidence_and_round_trips(tmp_path, capsys, suffix, tiny, ref):
    out = tmp_path / f"ev{suffix}"
    rc = main(["explain", str(CAT), str(CUP), "--blocks", *BLOCKS, "--out", str(out), *W8])
    assert rc == EXIT_OK
    ev, meta = export.read_evidence(out)
    assert ev.names == (str(CAT), str(CUP))
    np.testing.assert_array_equal(ev.target, ref.target)
    np.testing.assert_allclose(ev.logits, ref.logits, rtol=1e-4, atol=1e-4)
    assert list(ev.gates) == list(ev.gate_grad) == [b.name for b in tiny.info.blocks]
    for b in ev.gates:
        np.testing.assert_allclose(ev.gates[b], ref.gates[b], atol=1e-5)
        np.testing.assert_allclose(ev.gate_grad[b], ref.gate_grad[b], rtol=1e-3, atol=1e-6)
    assert sorted(ev.cam) == sorted(ev.layercam) == sorted(BLOCKS)  # only the blocks asked
    for b in BLOCKS:
        np.testing.assert_allclose(ev.cam[b], ref.cam[b], rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(ev.layercam[b], ref.layercam[b], rtol=1e-3, atol=1e-6)
    assert meta["arch"] == "se_resnet50_vd" and "resize short side 256" in meta["preprocessing"]
    assert "UNTRAINED" in capsys.readouterr().err


def test_npz_and_json_layout(tmp_path, ref):
    assert main(["explain", str(CAT), "--blocks", "SE_5_3", "--out", str(tmp_path / "e.npz"),
                 "--class", "281", *W8]) == EXIT_OK
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:
        assert z["target"].tolist() == [281] and z["logits"].shape == (1, 1000)
        assert z["SE_5_3/gates"].shape == z["SE_5_3/attribution"].shape == (1, 256)
        np.testing.assert_array_equal(z["SE_5_3/attribution"],
                                      z["SE_5_3/gates"] * z["SE_5_3/gate_grad"])
        assert z["SE_5_3/cam"].ndim == 3 and "SE_2_1/cam" not in z.files
    assert main(["explain", str(CAT), "--out", str(tmp_path / "e.json"), "--class", "tabby",
                 "--blocks", "SE_5_3", *W8]) == EXIT_OK
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["target"] == [281] and doc["target_label"] == ["tabby"]
    assert len(doc["class_names"]) == 1000 and doc["class_names"][281] == "tabby"
    assert set(doc["blocks"]["SE_5_3"]) == {"gates", "gate_grad", "attribution", "cam",
                                            "layercam"}
    assert set(doc["blocks"]["SE_2_1"]) == {"gates", "gate_grad", "attribution"}


def test_csv_one_row_per_image_block_channel(tmp_path, tiny, ref):
    out = tmp_path / "ev.csv"
    assert main(["explain", str(CAT), str(CUP), "--out", str(out), *W8]) == EXIT_OK
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("# ")]
    rows = list(csv.DictReader(lines))
    assert list(rows[0]) == ["image", "target", "block", "channel", "gate", "gate_grad",
                             "attribution"]
    assert len(rows) == 2 * sum(b.channels for b in tiny.info.blocks)
    got = np.array([float(r["attribution"]) for r in rows
                    if r["image"] == str(CUP) and r["block"] == "SE_4_2"], np.float32)
    np.testing.assert_allclose(got, ref.attribution("SE_4_2")[1], rtol=1e-3, atol=1e-7)
    assert {r["target"] for r in rows if r["image"] == str(CAT)} == {str(ref.target[0])}


def test_png_is_the_overlay_of_each_image_and_block(tmp_path, capsys, tiny, ref):
    folder = tmp_path / "png"
    rc = main(["explain", str(CAT), str(CUP), "--blocks", *BLOCKS, "--png", str(folder), *W8])
    assert rc == EXIT_OK
    assert sorted(p.name for p in folder.iterdir()) == [
        "cat_chelsea_SE_2_1.png", "cat_chelsea_SE_5_3.png",
        "coffee_cup_SE_2_1.png", "coffee_cup_SE_5_3.png"]
    for i, path in enumerate((CAT, CUP)):
        crop = np.asarray(center_crop(load_image(path), tiny.preprocessing))
        for b in BLOCKS:
            png = np.asarray(Image.open(folder / f"{path.stem}_{b}.png"))
            assert png.shape == crop.shape == (224, 224, 3)
            want = cam_overlay(crop, ref.cam[b][i], 0.5)
            assert np.abs(png.astype(int) - want).max() <= 1
    assert "wrote 4 PNG(s)" in capsys.readouterr().out


def test_without_outputs_prints_the_class_and_top_channels(capsys, ref):
    assert main(["explain", str(CAT), "--blocks", "SE_5_3", *W8]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{CAT}: class {int(ref.target[0])} " in out
    assert "SE_2_1 " in out and "SE_5_3 " in out and " ch " in out


def test_png_names_keep_images_apart():
    assert png_names(["a/cat.jpg", "b/cat.png", "c/dog.jpg"]) == ["cat_0", "cat_1", "dog"]


@pytest.mark.parametrize("args, message", [
    (["--blocks", "SE_9_9"], "unknown block 'SE_9_9'; this network's blocks are SE_2_1"),
    (["--class", "1000"], "--class 1000 is out of range: this network has 1000 classes, "
                          "0 .. 999"),
    (["--class", "-1"], "out of range"),
    (["--class", "no such thing"], "no class is named 'no such thing'; give a class index"),
    (["--out", "ev.txt"], "--out must end in .npz, .json, .csv"),
])
def test_bad_options_one_line_usage_status_nothing_written(tmp_path, capsys, args, message):
    out = [] if "--out" in args else ["--out", str(tmp_path / "e.npz")]
    args = [str(tmp_path / a) if a == "ev.txt" else a for a in args]
    rc = main(["explain", str(CAT), *args, *out, "--png", str(tmp_path / "png"), *W8])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("se-viz: error:")]
    assert rc == EXIT_USAGE and len(lines) == 1 and message in lines[0]
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_png_folder_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["explain", str(CAT), "--png", str(tmp_path / "f"), *W8]) == EXIT_USAGE
    assert "is not a folder" in capsys.readouterr().err


def test_bad_image_among_good_ones_is_skipped(tmp_path, capsys, ref):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"definitely not a jpeg")
    out = tmp_path / "ev.npz"
    rc = main(["explain", str(CAT), str(junk), str(CUP), "--blocks", *BLOCKS, "--out", str(out),
               "--png", str(tmp_path / "png"), "--batch-size", "1", *W8])
    err = capsys.readouterr().err
    assert rc == EXIT_FAILED and "Traceback" not in err
    assert [ln for ln in err.splitlines() if "junk.jpg" in ln and "not an image" in ln]
    ev, _ = export.read_evidence(out)
    assert ev.names == (str(CAT), str(CUP))
    np.testing.assert_allclose(ev.gate_grad["SE_5_3"], ref.gate_grad["SE_5_3"], rtol=1e-3,
                               atol=1e-6)
    assert len(list((tmp_path / "png").iterdir())) == 4


def test_only_bad_images_write_nothing(tmp_path, capsys):
    out = tmp_path / "ev.npz"
    assert main(["explain", str(tmp_path / "missing.png"), "--out", str(out), *W8]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "missing.png" in err and "no usable image" in err and not out.exists()
