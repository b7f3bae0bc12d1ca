"""The notebook API (se_viz.plots.heatmap/block_profile/feature_maps/compare, Capture's
_repr_html_): every figure's traces hold the capture's own numbers, checked against the
Capture's arrays, never pixels."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import pytest

from se_viz import analysis, plots
from se_viz.maths import normalized_entropy
from se_viz.results import Capture, FeatureMaps

from .conftest import batch


@pytest.fixture(scope="module")
def cap(tiny_vd) -> Capture:
    from se_viz.engine.capture import capture

    return capture(tiny_vd, batch(3, seed=7), features=["SE_3_2", "SE_5_3"], engine="eager",
                   names=["cat.jpg", "dog.jpg", "noise"])


def _rows(fig: go.Figure) -> dict[str, np.ndarray]:
    """Block name -> the values its one-row heatmap trace holds."""
    return {t.name: np.asarray(t.z, dtype=np.float32)[0] for t in fig.data}


# --------------------------------------------------------------------------- heatmap


@pytest.mark.parametrize("index", [0, 2])
def test_heatmap_rows_are_the_gates(cap, index):
    fig = plots.heatmap(cap, index)
    assert isinstance(fig, go.Figure)
    assert [t.type for t in fig.data] == ["heatmap"] * len(cap.gates)
    rows = _rows(fig)
    assert list(rows) == cap.block_names
    for block, g in cap.gates.items():
        np.testing.assert_array_equal(rows[block], g[index])
    assert cap.names[index] in fig.layout.title.text
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)


def test_heatmap_with_the_networks_blocks_shows_paths_and_stages(cap, tiny_vd):
    from se_viz.blocks import stages

    blocks = tiny_vd.info.blocks
    fig = plots.heatmap(cap, 0, blocks=blocks)
    assert len(fig.layout.shapes) == len(stages(blocks)) - 1  # a line between stages
    for trace, b in zip(fig.data, blocks):
        assert f"block {b.name} ({b.path}, {b.stage_label})" in trace.hovertemplate
    assert len(plots.compare(cap, 0, 1, blocks).layout.shapes) == len(stages(blocks)) - 1
    assert not plots.heatmap(cap, 0).layout.shapes  # no description, no stage lines


def test_heatmap_sorted_keeps_the_channel_in_hover(cap):
    fig = plots.heatmap(cap, 1, order="sorted")
    for trace in fig.data:
        g = cap.gates[trace.name][1]
        z = np.asarray(trace.z, dtype=np.float32)[0]
        channels = np.asarray(trace.customdata)[0]
        np.testing.assert_array_equal(z, np.sort(g)[::-1])      # largest first
        np.testing.assert_array_equal(g[channels], z)           # hover names the real channel
        assert "%{customdata}" in trace.hovertemplate


def test_heatmap_refuses_bad_arguments(cap):
    with pytest.raises(ValueError, match="natural, sorted"):
        plots.heatmap(cap, 0, order="random")
    with pytest.raises(IndexError, match="outside 0..2"):
        plots.heatmap(cap, 3)
    with pytest.raises(TypeError, match="must be an integer"):
        plots.compare(cap, 0, 1.0)
    assert len(plots.heatmap(cap, np.int64(2)).data) == len(cap.gates)


# --------------------------------------------------------------------------- block_profile


def test_block_profile_lines_are_the_statistics(cap):
    fig = plots.block_profile(cap, 2)
    table = analysis.stats_table({b: g[2] for b, g in cap.gates.items()})
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"mean", "std", "entropy", "frac_low", "frac_high"}
    for stat, trace in by_name.items():
        assert list(trace.x) == cap.block_names
        np.testing.assert_allclose(np.asarray(trace.y, np.float64), table[stat], atol=1e-6)
    # one statistic recomputed by hand: the mean gate of each block
    np.testing.assert_allclose(np.asarray(by_name["mean"].y, np.float64),
                               [g[2].mean() for g in cap.gates.values()], atol=1e-6)
    assert "noise" in fig.layout.title.text


# --------------------------------------------------------------------------- feature_maps


def _tiles(fig: go.Figure, k: int, h: int, w: int) -> np.ndarray:
    """The (2, k, h, w) maps tiled into maps_mosaic's one NaN-gapped heatmap."""
    z = np.asarray(fig.data[0].z, dtype=np.float32)
    gap = max(1, h // 10)
    return np.stack([np.stack([z[r * (h + gap):r * (h + gap) + h, j * (w + gap):j * (w + gap) + w]
                               for j in range(k)]) for r in range(2)])


@pytest.mark.parametrize("largest", [True, False])
def test_feature_maps_hold_the_top_channels_before_and_after(cap, largest):
    block, index, k = "SE_3_2", 1, 4
    fig = plots.feature_maps(cap, index, block, k=k, largest=largest)
    g = cap.gates[block][index]
    want = np.argsort(-g if largest else g, kind="stable")[:k]
    before = cap.features[block].before[index][want]
    after = cap.features[block].after[index][want]
    tiles = _tiles(fig, k, *before.shape[1:])
    np.testing.assert_array_equal(tiles[0], before)
    np.testing.assert_array_equal(tiles[1], after)
    np.testing.assert_allclose(after, before * g[want][:, None, None], rtol=1e-5, atol=1e-6)
    notes = [a.text for a in fig.layout.annotations]
    assert notes == [f"ch {c} · gate {g[c]:.2f}" for c in want]
    assert ("largest" if largest else "smallest") in fig.layout.title.text


def test_feature_maps_default_block_and_errors(cap):
    fig = plots.feature_maps(cap, 0, k=2)
    assert "SE_3_2" in fig.layout.title.text  # the first block with maps
    with pytest.raises(ValueError, match="features=\\['SE_4_6'\\]"):
        plots.feature_maps(cap, 0, "SE_4_6")
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k .* must be an integer >= 1"):
            plots.feature_maps(cap, 0, "SE_3_2", k=k)
    channels = cap.gates["SE_3_2"].shape[1]  # k larger than C shows every channel
    assert len(plots.feature_maps(cap, 0, "SE_3_2", k=10_000).layout.annotations) == channels
    bare = Capture(cap.logits, cap.gates)
    with pytest.raises(ValueError, match="holds no feature maps"):
        plots.feature_maps(bare, 0)


# --------------------------------------------------------------------------- compare


def test_compare_rows_are_gate_differences(cap):
    fig = plots.compare(cap, 0, 2)
    rows = _rows(fig)
    assert list(rows) == cap.block_names
    for block, g in cap.gates.items():
        np.testing.assert_allclose(rows[block], g[2] - g[0], atol=1e-7)
    assert fig.layout.coloraxis.cmid == 0.0
    assert "noise - cat.jpg" in fig.layout.title.text
    # the same image against itself differs nowhere
    assert all(np.all(z == 0) for z in _rows(plots.compare(cap, 1, 1)).values())


def test_functions_work_without_names(cap):
    plain = Capture(cap.logits, cap.gates, cap.squeeze, cap.features)
    assert "image 1" in plots.heatmap(plain, 1).layout.title.text
    assert "image 1 - image 0" in plots.compare(plain, 0, 1).layout.title.text


# --------------------------------------------------------------------------- _repr_html_


def test_repr_html_summarises_each_image_and_block(cap):
    text = cap._repr_html_()
    idx, prob = cap.top_k(1)
    assert f"{len(cap)} image(s), {len(cap.gates)} SE blocks, 10 classes" in text
    for i, name in enumerate(cap.names):
        assert f"<li>{name}: <b>class {int(idx[i, 0])}</b> ({float(prob[i, 0]):.1%})</li>" in text
    for block, g in cap.gates.items():
        ent = float(np.mean(normalized_entropy(g)))
        assert (f"<tr><td>{block}</td><td>{g.shape[1]}</td><td>{float(g.mean()):.3f}</td>"
                f"<td>{ent:.3f}</td><td>{float((g > 0.9).mean()):.1%}</td></tr>") in text
    assert "feature maps for SE_3_2, SE_5_3" in text
    assert "<script" not in text and "plotly" not in text.lower()  # no heavy figure


def test_repr_html_escapes_names(cap):
    one = cap.select(0).with_names(["<img src=x onerror=alert(1)>"])
    text = one._repr_html_()
    assert "<img" not in text and html.escape("<img src=x onerror=alert(1)>") in text


def test_repr_html_imagenet_labels():
    rng = np.random.default_rng(0)
    logits = np.zeros((1, 1000), np.float32)
    logits[0, 207] = 10.0  # golden retriever
    gates = {"SE_2_1": rng.random((1, 4)).astype(np.float32)}
    text = Capture(logits, gates, features={"SE_2_1": FeatureMaps(
        np.zeros((1, 4, 2, 2), np.float32), np.zeros((1, 4, 2, 2), np.float32))})._repr_html_()
    from se_viz.labels import label_for

    assert f"<b>{html.escape(label_for(207))}</b>" in text and "image 0" in text
