"""Known answers for se_viz.analysis (pure numpy; the tiny model only for the end-to-end check)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from se_viz import analysis as A

from .conftest import batch

NAMES = ("SE_2_1", "SE_2_2", "SE_3_1")


def gates_of(sizes=(4, 6, 3), seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.random(c).astype(np.float32) for n, c in zip(NAMES, sizes)}


unit_vectors = arrays(np.float64, st.integers(2, 40), elements=st.floats(0, 1))


# ----------------------------------------------------------------- layering


def test_analysis_and_figures_do_not_import_paddle():
    code = ("import sys, se_viz.analysis, se_viz.plots, se_viz.plots.dataset, "
            "se_viz.analysis.dataset_stats; "
            "bad = [m for m in ('paddle', 'streamlit', 'se_viz.engine') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# ----------------------------------------------------------------- gate_stats


def test_entropy_of_equal_gates_is_one_and_of_one_hot_is_small():
    assert A.gate_stats(np.full(256, 0.3)).entropy == pytest.approx(1.0)
    one_hot = np.full(256, 1e-6)
    one_hot[7] = 1.0
    assert A.gate_stats(one_hot).entropy < 0.01
    exact = np.zeros(256)
    exact[3] = 0.9
    assert A.gate_stats(exact).entropy == 0.0


def test_entropy_known_value_for_two_levels():
    g = np.array([1.0, 1.0, 0.0, 0.0])  # p = (1/2, 1/2, 0, 0): H = log 2, / log 4 = 0.5
    assert A.normalized_entropy(g) == pytest.approx(0.5)


def test_gate_stats_known_answers():
    g = np.array([0.05, 0.2, 0.5, 0.95, 0.99])
    s = A.gate_stats(g)
    assert s.mean == pytest.approx(g.mean())
    assert s.std == pytest.approx(g.std())
    assert s.median == pytest.approx(0.5)
    assert s.frac_low == pytest.approx(1 / 5)
    assert s.frac_high == pytest.approx(2 / 5)


def test_gate_stats_rejects_empty_and_2d():
    with pytest.raises(ValueError, match="1-D"):
        A.gate_stats(np.array([]))
    with pytest.raises(ValueError, match="1-D"):
        A.gate_stats(np.ones((2, 3)))


def test_stats_table_columns_in_block_order():
    gates = gates_of()
    table = A.stats_table(gates)
    assert list(table["block"]) == list(NAMES)
    assert set(table) == {"block", *A.STAT_FIELDS}
    for b, name in enumerate(NAMES):
        assert table["mean"][b] == pytest.approx(float(gates[name].mean()))
        assert table["entropy"][b] == pytest.approx(A.gate_stats(gates[name]).entropy)


# ----------------------------------------------------------------- orders


@settings(max_examples=50, deadline=None)
@given(unit_vectors, st.sampled_from(["natural", "sorted", "reference"]))
def test_channel_orders_are_permutations(g, mode):
    ref = g[::-1].copy()
    perm = A.channel_order(g, mode, reference=ref)
    assert np.array_equal(np.sort(perm), np.arange(g.size))
    key = {"natural": None, "sorted": g, "reference": ref}[mode]
    if key is not None:
        assert np.all(np.diff(key[perm]) <= 0)  # descending


def test_channel_order_known_answers_and_stable_ties():
    g = np.array([0.2, 0.9, 0.2, 0.5])
    assert A.channel_order(g).tolist() == [0, 1, 2, 3]
    assert A.channel_order(g, "sorted").tolist() == [1, 3, 0, 2]
    assert A.channel_order(g, "reference", np.array([4, 3, 2, 1.0])).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="reference"):
        A.channel_order(g, "reference")
    with pytest.raises(ValueError, match="unknown channel order"):
        A.channel_order(g, "random")


def test_top_channels():
    g = np.array([0.1, 0.8, 0.8, 0.3, 0.0])
    assert A.top_channels(g, 2).tolist() == [1, 2]
    assert A.top_channels(g, 2, largest=False).tolist() == [4, 0]
    assert A.top_channels(g, 99).size == 5


def test_pad_blocks_nan_layout_and_orders():
    gates = gates_of((4, 6, 3))
    z, names = A.pad_blocks(gates)
    assert z.dtype == np.float32 and z.shape == (3, 6) and names == list(NAMES)
    assert np.isnan(z[0, 4:]).all() and not np.isnan(z[0, :4]).any()
    assert not np.isnan(z[1]).any()
    assert np.isnan(z[2, 3:]).all()
    np.testing.assert_array_equal(z[2, :3], gates["SE_3_1"])
    order = A.channel_order(gates["SE_2_2"], "sorted")
    z2, _ = A.pad_blocks(gates, {"SE_2_2": order})
    np.testing.assert_array_equal(z2[1], gates["SE_2_2"][order])
    np.testing.assert_array_equal(z2[0, :4], z[0, :4])
    with pytest.raises(ValueError, match="permutation"):
        A.pad_blocks(gates, {"SE_2_1": np.array([0, 0, 1, 2])})


# ----------------------------------------------------------------- comparisons


def test_cosine_known_values():
    assert A.cosine(np.array([1.0, 0]), np.array([0, 2.0])) == pytest.approx(0.0)
    assert A.cosine(np.array([1.0, 2]), np.array([2.0, 4])) == pytest.approx(1.0)
    assert A.cosine(np.array([1.0, 1]), np.array([1.0, 0])) == pytest.approx(2 ** -0.5)
    assert A.cosine(np.zeros(3), np.ones(3)) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        A.cosine(np.ones(3), np.ones(4))


def test_js_distance_known_values():
    a = np.array([0.2, 0.5, 0.9])
    assert A.js_distance(a, a) == pytest.approx(0.0, abs=1e-7)
    assert A.js_distance(a, 3 * a) == pytest.approx(0.0, abs=1e-7)  # scale-free
    assert A.js_distance(np.array([1.0, 0, 0]), np.array([0, 0.5, 0.5])) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2): JSD = 1 - 0.75 log2(4/3) - 0.25 log2(2)... computed directly
    p, q = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    m = (p + q) / 2
    kl = lambda x: sum(xi * np.log2(xi / mi) for xi, mi in zip(x, m) if xi > 0)  # noqa: E731
    assert A.js_distance(p, q) == pytest.approx(np.sqrt(0.5 * kl(p) + 0.5 * kl(q)))
    assert np.isfinite(A.js_distance(np.zeros(3), np.ones(3)))  # all-zero = uniform
    assert A.js_distance(np.zeros(3), np.ones(3)) == pytest.approx(0.0, abs=1e-7)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30).flatmap(lambda n: st.tuples(
    arrays(np.float64, n, elements=st.floats(0, 1)),
    arrays(np.float64, n, elements=st.floats(0, 1)))))
def test_js_distance_symmetric_and_bounded(pair):
    a, b = pair
    d = A.js_distance(a, b)
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(A.js_distance(b, a), abs=1e-12)


def test_topk_overlap():
    a = np.array([0.9, 0.8, 0.1, 0.0])
    b = np.array([0.9, 0.0, 0.8, 0.1])
    assert A.topk_overlap(a, b, 2) == pytest.approx(0.5)
    assert A.topk_overlap(a, a, 3) == 1.0
    assert A.topk_overlap(a, -a, 2) == 0.0
    assert A.topk_overlap(a, b, 10) == 1.0  # k clipped to C
    with pytest.raises(ValueError, match="k must be"):
        A.topk_overlap(a, b, 0)


def test_compare_images_per_block():
    a, b = gates_of(seed=0), gates_of(seed=1)
    table = A.compare_images(a, b, k=2)
    assert list(table["block"]) == list(NAMES)
    for i, n in enumerate(NAMES):
        assert table["cosine"][i] == pytest.approx(A.cosine(a[n], b[n]))
        assert table["js"][i] == pytest.approx(A.js_distance(a[n], b[n]))
        assert table["topk_overlap"][i] == pytest.approx(A.topk_overlap(a[n], b[n], 2))
        assert table["mean_abs_diff"][i] == pytest.approx(np.abs(a[n] - b[n]).mean(), rel=1e-6)
    same = A.compare_images(a, a)
    np.testing.assert_allclose(same["cosine"], 1.0)
    np.testing.assert_allclose(same["js"], 0.0, atol=1e-7)
    np.testing.assert_allclose(same["mean_abs_diff"], 0.0)
    with pytest.raises(ValueError, match="different blocks"):
        A.compare_images(a, {"SE_2_1": a["SE_2_1"]})


def test_block_similarity():
    rng = np.random.default_rng(0)
    gates = {"low": rng.uniform(0, 0.05, (3, 8)), "low2": rng.uniform(0, 0.05, (2, 16)),
             "high": rng.uniform(0.95, 1.0, (3, 4))}
    sim = A.block_similarity(gates)
    assert sim.shape == (3, 3)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(sim, sim.T)
    assert sim[0, 1] == pytest.approx(1.0)  # same single bin, different C
    assert sim[0, 2] == pytest.approx(0.0)  # disjoint bins


def test_class_specificity_zero_and_one():
    labels = np.array([0, 0, 1, 1, 2])
    same = {"b": np.tile(np.linspace(0, 1, 6), (5, 1))}
    assert A.class_specificity(same, labels)[0] == 0.0
    per_class = np.random.default_rng(0).random((3, 6))
    pure = {"b": per_class[labels]}  # zero within-class variance
    assert A.class_specificity(pure, labels)[0] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noise = {"b": rng.random((400, 6))}
    assert A.class_specificity(noise, rng.integers(0, 4, 400))[0] < 0.05


def test_class_specificity_matches_manual_formula():
    rng = np.random.default_rng(2)
    g, labels = rng.random((9, 5)), np.array([0, 1, 2] * 3)
    expected = []
    for c in range(5):
        x = g[:, c]
        between = sum((labels == k).mean() * (x[labels == k].mean() - x.mean()) ** 2
                      for k in range(3))
        expected.append(between / x.var())
    assert A.class_specificity({"b": g}, labels)[0] == pytest.approx(np.mean(expected))
    with pytest.raises(ValueError, match="labels"):
        A.class_specificity({"b": g}, labels[:4])


def test_squeeze_vs_gate_rule():
    s = np.array([10.0, 0.1, 0.2, 0.3, 0.1, 0.2, 0.1, 0.3, 0.2, 0.1])
    g = np.array([0.1, 0.99, 0.5, 0.6, 0.5, 0.5, 0.5, 0.6, 0.5, 0.5])
    out = A.squeeze_vs_gate(s, g, z=1.0)
    assert out["strong_suppressed"].tolist() == [0]  # loudest channel, gate below median
    assert out["weak_boosted"].tolist() == [1]  # quiet channel, top-decile gate
    assert out["squeeze_high"] == pytest.approx(s.mean() + s.std())
    assert out["gate_q90"] == pytest.approx(np.quantile(g, 0.9))


# ----------------------------------------------------------------- reduction ratio


def _params(c=8, h=4, seed=0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(w1=rng.normal(size=(c, h)), b1=rng.normal(size=h),
                           w2=rng.normal(size=(h, c)), b2=rng.normal(size=c))


def test_hidden_unit_importance_matches_loop():
    p, y = _params(), np.random.default_rng(1).random((5, 8))
    expected = np.zeros(4)
    for j in range(4):
        for n in range(5):
            expected[j] += max(0.0, sum(y[n, c] * p.w1[c, j] for c in range(8)) + p.b1[j])
        expected[j] = expected[j] / 5 * np.sqrt(sum(p.w2[j, c] ** 2 for c in range(8)))
    np.testing.assert_allclose(A.hidden_unit_importance(p, y), expected, rtol=1e-10)


def test_emulation_masks_keep_most_important_units():
    params = {"a": _params(64, 4, 0), "b": _params(32, 2, 1)}  # r = 16
    rng = np.random.default_rng(3)
    squeeze = {"a": rng.random((3, 64)), "b": rng.random((3, 32))}
    masks = A.emulation_masks(params, squeeze, 16, 32)
    assert masks["a"].dtype == np.float32 and masks["a"].shape == (4,)
    assert masks["a"].sum() == 2 and masks["b"].sum() == 1  # max(1, int(C / 32))
    best = np.argsort(-A.hidden_unit_importance(params["a"], squeeze["a"]))[:2]
    assert set(np.flatnonzero(masks["a"])) == set(best)
    assert A.emulation_masks(params, squeeze, 16, 64)["b"].sum() == 1  # at least one
    for r_to in (16, 4):  # same r keeps all; a smaller r cannot add units, so keeps all
        same = A.emulation_masks(params, squeeze, 16, r_to)
        assert all(m.sum() == m.size for m in same.values())
    with pytest.raises(ValueError, match="hidden units"):
        A.emulation_masks(params, squeeze, 8, 32)
    with pytest.raises(ValueError, match="squeeze"):
        A.emulation_masks(params, {"a": squeeze["a"]}, 16, 32)


def test_emulation_masks_of_blocks_with_their_own_widths():
    """reduction_from None: widths from another rule (EfficientNet, RegNet) are not checked;
    each block keeps min(h, int(C / r)) units, ranked with its own activation."""
    params = {"a": _params(64, 6, 0), "b": _params(32, 5, 1)}  # not int(C / r) for one r
    rng = np.random.default_rng(3)
    squeeze = {"a": rng.normal(size=(3, 64)), "b": rng.normal(size=(3, 32))}
    masks = A.emulation_masks(params, squeeze, None, 16, {"a": "silu"})
    assert masks["a"].sum() == 4 and masks["b"].sum() == 2
    best = np.argsort(-A.hidden_unit_importance(params["a"], squeeze["a"], "silu"),
                      kind="stable")[:4]
    assert set(np.flatnonzero(masks["a"])) == set(best)


def test_one_numpy_se_forward_for_every_gate_and_activation():
    from se_viz.analysis.excitation import excitation, se_forward
    from se_viz.analysis.se_steps import steps
    from se_viz.blocks import HARD_SIGMOID
    from se_viz.results import SEParameters

    p, z = _params(8, 4, 0), np.random.default_rng(2).normal(size=(5, 8))
    w1, b1, w2, b2 = (np.asarray(x, np.float64) for x in (p.w1, p.b1, p.w2, p.b2))
    a = z @ w1 + b1
    for act, f in (("relu", np.maximum(a, 0)), ("relu6", np.clip(a, 0, 6)),
                   ("silu", a / (1 + np.exp(-a)))):
        x = f @ w2 + b2
        np.testing.assert_allclose(se_forward(p, z, act=act), 1 / (1 + np.exp(-x)), rtol=1e-12)
        np.testing.assert_allclose(se_forward(p, z, HARD_SIGMOID, act),
                                   np.clip(x / 6 + 0.5, 0, 1), rtol=1e-12)
        np.testing.assert_allclose(excitation(p, z, act=act).hidden, f, rtol=1e-12)
    p = SEParameters(p.w1, p.b1, p.w2, p.b2)
    one = steps(p, z[0], se_forward(p, z[:1], HARD_SIGMOID)[0], HARD_SIGMOID)
    assert one.mismatch == 0.0  # the view's recomputation is the same forward
    with pytest.raises(ValueError, match="activation"):
        se_forward(p, z, act="gelu")


def test_figure6_blocks_are_the_papers_for_its_network_else_one_per_stage():
    from se_viz.blocks import AttentionBlock

    def net(depths):
        return tuple(AttentionBlock(f"SE_{s}_{i}", f"s{s}.{i}", f"s{s}", s, i, 8, 2)
                     for s, d in depths for i in range(1, d + 1))

    paper = net([(2, 3), (3, 4), (4, 6), (5, 3)])
    assert A.figure6_blocks(paper, "se_resnet50_vd") == A.PAPER_FIG6_BLOCKS
    assert A.figure6_blocks(paper, "regnety_032") == ("SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1",
                                                      "SE_5_3")
    mobile = net([(1, 1), (2, 2), (3, 3), (4, 1), (5, 2), (6, 3), (7, 1)])
    assert A.figure6_blocks(mobile, "efficientnet_b0") == ("SE_2_2", "SE_3_3", "SE_4_1",
                                                           "SE_5_2", "SE_6_3", "SE_7_1")


def test_emulation_on_tiny_model_end_to_end(tiny_vd):
    """Masks from real squeeze values plug into hooks.Intervention and change the gates."""
    from se_viz.engine.capture import capture
    from se_viz.results import Intervention
    from se_viz.engine.weights import se_parameters

    x = batch(2)
    full = capture(tiny_vd, x)
    params = se_parameters(tiny_vd)
    masks = A.emulation_masks(params, full.squeeze, tiny_vd.info.reduction, 32)
    for name, mask in masks.items():  # width 8: C = 32..256, h = 2..16
        c = params[name].w1.shape[0]
        assert mask.sum() == min(params[name].w1.shape[1], max(1, c // 32))
    emulated = capture(tiny_vd, x, intervention=Intervention(hidden_masks=masks))
    assert any(not np.allclose(emulated.gates[n], full.gates[n]) for n in masks)
    keep_all = A.emulation_masks(params, full.squeeze, 16, 16)
    same = capture(tiny_vd, x, intervention=Intervention(hidden_masks=keep_all))
    for n in full.gates:
        np.testing.assert_allclose(same.gates[n], full.gates[n], rtol=1e-6)


def test_topk_change():
    before = np.array([0.5, 0.3, 0.1, 0.06, 0.04])
    after = np.array([0.1, 0.3, 0.5, 0.06, 0.04])
    out = A.topk_change(before, after, k=2)
    assert out["before_idx"].tolist() == [0, 1] and out["after_idx"].tolist() == [2, 1]
    np.testing.assert_allclose(out["before_prob"], [0.5, 0.3])
    np.testing.assert_allclose(out["after_prob"], [0.5, 0.3])
    np.testing.assert_allclose(out["before_prob_after"], [0.1, 0.3])
    assert out["kept"] == 1 and out["top1_changed"]
    assert A.topk_change(before, before, 3)["kept"] == 3


# ----------------------------------------------------------------- paper facts


def test_paper_tables_match_reference():
    rows = {r.reduction: r for r in A.PAPER_REDUCTION_TABLE}
    assert rows[16] == (16, 22.28, 6.03, 28.1)
    assert rows["ResNet-50"].top1_err == 23.30 and rows["ResNet-50"].params_m == 25.6
    assert [r.reduction for r in A.PAPER_REDUCTION_TABLE[:-1]] == [2, 4, 8, 16, 32]
    assert "TPAMI" in A.PAPER_CITATION
    assert len(A.PAPER_FIG6_BLOCKS) == 6 and "SE_5_2" in A.PAPER_FIG6_FINDING


def test_paper_params_follow_two_over_r_rule():
    """The paper's parameter column is ResNet-50 + (2/r) * sum(blocks * C^2), to 0.1 M."""
    extra = sum(n * c * c for n, c in zip((3, 4, 6, 3), (256, 512, 1024, 2048)))
    for row in A.PAPER_REDUCTION_TABLE[:-1]:
        assert 25.6 + 2 / row.reduction * extra / 1e6 == pytest.approx(row.params_m, abs=0.15)
