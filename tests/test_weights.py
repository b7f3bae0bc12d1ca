"""Weight files: round trips, timm conversion, strictness, refusal of unsafe pickles."""

from __future__ import annotations

import pickle

import numpy as np
import paddle
import pytest

import se_viz
from se_viz.errors import WeightsError
from se_viz.engine.weights import (detect_layout, export_state, read_bytes, read_file,
                            safe_unpickle, save_safetensors, to_timm)

from .conftest import TINY, batch, make_tiny


def _logits(model, x):
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def _build(arch, path, **kw):
    opts = dict(TINY)
    opts.update(kw)
    return se_viz.build_model(arch, path, width=opts.pop("width"), **opts)


@pytest.mark.parametrize("protocol", [2, 4])
def test_paddleclas_pdparams_round_trips_through_paddle_save(tmp_path, protocol):
    src = make_tiny("se_resnet50_vd", seed=11)
    path = tmp_path / "SE_ResNet50_vd_pretrained.pdparams"
    paddle.save(src.state_dict(), str(path), protocol=protocol)  # PaddleClas's own writer
    loaded = _build("se_resnet50_vd", path)
    x = batch(2)
    np.testing.assert_array_equal(_logits(loaded, x), _logits(src, x))
    assert loaded.info.layout == "paddleclas" and not loaded.info.untrained
    assert len(loaded.info.sha256) == 64


def test_plain_pickled_numpy_dict_loads(tmp_path):
    src = make_tiny("se_resnet50_vd", seed=12)
    path = tmp_path / "w.pdparams"
    path.write_bytes(pickle.dumps(export_state(src), protocol=4))
    x = batch(1)
    np.testing.assert_array_equal(_logits(_build("se_resnet50_vd", path), x), _logits(src, x))


@pytest.mark.parametrize("arch", ["se_resnet50_vd", "se_resnet50"])
def test_safetensors_round_trip(tmp_path, arch):
    src = make_tiny(arch, seed=13)
    path = save_safetensors(export_state(src), tmp_path / "w.safetensors", {"arch": arch})
    loaded = _build(arch, path)
    x = batch(2)
    np.testing.assert_array_equal(_logits(loaded, x), _logits(src, x))
    assert read_file(path)[1]["arch"] == arch


def test_timm_layout_converts_and_reproduces_the_source_model(tmp_path):
    src = make_tiny("se_resnet50", seed=14)
    timm = to_timm(export_state(src))
    # timm's own key names and shapes (REFERENCE.md 1b)
    assert timm["layer1.0.se.fc1.weight"].shape == (2, 32, 1, 1)
    assert timm["layer1.0.se.fc2.weight"].shape == (32, 2, 1, 1)
    assert timm["fc.weight"].shape == (10, 256)
    assert "layer1.0.downsample.0.weight" in timm and "bn1.running_var" in timm
    timm["bn1.num_batches_tracked"] = np.array(7, dtype=np.int64)
    path = save_safetensors(timm, tmp_path / "model.safetensors")
    assert detect_layout(timm) == "timm"
    loaded = _build("se_resnet50", path)
    x = batch(3, seed=3)
    np.testing.assert_allclose(_logits(loaded, x), _logits(src, x), rtol=1e-5, atol=1e-5)
    assert loaded.info.layout == "timm"
    assert loaded.preprocessing.interpolation == "bicubic"
    cap_a, cap_b = se_viz.capture(loaded, x), se_viz.capture(src, x)
    np.testing.assert_allclose(cap_a.gates["SE_4_3"], cap_b.gates["SE_4_3"], atol=1e-6)


def test_missing_key_is_named(tmp_path):
    state = export_state(make_tiny())
    del state["bb_1_2.scale.excitation.bias"]
    path = save_safetensors(state, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=r"1 missing key.*bb_1_2\.scale\.excitation\.bias"
                                           r".*'paddleclas' layout"):
        _build("se_resnet50_vd", path)


def test_wrong_shape_names_key_and_suggests_num_classes(tmp_path):
    path = save_safetensors(export_state(make_tiny(num_classes=7)), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=r"out\.weight is \[256, 7\].*num_classes=7"):
        _build("se_resnet50_vd", path)
    assert _build("se_resnet50_vd", path, num_classes=7).info.num_classes == 7


def test_wrong_reduction_is_explained(tmp_path):
    path = save_safetensors(export_state(make_tiny(reduction=4)), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="reduction ratio is about 4"):
        _build("se_resnet50_vd", path)


def test_unexpected_key_is_named(tmp_path):
    state = export_state(make_tiny())
    state["extra.head.weight"] = np.zeros(3, np.float32)
    path = save_safetensors(state, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="unexpected key.*extra.head.weight"):
        _build("se_resnet50_vd", path)


def test_layout_for_the_other_arch_is_refused(tmp_path):
    path = save_safetensors(export_state(make_tiny("se_resnet50_vd")), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="use arch 'se_resnet50_vd'"):
        _build("se_resnet50", path)


def test_cadene_layout_is_recognised_and_refused(tmp_path):
    """A legacy (Cadene) SE-ResNet-50 file loaded as se_resnet50 names legacy_seresnet50."""
    arrays = {"layer0.conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
              "layer1.0.se_module.fc1.weight": np.zeros((16, 256, 1, 1), np.float32)}
    path = save_safetensors(arrays, tmp_path / "cadene.safetensors")
    with pytest.raises(WeightsError, match="'cadene' layout .for legacy_seresnet50"):
        _build("se_resnet50", path)


@pytest.mark.parametrize("name,data,match", [
    ("empty.safetensors", b"", "empty"),
    ("junk.safetensors", b"\x00\x01 not a safetensors file at all", "not a valid .safetensors"),
    ("junk.pdparams", b"this is not a pickle", "not a readable .pdparams"),
    ("w.onnx", b"whatever", "unsupported weights format"),
])
def test_bad_files_get_clear_errors(tmp_path, name, data, match):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(WeightsError, match=match):
        _build("se_resnet50_vd", path)


def test_truncated_safetensors_is_refused(tmp_path):
    path = save_safetensors(export_state(make_tiny()), tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a valid .safetensors"):
        _build("se_resnet50_vd", path)


def test_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(WeightsError, match="not found.*weights fetch"):
        _build("se_resnet50_vd", tmp_path / "nope.pdparams")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = {"conv1_1._conv.weight": _Payload(marker)}
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(WeightsError, match=r"refused.*(io|builtins)\.open"):
        _build("se_resnet50_vd", path)
    assert not marker.exists()
    # Paddle's own LoDTensor reduction uses eval(): refused as well
    evil_eval = b"cbuiltins\neval\n(Vprint(1)\ntR."
    with pytest.raises(WeightsError, match=r"builtins\.eval"):
        safe_unpickle(evil_eval, "x.pdparams")
    os_system = b"cos\nsystem\n(Vtouch " + str(marker).encode() + b"\ntR."
    with pytest.raises(WeightsError, match=r"os\.system"):
        safe_unpickle(os_system, "x.pdparams")
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.pdparams"
    path.write_bytes(pickle.dumps({"a": np.array([1, "x"], dtype=object)}))
    with pytest.raises(WeightsError):
        read_file(path)


def test_uploaded_bytes_are_only_read_as_safetensors(tmp_path):
    src = export_state(make_tiny())
    with pytest.raises(WeightsError, match="safetensors"):
        read_bytes(pickle.dumps(src), "upload.pdparams")
    path = save_safetensors(src, tmp_path / "w.safetensors")
    arrays, _, digest = read_bytes(path.read_bytes())
    assert set(arrays) == set(src) and len(digest) == 64


def test_a_broken_pth_is_explained_without_torch(tmp_path):
    """.pth files are read without torch (se_viz.engine.torchfile); a broken one says so."""
    path = tmp_path / "w.pth"
    path.write_bytes(b"PK")
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        _build("se_resnet50", path)


def test_a_weights_file_changed_on_disk_is_detected(tmp_path):
    import os

    from se_viz.engine.build import file_fingerprint, verify_weights
    path = save_safetensors(export_state(make_tiny(seed=1)), tmp_path / "w.safetensors")
    model = _build("se_resnet50_vd", path)
    verify_weights(model)  # unchanged
    os.utime(path, ns=(1, 1))  # touched, same bytes: fine
    verify_weights(model)
    assert model.info.extra["fingerprint"] == file_fingerprint(path)
    save_safetensors(export_state(make_tiny(seed=2)), path)  # replaced behind our back
    with pytest.raises(WeightsError, match="changed on disk"):
        verify_weights(model)
    path.unlink()
    with pytest.raises(WeightsError, match="missing"):
        verify_weights(model)
    verify_weights(make_tiny())  # untrained: nothing to check
