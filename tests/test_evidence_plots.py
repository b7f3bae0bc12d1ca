"""Class evidence figures (se_viz.plots.cam / attribution / attribution_heatmap /
deletion_figure) and the CAM overlay pixels, from hand-made Evidence with known values:
assertions on fig.data (trace types, shapes, values, hover text), never on pixels drawn."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from se_viz import plots
from se_viz.plots.evidence import CAM_LUT
from se_viz.results import DeletionCurve, Evidence

K = 5  # classes


@pytest.fixture()
def ev() -> Evidence:
    """Two images, two blocks (4 and 3 channels); cam/layercam for SE_B only."""
    gates = {"SE_A": np.array([[0.5, 1.0, 0.25, 0.8], [0.1, 0.2, 0.3, 0.4]], np.float32),
             "SE_B": np.array([[0.9, 0.5, 0.1], [1.0, 0.0, 0.5]], np.float32)}
    grad = {"SE_A": np.array([[2.0, -3.0, 0.4, 0.5], [1.0, 1.0, 1.0, 1.0]], np.float32),
            "SE_B": np.array([[-1.0, 4.0, 10.0], [0.5, 9.0, -2.0]], np.float32)}
    cam = np.zeros((2, 2, 3), np.float32)
    cam[0] = [[0.0, 1.0, 2.0], [3.0, 4.0, 6.0]]
    cam[1] = 0.7  # constant
    layercam = np.full((2, 2, 3), 0.25, np.float32)
    logits = np.zeros((2, K), np.float32)
    logits[0, 3], logits[1, 1] = 2.0, 1.0
    return Evidence(np.array([3, 1]), logits, gates, grad, {"SE_B": cam},
                    {"SE_B": layercam}, ("cat.jpg", "cup.jpg"))


def crop(size: int = 12) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- upsample


def test_upsample_of_a_constant_map_is_that_constant():
    big = plots.upsample(np.full((7, 7), 0.3, np.float32), (224, 224))
    assert big.shape == (224, 224) and big.dtype == np.float32
    assert np.all(big == np.float32(0.3))


def test_upsample_is_pillows_bilinear_enlargement():
    m = np.random.default_rng(1).random((7, 5)).astype(np.float32)
    ref = np.asarray(Image.fromarray(m, mode="F").resize((40, 56), Image.BILINEAR))
    np.testing.assert_allclose(plots.upsample(m, (56, 40)), ref, atol=1e-5)


def test_upsample_keeps_the_range_and_a_same_size_map():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(plots.upsample(m, (3, 4)), m)
    big = plots.upsample(m, (30, 40))
    assert big.min() == m.min() and big.max() == m.max()
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        plots.upsample(np.zeros((2, 2, 2)), (4, 4))


# --------------------------------------------------------------------------- cam


def test_cam_alone_is_the_map_on_a_zero_to_max_scale(ev):
    fig = plots.cam(ev, 0, "SE_B")
    assert isinstance(fig, go.Figure) and [t.type for t in fig.data] == ["heatmap"]
    hm = fig.data[0]
    np.testing.assert_array_equal(np.asarray(hm.z), ev.cam["SE_B"][0])
    assert (hm.zmin, hm.zmax) == (0.0, 6.0)
    assert "Grad-CAM %{z" in hm.hovertemplate
    title = fig.layout.title.text
    assert "SE_B" in title and "cat.jpg" in title and "class 3" in title


def test_cam_over_the_crop_is_upsampled_to_its_size(ev):
    fig = plots.cam(ev, 1, "SE_B", image=crop(12), opacity=0.3)
    assert [t.type for t in fig.data] == ["image", "heatmap"]
    assert fig.data[0].source.startswith("data:image/png;base64,")
    hm = fig.data[1]
    z = np.asarray(hm.z)
    assert z.shape == (12, 12) and np.all(z == np.float32(0.7))  # constant map stays constant
    assert hm.opacity == 0.3 and (hm.zmin, hm.zmax) == (0.0, pytest.approx(0.7))
    z0 = np.asarray(plots.cam(ev, 0, "SE_B", image=crop(12)).data[1].z)
    np.testing.assert_array_equal(z0, plots.upsample(ev.cam["SE_B"][0], (12, 12)))


def test_cam_layercam_and_the_default_block(ev):
    fig = plots.cam(ev, 0, kind="layercam")
    assert "LayerCAM" in fig.layout.title.text and "SE_B" in fig.layout.title.text
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), ev.layercam["SE_B"][0])


def test_cam_of_an_all_zero_map_gets_a_usable_scale(ev):
    flat = Evidence(ev.target, ev.logits, ev.gates, ev.gate_grad,
                    {"SE_B": np.zeros((2, 2, 3), np.float32)})
    assert plots.cam(flat, 0, "SE_B").data[0].zmax == 1.0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(block="SE_A"), ValueError, r"no Grad-CAM of SE_A .*SE_B.*blocks=\['SE_A'\]"),
    (dict(block="SE_Z"), ValueError, r"no attention block 'SE_Z'.*SE_A, SE_B"),
    (dict(block="SE_B", kind="cam"), ValueError, "gradcam, layercam"),
    (dict(block="SE_B", opacity=1.5), ValueError, r"opacity must be in \[0, 1\]"),
    (dict(block="SE_B", image=np.zeros((4, 4), np.uint8)), ValueError, "uint8 crop"),
    (dict(i=2, block="SE_B"), IndexError, r"outside 0\.\.1"),
    (dict(i=True, block="SE_B"), TypeError, "integer"),
])
def test_cam_bad_arguments_say_what_to_do(ev, kwargs, error, match):
    i = kwargs.pop("i", 0)
    with pytest.raises(error, match=match):
        plots.cam(ev, i, **kwargs)


def test_cam_overlay_pixels_blend_the_inferno_table():
    image = crop(8)
    cam_map = np.array([[0.0, 2.0], [2.0, 2.0]], np.float32)
    out = plots.cam_overlay(image, np.full((2, 2), 5.0, np.float32), opacity=1.0)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert np.all(out == CAM_LUT[255])  # a constant map is its max everywhere
    np.testing.assert_array_equal(plots.cam_overlay(image, cam_map, opacity=0.0), image)
    half = plots.cam_overlay(image, np.zeros((2, 2), np.float32), opacity=0.5)
    np.testing.assert_array_equal(half, np.round(0.5 * image + 0.5 * CAM_LUT[0].astype(float))
                                  .astype(np.uint8))


# --------------------------------------------------------------------------- attribution


def test_attribution_scatter_holds_gate_gradient_and_product(ev):
    fig = plots.attribution(ev, 0, "SE_A", top=2)
    assert [t.type for t in fig.data] == ["scatter", "scatter"]
    every, top = fig.data
    g, d = ev.gates["SE_A"][0], ev.gate_grad["SE_A"][0]
    np.testing.assert_array_equal(np.asarray(every.x), g)
    np.testing.assert_allclose(np.asarray(every.y), g * d)
    data = np.asarray(every.customdata)
    np.testing.assert_array_equal(data[:, 0], np.arange(4))
    np.testing.assert_allclose(data[:, 1:], np.stack([g, d, g * d], 1))
    for word in ("channel %{customdata[0]", "gate %{customdata[1]", "gradient %{customdata[2]",
                 "attribution %{customdata[3]", "block SE_A"):
        assert word in every.hovertemplate
    # |attribution| = 1.0, 3.0, 0.1, 0.4: channels 1 then 0
    np.testing.assert_array_equal(np.asarray(top.customdata)[:, 0], [1, 0])
    assert list(top.text) == ["ch 1", "ch 0"] and top.name == "top 2 by |attribution|"
    assert top.mode == "markers+text" and top.hovertemplate == every.hovertemplate


def test_attribution_highlights_the_argmax_of_abs_attribution(ev):
    for i in range(2):
        a = ev.attribution("SE_B")[i]
        top = plots.attribution(ev, i, "SE_B", top=1).data[1]
        assert int(np.asarray(top.customdata)[0, 0]) == int(np.argmax(np.abs(a)))


def test_attribution_top_zero_and_top_beyond_channels(ev):
    assert len(plots.attribution(ev, 0, "SE_B", top=0).data) == 1
    assert len(plots.attribution(ev, 0, "SE_B", top=50).data[1].x) == 3
    assert "SE_B" in plots.attribution(ev, 1).layout.title.text  # default: deepest block
    with pytest.raises(ValueError, match="top"):
        plots.attribution(ev, 0, "SE_B", top=-1)
    with pytest.raises(ValueError, match="no attention block 'SE_Q'"):
        plots.attribution(ev, 0, "SE_Q")


def test_attribution_names_the_class(ev):
    fig = plots.attribution(ev, 0, "SE_A", labels=[f"label{k}" for k in range(K)])
    assert "label3" in fig.layout.title.text


# --------------------------------------------------------------------------- heatmap


def test_attribution_heatmap_rows_and_diverging_scale(ev):
    fig = plots.attribution_heatmap(ev, 0)
    assert [t.name for t in fig.data] == ["SE_A", "SE_B"]
    for t in fig.data:
        np.testing.assert_allclose(np.asarray(t.z)[0], ev.attribution(t.name)[0])
        assert "attribution %{z" in t.hovertemplate
    axis = fig.layout.coloraxis
    assert axis.cmid == 0.0 and axis.cmax == -axis.cmin == pytest.approx(3.0)  # max |a|
    assert axis.colorscale[0][1] != plots.gate_heatmap({"b": np.ones(2)}).layout \
        .coloraxis.colorscale[0][1]  # not the gate scale
    assert axis.colorbar.title.text == "attribution"


def test_attribution_heatmap_sorted_keeps_the_channel_in_hover(ev):
    fig = plots.attribution_heatmap(ev, 0, order="sorted")
    row = fig.data[0]
    np.testing.assert_array_equal(np.asarray(row.customdata)[0], [0, 3, 2, 1])
    np.testing.assert_allclose(np.asarray(row.z)[0], np.sort(ev.attribution("SE_A")[0])[::-1])


def test_gate_heatmap_default_is_unchanged():
    fig = plots.gate_heatmap({"b": np.array([0.2, 0.4], np.float32)})
    axis = fig.layout.coloraxis
    assert (axis.cmin, axis.cmax, axis.cmid) == (0.0, 1.0, None)
    assert fig.data[0].hovertemplate == \
        "block b<br>channel %{x}<br>gate %{z:.3f}<extra></extra>"
    assert fig.layout.title.text == "SE gates per block"


# --------------------------------------------------------------------------- deletion


def curve(order: str, prob: list[float], block: str = "SE_B") -> DeletionCurve:
    k = np.arange(len(prob))
    frac = k / (len(prob) - 1)
    p = np.asarray(prob, np.float32)
    return DeletionCurve(block, order, 3, k, frac, p, float(np.trapezoid(p, frac)))


def test_deletion_figure_one_line_per_order_with_its_area():
    curves = [curve("attribution", [0.8, 0.2, 0.0]), curve("gate", [0.8, 0.5, 0.1]),
              curve("random", [0.8, 0.7, 0.6])]
    fig = plots.deletion_figure(curves)
    assert [t.type for t in fig.data] == ["scatter"] * 3
    assert [t.name for t in fig.data] == ["attribution (area 0.300)", "gate (area 0.475)",
                                          "random (area 0.700)"]
    for t, c in zip(fig.data, curves):
        np.testing.assert_allclose(np.asarray(t.x), c.fraction)
        np.testing.assert_allclose(np.asarray(t.y), c.prob)
        np.testing.assert_array_equal(np.asarray(t.customdata), c.k)
        assert "gates removed" in t.hovertemplate and f"order {c.order}" in t.hovertemplate
    assert "SE_B" in fig.layout.title.text and "class 3" in fig.layout.title.text
    assert len({t.line.color for t in fig.data}) == 3


def test_deletion_figure_names_blocks_when_several_and_refuses_none():
    fig = plots.deletion_figure([curve("gate", [1, 0]), curve("gate", [1, 0], block="all")])
    assert [t.name for t in fig.data] == ["SE_B gate (area 0.500)", "all gate (area 0.500)"]
    with pytest.raises(ValueError, match="no deletion curves"):
        plots.deletion_figure([])
