"""Every network se_viz builds: the block list contract, both engines, heads of any size,
strict loading that names the network a file belongs to."""

from __future__ import annotations

import numpy as np
import pytest

import se_viz
from se_viz.arch import ARCHS, SPECS
from se_viz.blocks import stages
from se_viz.engine.build import build_model
from se_viz.engine.model import attention_layers
from se_viz.engine.weights import export_state, save_safetensors
from se_viz.errors import WeightsError

from .conftest import batch

NEW = [a for a in ARCHS if a not in ("se_resnet50_vd", "se_resnet50")]
BLOCKS = {"se_resnext50_vd_32x4d": 16, "seresnext50_32x4d": 16, "legacy_seresnet50": 16,
          "ecaresnet50d": 16, "efficientnet_b0": 16, "mobilenetv3_large_100": 8, "lcnet_100": 2,
          "mobilenetv3_large_x1_0": 8, "pplcnet_x1_0": 2, "regnety_008": 14, "regnety_032": 21}


@pytest.fixture(scope="module")
def models():
    return {}


def _model(models, arch):
    if arch not in models:
        models[arch] = build_model(arch, seed=1)
    return models[arch]


@pytest.mark.parametrize("arch", NEW)
def test_block_list_describes_the_network(models, arch):
    model = _model(models, arch)
    blocks = model.info.blocks
    assert len(blocks) == BLOCKS[arch]
    assert len({b.name for b in blocks}) == len(blocks)  # names are unique
    for b, layer in attention_layers(model):
        assert b.channels == layer.channels and b.hidden == layer.hidden
        assert b.path.startswith(b.block_path + ".")
        assert b.name == f"SE_{b.stage}_{b.index}"
    assert list(stages(blocks)) == list(dict.fromkeys(b.stage_label for b in blocks))
    assert model.preprocessing == SPECS[arch].preprocessing
    assert model.info.untrained and model.info.num_classes == 1000


@pytest.mark.parametrize("arch", NEW)
def test_both_engines_agree_for_every_family(models, arch):
    """The traced graph (ONNX Runtime) against the eager hooks: gates within 5e-4."""
    model = _model(models, arch)
    x = batch(2, 64, seed=3)
    eager = se_viz.capture(model, x, engine="eager")
    fast = se_viz.capture(model, x, engine="fast")
    assert list(eager.gates) == [b.name for b in model.info.blocks]
    assert list(fast.gates) == list(eager.gates)
    for name, g in eager.gates.items():
        assert g.shape == (2, model.info.blocks[list(eager.gates).index(name)].channels)
        np.testing.assert_allclose(fast.gates[name], g, atol=5e-4, err_msg=name)
        assert 0.0 <= g.min() and g.max() <= 1.0
    scale = max(1.0, float(np.abs(eager.logits).max()))
    np.testing.assert_allclose(fast.logits, eager.logits, atol=5e-4 * scale)


def test_a_ten_class_checkpoint_loads_with_its_labels(tmp_path):
    """A fine-tuned head of K classes: K read from the file, names from a labels file."""
    tuned = build_model("mobilenetv3_large_100", num_classes=10, seed=2)
    path = save_safetensors(export_state(tuned), tmp_path / "tuned.safetensors")
    names = [f"part {i}" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    model = build_model("mobilenetv3_large_100", path, labels=tmp_path / "labels.txt")
    assert model.info.num_classes == 10 and model.info.class_names == tuple(names)
    x = batch(1, 64)
    np.testing.assert_allclose(se_viz.capture(model, x, engine="eager").logits,
                               se_viz.capture(tuned, x, engine="eager").logits, atol=1e-5)
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 line.*10 classes"):
        build_model("mobilenetv3_large_100", path, labels=tmp_path / "short.txt")


@pytest.mark.parametrize("saved,asked", [("efficientnet_b0", "mobilenetv3_large_100"),
                                         ("regnety_008", "se_resnet50"),
                                         ("se_resnet50_vd", "se_resnext50_vd_32x4d")])
def test_a_file_of_another_network_is_refused_naming_it(tmp_path, saved, asked):
    path = save_safetensors(export_state(build_model(saved)), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=f"holds weights of {saved}, not {asked}"):
        build_model(asked, path)


def test_resnet_options_are_refused_for_other_networks():
    with pytest.raises(ValueError, match="reduction and width apply to"):
        build_model("efficientnet_b0", reduction=8)
