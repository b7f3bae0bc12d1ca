"""The seed tutorial's SE layers (se_viz.engine.tutorial), the network's two SE
implementations, and one block step by step (se_viz.analysis.se_steps, se_viz.runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import pytest

import se_viz
from se_viz.analysis.se_steps import published_gate_spread, steps
from se_viz.engine import tutorial
from se_viz.engine.tutorial import SELayer1, SELayer2, SELayer2AsPublished, load_se, se_of
from se_viz.engine.weights import export_state, save_safetensors, se_parameters, to_timm
from se_viz.results import SEParameters
from se_viz.runs import Photo, run_image, walkthrough

from .conftest import batch, make_tiny

C, R = 64, 8


def random_params(seed: int = 0, c: int = C, r: int = R) -> SEParameters:
    rng = np.random.default_rng(seed)
    h = c // r
    return SEParameters(rng.normal(0, 0.3, (c, h)).astype(np.float32),
                        rng.normal(0, 0.1, h).astype(np.float32),
                        rng.normal(0, 0.3, (h, c)).astype(np.float32),
                        rng.normal(0, 0.1, c).astype(np.float32))


def numpy_se(p: SEParameters, x: np.ndarray) -> np.ndarray:
    """squeeze -> FC -> ReLU -> FC -> sigmoid -> x * s, in float64 numpy."""
    x = x.astype(np.float64)
    z = x.mean(axis=(2, 3))
    hidden = np.maximum(z @ p.w1 + p.b1, 0)
    s = 1 / (1 + np.exp(-(hidden @ p.w2 + p.b2)))
    return x * s[:, :, None, None]


def run(layer, x: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return layer(paddle.to_tensor(x)).numpy()


def test_the_tutorials_attribute_names_are_kept():
    one, two = SELayer1(C, R), SELayer2(C, R)
    assert isinstance(one.avg_pool, paddle.nn.AdaptiveAvgPool2D)
    assert [type(m).__name__ for m in one.fc] == ["Linear", "ReLU", "Linear", "Sigmoid"]
    assert isinstance(two.squeeze, paddle.nn.AdaptiveAvgPool2D)
    assert [type(m).__name__ for m in two.excitation] == ["Conv2D", "ReLU", "Conv2D", "Sigmoid"]
    assert list(one.fc[0].weight.shape) == [C, C // R]  # Paddle Linear: [in, out]
    assert list(two.excitation[0].weight.shape) == [C // R, C, 1, 1]  # conv: [out, in, 1, 1]


def test_both_layers_with_converted_weights_equal_each_other_and_numpy():
    p = random_params(1)
    x = np.random.default_rng(2).normal(0, 1, (3, C, 9, 7)).astype(np.float32)
    out1 = run(load_se(SELayer1(C, R), p), x)
    out2 = run(load_se(SELayer2(C, R), p), x)
    assert np.abs(out1 - out2).max() <= 1e-6
    expected = numpy_se(p, x)
    np.testing.assert_allclose(out1, expected, atol=1e-6)
    np.testing.assert_allclose(out2, expected, atol=1e-6)


def test_weights_convert_both_ways_between_the_two_layers():
    p = random_params(3)
    one = load_se(SELayer1(C, R), p)
    two = load_se(SELayer2(C, R), se_of(one))  # Linear [in, out] -> conv [out, in, 1, 1]
    back = se_of(two)  # and back
    for a, b in zip((p.w1, p.b1, p.w2, p.b2), (back.w1, back.b1, back.w2, back.b2)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tutorial.linear_from_conv(tutorial.conv_from_linear(p.w1)), p.w1)
    with pytest.raises(ValueError, match="channels and reduction"):
        load_se(SELayer2(2 * C, R), p)


def test_the_published_forward_is_not_se_and_its_gates_vary_over_the_map():
    p = random_params(4)
    x = np.random.default_rng(5).normal(0, 1, (2, C, 6, 6)).astype(np.float32)
    se = run(load_se(SELayer2(C, R), p), x)
    published = load_se(SELayer2AsPublished(C, R), p)
    out = run(published, x)
    assert np.abs(out - se).max() > 0.05
    gates = run(published.excitation, x)  # what it multiplies by: one gate per pixel
    assert gates.shape == x.shape
    assert published_gate_spread(gates[0]).max() > 0.05


def test_on_an_input_constant_over_space_the_published_forward_equals_se():
    """The known answer that explains the bug: when every pixel of a channel equals the
    channel's mean, excitation(x) at each pixel is excitation(squeeze(x))."""
    p = random_params(6)
    means = np.random.default_rng(7).normal(0, 1, (2, C, 1, 1)).astype(np.float32)
    x = np.broadcast_to(means, (2, C, 5, 8)).copy()
    se = run(load_se(SELayer2(C, R), p), x)
    out = run(load_se(SELayer2AsPublished(C, R), p), x)
    np.testing.assert_allclose(out, se, atol=1e-6)
    gates = run(load_se(SELayer2AsPublished(C, R), p).excitation, x)
    assert published_gate_spread(gates[0]).max() <= 1e-6


# ----------------------------------------------------------------------------- the network
@pytest.mark.parametrize("arch,layout", [("se_resnet50_vd", "paddleclas"),
                                         ("se_resnet50", "timm")])
@pytest.mark.parametrize("engine", ["eager", "fast"])
def test_conv_and_linear_se_give_the_same_numbers_from_one_file(tmp_path, arch, layout,
                                                                engine):
    src = make_tiny(arch, seed=21)
    state = export_state(src)
    if layout == "timm":
        path = save_safetensors(to_timm(state), tmp_path / "model.safetensors")
    else:
        path = tmp_path / "SE_ResNet50_vd_pretrained.pdparams"
        paddle.save(src.state_dict(), str(path))  # PaddleClas's own writer
    kw = dict(width=8, num_classes=10)
    linear = se_viz.build_model(arch, path, se_impl="linear", **kw)
    conv = se_viz.build_model(arch, path, se_impl="conv", **kw)
    assert linear.info.layout == conv.info.layout == layout
    assert list(conv.blocks[0][2].scale.squeeze.weight.shape) == [2, 32, 1, 1]
    x = batch(2, seed=22)
    a = se_viz.capture(linear, x, engine=engine)
    b = se_viz.capture(conv, x, engine=engine)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    for name in a.gates:
        assert np.abs(a.gates[name] - b.gates[name]).max() <= 1e-5, name
    np.testing.assert_array_equal(a.top_k(5)[0], b.top_k(5)[0])
    ref = se_viz.capture(src, x, engine="eager")
    np.testing.assert_allclose(b.logits, ref.logits, rtol=1e-4, atol=1e-4)


def test_a_conv_model_exports_the_linear_form_so_files_load_into_both(tmp_path):
    conv = make_tiny("se_resnet50", seed=23, se_impl="conv")
    path = save_safetensors(export_state(conv), tmp_path / "w.safetensors")
    linear = se_viz.build_model("se_resnet50", path, width=8, num_classes=10)
    x = batch(1, seed=24)
    np.testing.assert_allclose(se_viz.capture(linear, x, engine="eager").logits,
                               se_viz.capture(conv, x, engine="eager").logits, atol=1e-5)
    p_conv, p_lin = se_parameters(conv)["SE_3_2"], se_parameters(linear)["SE_3_2"]
    np.testing.assert_array_equal(p_conv.w1, p_lin.w1)


def test_interventions_work_on_the_conv_layout():
    conv = make_tiny("se_resnet50_vd", seed=25, se_impl="conv")
    linear = make_tiny("se_resnet50_vd", seed=25)
    iv = se_viz.Intervention(gates={"SE_3_1": 1.0, "SE_4_2": np.linspace(0, 1, 128)},
                             hidden_masks={"SE_5_1": np.eye(1, 16, 3, dtype=np.float32)[0]})
    x = batch(1, seed=26)
    a = se_viz.capture(conv, x, intervention=iv)
    b = se_viz.capture(linear, x, intervention=iv)
    assert np.all(a.gates["SE_3_1"] == 1.0) and a.gates["SE_3_1"].shape == (1, 64)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)


# ----------------------------------------------------------------------------- step by step
def test_the_walkthrough_shows_the_blocks_own_numbers(tiny_vd):
    data = (Path(__file__).parents[1] / "assets" / "cat_chelsea.jpg").read_bytes()
    res = run_image(Photo.of("cat.jpg", data), tiny_vd)
    walk = walkthrough(tiny_vd, res, "SE_4_2")
    cap = se_viz.capture(tiny_vd, [se_viz.decode_image(data)], features=["SE_4_2"],
                         engine="eager")
    np.testing.assert_allclose(walk.steps.gates, cap.gates["SE_4_2"][0], atol=1e-5)
    np.testing.assert_allclose(walk.steps.squeeze, cap.squeeze["SE_4_2"][0], atol=1e-5)
    assert walk.steps.mismatch <= 1e-5  # recomputed from z with the block's weights
    assert walk.maps.shape == cap.features["SE_4_2"].before.shape[1:]
    assert walk.layers.largest_difference <= 1e-5
    np.testing.assert_allclose(walk.layers.out1, walk.maps * walk.steps.gates[:, None, None],
                               atol=1e-4)  # SELayer1 on U (float16-stored) reweights U by s
    hidden = walk.steps.hidden
    assert walk.steps.zero_hidden == int((hidden == 0).sum()) and hidden.shape == (128 // 16,)


def test_steps_refuse_vectors_of_another_block():
    p = random_params(8)
    with pytest.raises(ValueError, match=r"\(64,\)"):
        steps(p, np.zeros(32), np.zeros(32))
