"""Command line: capture outputs round-trip, bad files, weights commands, offline behaviour."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import se_viz
from se_viz import export
from se_viz.engine import download
from se_viz.engine import traced as fast
from se_viz.cli import main
from se_viz.images import load_image
from se_viz.engine.weights import export_state, read_file, save_safetensors, to_timm

from .conftest import batch, make_tiny

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "assets" / "cat_chelsea.jpg"
CUP = ROOT / "assets" / "coffee_cup.jpg"
W8 = ["--width", "8"]


@pytest.fixture(scope="module")
def tiny_full_head():
    """Width-8 model with 1000 classes: what `--width 8` builds (seed 0)."""
    return make_tiny(num_classes=1000)


@pytest.mark.parametrize("suffix", [".npz", ".json", ".csv"])
def test_capture_writes_all_blocks_and_round_trips(tmp_path, capsys, suffix, tiny_full_head):
    out = tmp_path / f"gates{suffix}"
    rc = main(["capture", str(CAT), str(CUP), "--out", str(out), *W8])
    assert rc == 0
    files, logits, gates, meta = export.read(out)
    assert files == [str(CAT), str(CUP)]
    assert list(gates) == [b.name for b in tiny_full_head.info.blocks]
    ref = se_viz.capture(tiny_full_head, [load_image(CAT), load_image(CUP)])
    np.testing.assert_allclose(logits, ref.logits, rtol=1e-4, atol=1e-4)
    for name in ref.gates:
        np.testing.assert_allclose(gates[name], ref.gates[name], atol=1e-5)
    assert str(meta["untrained"]) in ("True", "true") or meta["untrained"] is True
    assert "resize short side 256" in meta["preprocessing"]
    assert "UNTRAINED" in capsys.readouterr().err


def test_npz_layout_matches_the_contract(tmp_path):
    out = tmp_path / "g.npz"
    assert main(["capture", str(CAT), "--out", str(out), *W8]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["logits"].shape == (1, 1000) and z["files"].shape == (1,)
        assert z["SE_2_1"].shape == (1, 32) and z["SE_5_3"].shape == (1, 256)
        assert z["SE_3_4"].dtype == np.float32


def test_bad_file_among_good_ones(tmp_path, capsys):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"definitely not a jpeg")
    out = tmp_path / "g.json"
    rc = main(["capture", str(CAT), str(junk), str(CUP), "--out", str(out), *W8])
    err = capsys.readouterr().err
    assert rc == 1
    assert "junk.jpg" in err and "Traceback" not in err
    assert [ln for ln in err.splitlines() if "junk.jpg" in ln and "not an image" in ln]
    files, _, gates, _ = export.read(out)
    assert files == [str(CAT), str(CUP)] and gates["SE_2_1"].shape[0] == 2


def test_only_bad_files_write_nothing(tmp_path, capsys):
    out = tmp_path / "g.npz"
    rc = main(["capture", str(tmp_path / "missing.png"), "--out", str(out), *W8])
    assert rc == 1 and not out.exists()
    assert "missing.png" in capsys.readouterr().err


def test_top5_printout_without_out(capsys):
    assert main(["capture", str(CAT), *W8]) == 0
    out = capsys.readouterr().out
    assert str(CAT) in out and "  5. " in out and "%" in out
    assert "untrained" in out


def test_labels_file_names_the_classes(tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing {i}\n" for i in range(10)), "utf-8")
    assert main(["capture", str(CAT), *W8, "--num-classes", "10", "--labels", str(names)]) == 0
    out = capsys.readouterr().out
    assert "  1. thing " in out and "class " not in out
    out_file = tmp_path / "g.json"
    assert main(["capture", str(CAT), *W8, "--num-classes", "10", "--labels", str(names),
                 "--out", str(out_file)]) == 0
    assert "thing " in out_file.read_text("utf-8")
    names.write_text("only\ntwo\n", "utf-8")
    assert main(["capture", str(CAT), *W8, "--num-classes", "10", "--labels", str(names)]) == 1
    err = capsys.readouterr().err
    assert "--labels" in err and "10 classes" in err and "Traceback" not in err


def test_archs_lists_every_arch_with_family_and_cache_state(capsys, monkeypatch):
    from se_viz.arch import ARCHS, PRETRAINED, SPECS
    from se_viz.cli import archs

    assert main(["archs", "--no-counts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["arch", "family"] and len(lines) == 1 + len(ARCHS)
    for arch, line in zip(ARCHS, lines[1:]):
        assert line.startswith(arch) and SPECS[arch].family in line
        assert PRETRAINED[arch].filename in line and line.rstrip().endswith(("yes", "no"))
    assert archs.counts("se_resnet50_vd")[0] == "16 SE"  # counted from the built network

    def missing(arch, num_classes=1000, **kw):
        raise AttributeError(f"no factory for {arch}")

    monkeypatch.setattr("se_viz.engine.networks.build", missing)
    assert archs.counts("regnety_032") == ("not available", "n/a", "n/a")


def test_arch_choices_are_every_arch(capsys):
    from se_viz.arch import ARCHS

    for argv in (["capture", str(CAT)], ["analyze", "x", "--out", "y"],
                 ["refit", "x", "--reduction", "8", "--out", "y"], ["weights", "fetch"]):
        with pytest.raises(SystemExit):
            main([*argv, "--arch", "nope"])
        err = capsys.readouterr().err
        assert all(a in err for a in ARCHS), argv


def test_default_weights_use_the_cached_pretrained_file(tmp_path, capsys):
    model = make_tiny(seed=21, num_classes=1000)
    target = download.expected_path("se_resnet50_vd")
    target.parent.mkdir(parents=True, exist_ok=True)
    import paddle
    paddle.save(model.state_dict(), str(target))
    out = tmp_path / "g.npz"
    assert main(["capture", str(CAT), "--out", str(out), *W8]) == 0
    assert "UNTRAINED" not in capsys.readouterr().err
    _, logits, _, meta = export.read(out)
    ref = se_viz.capture(model, [load_image(CAT)])
    np.testing.assert_allclose(logits, ref.logits, rtol=1e-4, atol=1e-4)
    assert meta["weights"] == str(target) and meta["layout"] == "paddleclas"


def test_pretrained_offline_fails_fast_with_instructions(monkeypatch, capsys):
    monkeypatch.setenv("SE_VIZ_MIRROR", "http://127.0.0.1:9")  # discard port: refused
    start = time.monotonic()
    rc = main(["capture", str(CAT), "--weights", "pretrained", *W8])
    assert rc == 1 and time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "SE_ResNet50_vd_pretrained.pdparams" in err and "Traceback" not in err
    assert str(download.expected_path("se_resnet50_vd")) in err
    assert download.cached_path("se_resnet50_vd") is None


@pytest.mark.parametrize("arch", ["se_resnet50", "se_resnet50_vd"])
def test_weights_convert_reproduces_the_source(tmp_path, capsys, arch):
    import paddle
    src = make_tiny(arch, seed=5, num_classes=1000)
    if arch == "se_resnet50":  # a timm checkpoint, converted on the way
        inp = save_safetensors(to_timm(export_state(src)), tmp_path / "model.safetensors")
    else:  # a PaddleClas .pdparams
        inp = tmp_path / "w.pdparams"
        paddle.save(src.state_dict(), str(inp))
    out = tmp_path / "converted.safetensors"
    assert main(["weights", "convert", str(inp), str(out), *W8]) == 0
    assert "converted" in capsys.readouterr().out
    arrays, meta, _ = read_file(out)
    assert meta["arch"] == arch and meta["format"] == "se_viz"
    from se_viz.engine.weights import detect_layout
    assert detect_layout(arrays) == ("se_viz" if arch == "se_resnet50" else "paddleclas")
    again = se_viz.build_model(arch, out, width=8)
    x = [load_image(CAT)]
    np.testing.assert_allclose(se_viz.capture(again, x).logits, se_viz.capture(src, x).logits,
                               rtol=1e-5, atol=1e-5)
    assert main(["weights", "convert", str(inp), str(tmp_path / "bad.bin"), *W8]) == 2
    assert "must be a .safetensors" in capsys.readouterr().err


def test_weights_install_checks_then_places_the_file(tmp_path, capsys):
    import paddle
    other = save_safetensors(export_state(make_tiny(num_classes=1000)), tmp_path / "a.safetensors")
    assert main(["weights", "install", str(other), *W8]) == 1
    assert "--weights" in capsys.readouterr().err
    bad, good = tmp_path / "bad.pdparams", tmp_path / "good.pdparams"
    paddle.save(make_tiny(num_classes=3).state_dict(), str(bad))
    model = make_tiny(num_classes=1000, seed=8)
    paddle.save(model.state_dict(), str(good))
    assert main(["weights", "install", str(bad), *W8]) == 1
    assert "num_classes=3" in capsys.readouterr().err
    assert download.cached_path("se_resnet50_vd") is None
    assert main(["weights", "install", str(good), *W8]) == 0
    cached = download.cached_path("se_resnet50_vd")
    assert cached is not None and cached.read_bytes() == good.read_bytes()


def test_weights_info_and_bad_arguments(capsys):
    assert main(["weights", "info"]) == 0
    out = capsys.readouterr().out
    assert "cache folder" in out and "se_resnet50_vd" in out and "missing" in out
    assert "fast graphs: 0 file(s)" in out
    model = make_tiny(seed=41)
    se_viz.capture(model, batch(1), engine="fast")
    assert main(["weights", "info"]) == 0
    path = fast.graph_for(model)[1].path
    assert f"fast graphs: 1 file(s), {path.stat().st_size / 2**20:.0f} MiB in {path.parent}" \
        in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["capture", str(CAT), "--reduction", "0.5"])
    assert exc.value.code == 2
    assert "r must be >= 1" in capsys.readouterr().err


def test_weights_fetch_from_a_local_mirror(tmp_path, capsys):
    import functools
    import http.server
    import threading

    model = make_tiny(num_classes=1000)
    served = tmp_path / "srv"
    served.mkdir()
    import paddle
    paddle.save(model.state_dict(), str(served / "SE_ResNet50_vd_pretrained.pdparams"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/SE_ResNet50_vd_pretrained.pdparams"
        assert main(["weights", "fetch", "--url", url]) == 0
        assert download.cached_path("se_resnet50_vd") is not None
        assert main(["weights", "fetch"]) == 0
        assert "already cached" in capsys.readouterr().out
    finally:
        srv.shutdown()


def test_module_entry_point_runs_in_a_fresh_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "se_viz", "capture", str(CAT), *W8],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1. " in proc.stdout and "Traceback" not in proc.stderr
    assert "ccache" not in proc.stderr


def test_many_images_are_batched_in_order(tmp_path, tiny_full_head):
    from PIL import Image
    paths = []
    for i in range(7):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (40 + i, 50), (30 * i, 255 - 30 * i, 90)).save(p)
        paths.append(str(p))
    paths.insert(3, str(tmp_path / "gone.png"))
    out = tmp_path / "g.npz"
    assert main(["capture", *paths, "--out", str(out), "--batch-size", "3", *W8]) == 1
    files, logits, gates, _ = export.read(out)
    assert files == [p for p in paths if "gone" not in p]
    ref = se_viz.capture(tiny_full_head, [load_image(p) for p in files])
    np.testing.assert_allclose(gates["SE_3_2"], ref.gates["SE_3_2"], atol=1e-5)
    np.testing.assert_allclose(logits, ref.logits, rtol=1e-4, atol=1e-4)


def test_capture_with_another_family_and_a_finetuned_head(tmp_path, capsys):
    """--arch of a new family, a 10-class checkpoint (K read from the file) and --labels."""
    from se_viz.engine.build import build_model
    from se_viz.engine.weights import export_state, save_safetensors

    weights = save_safetensors(export_state(build_model("lcnet_100", num_classes=10, seed=4)),
                               tmp_path / "tuned.safetensors")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"part {i}\n" for i in range(10)), "utf-8")
    out_file = tmp_path / "g.npz"
    assert main(["capture", str(CAT), "--arch", "lcnet_100", "--weights", str(weights),
                 "--labels", str(names), "--out", str(out_file)]) == 0
    with np.load(out_file) as data:
        gates = [k for k in data.files if k.startswith("SE_")]
        assert data["logits"].shape == (1, 10) and len(gates) == 2
    assert main(["capture", str(CAT), "--arch", "lcnet_100", "--weights", str(weights),
                 "--labels", str(names)]) == 0
    assert "  1. part " in capsys.readouterr().out
    assert main(["capture", str(CAT), "--arch", "lcnet_100", "--reduction", "8"]) == 1
    assert "reduction and width apply to" in capsys.readouterr().err
