"""Class evidence (`se_viz.explain`, `se_viz.deletion`) against known answers: finite
differences through the intervention path, Grad-CAM recomputed by hand from the block's
output and its gradient, batches against single images, deletion against interventions."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import paddle
import pytest

import se_viz
from se_viz import Intervention

from .conftest import batch, make_tiny
from .reference.draw import fixture_state, read_fixture

REFERENCE = Path(__file__).parent / "reference"


def _hook_count(model) -> int:
    return sum(len(layer._forward_pre_hooks) + len(layer._forward_post_hooks)
               for layer in model.sublayers(include_self=True))


@pytest.fixture(scope="module")
def tiny():
    return make_tiny(seed=3)


@pytest.fixture(scope="module")
def regnet():
    """RegNetY-800MF with the live reference weights of tests/reference (its gates depend
    on the image; seeded untrained networks' often do not)."""
    from se_viz.engine.networks import build
    from se_viz.engine.weights import load_arrays

    model = build("regnety_008")
    load_arrays(model, fixture_state(read_fixture(REFERENCE / "regnety_008.npz")), "regnety")
    return model


def _logit(model, x, target, block, gates):
    """The target logit with ``block``'s gates replaced (float64 all the way)."""
    from se_viz.engine.hooks import GateRecorder

    with paddle.no_grad(), GateRecorder(model, intervention=Intervention(gates={block: gates}),
                                        tensors=True):
        logits = model(paddle.to_tensor(x.astype(np.float64)))
    return float(logits.numpy()[0, target])


@pytest.mark.parametrize("family", ["tiny", "regnet"])
def test_gate_gradients_equal_central_finite_differences(family, tiny, regnet):
    """In float64 (a copy of the network cast), so that a small step measures the slope
    rather than float32 rounding: several channels of an early and a late block."""
    import copy

    model = copy.deepcopy(tiny if family == "tiny" else regnet)
    model.to(dtype="float64")
    x = batch(1, 32 if family == "tiny" else 64, seed=5)
    ev = se_viz.explain(model, x)
    t = int(ev.target[0])
    names = [b.name for b in model.info.blocks]
    for block in (names[1], names[-2]):
        g = np.asarray(_gates64(model, x, block), np.float64)
        grad = ev.gate_grad[block][0]
        scale = float(np.abs(grad).max())
        assert scale > 0, block
        for c in np.argsort(-np.abs(grad))[:3].tolist() + [0]:
            eps = 1e-5
            up, down = g.copy(), g.copy()
            up[c] += eps
            down[c] -= eps
            fd = (_logit(model, x, t, block, up) - _logit(model, x, t, block, down)) / (2 * eps)
            assert fd == pytest.approx(float(grad[c]), rel=1e-4, abs=1e-4 * scale), (block, c)


def _gates64(model, x, block):
    """The block's gates in float64, read with a hook of this test (the capture's copies are
    float32, too coarse for a 1e-5 step)."""
    layer = dict(model.named_sublayers())[[b.path for b in model.info.blocks
                                           if b.name == block][0]].gate
    kept = []
    handle = layer.register_forward_post_hook(lambda _l, _i, out: kept.append(out.numpy()))
    try:
        with paddle.no_grad():
            model(paddle.to_tensor(x.astype(np.float64)))
    finally:
        handle.remove()
    return kept[0].reshape(-1)


def test_grad_cam_equals_a_hand_computation_at_the_block_output(regnet):
    """Hooks in the test: the network block's output A and d logit / d A, then
    ReLU(sum_c mean(dA) A) and ReLU(sum_c ReLU(dA) A)."""
    x = batch(2, 64, seed=7)
    block = regnet.info.blocks[-4]
    layer = dict(regnet.named_sublayers())[block.block_path]
    kept = []
    handle = layer.register_forward_post_hook(lambda _l, _i, out: kept.append(out))
    try:
        logits = regnet(paddle.to_tensor(x))
    finally:
        handle.remove()
    target = np.array([3, 17])
    score = logits[0, 3] + logits[1, 17]
    (grad,) = paddle.grad([score], [kept[0]])
    a, da = kept[0].numpy(), grad.numpy()
    cam = np.maximum((da.mean(axis=(2, 3))[:, :, None, None] * a).sum(axis=1), 0)
    layer_cam = np.maximum((np.maximum(da, 0) * a).sum(axis=1), 0)
    ev = se_viz.explain(regnet, x, target=target.tolist(), blocks=[block.name])
    assert list(ev.cam) == [block.name] and list(ev.layercam) == [block.name]
    assert ev.cam[block.name].shape == a.shape[:1] + a.shape[2:]
    np.testing.assert_allclose(ev.cam[block.name], cam, rtol=1e-4, atol=1e-5 * cam.max())
    np.testing.assert_allclose(ev.layercam[block.name], layer_cam, rtol=1e-4,
                               atol=1e-5 * layer_cam.max())
    assert cam.max() > 0 and len(ev.gate_grad) == len(regnet.info.blocks)


def test_a_batch_equals_its_images_one_by_one_and_none_means_top1(tiny):
    x = batch(3, 32, seed=2)
    whole = se_viz.explain(tiny, x, batch_size=2)
    top1 = np.argmax(se_viz.capture(tiny, x, engine="eager").logits, axis=1)
    np.testing.assert_array_equal(whole.target, top1)
    explicit = se_viz.explain(tiny, x, target=top1.tolist())
    for i in range(3):
        one = se_viz.explain(tiny, x[i:i + 1])
        for b in whole.gates:
            np.testing.assert_allclose(one.gate_grad[b][0], whole.gate_grad[b][i], atol=1e-6)
            np.testing.assert_allclose(one.cam[b][0], whole.cam[b][i], atol=1e-6)
            np.testing.assert_allclose(explicit.gate_grad[b][i], whole.gate_grad[b][i], atol=1e-6)
    assert set(whole.attributions) == set(whole.gates)
    b = whole.block_names[5]
    np.testing.assert_allclose(whole.attribution(b), whole.gates[b] * whole.gate_grad[b])


def test_bad_targets_say_the_valid_range(tiny):
    x = batch(2, 32)
    with pytest.raises(ValueError, match=r"10 classes, 0 \.\. 9"):
        se_viz.explain(tiny, x, target=10)
    with pytest.raises(ValueError, match=r"one class index per image \(2 integers\)"):
        se_viz.explain(tiny, x, target=[1, 2, 3])
    with pytest.raises(ValueError, match="unknown block"):
        se_viz.explain(tiny, x, blocks=["SE_9_9"])
    assert _hook_count(tiny) == 0


def test_no_hook_or_gradient_state_is_left_and_threads_agree(tiny):
    x = batch(2, 32, seed=4)
    before = se_viz.capture(tiny, x, engine="eager")
    ref = se_viz.explain(tiny, x)
    results = [None] * 4

    def run(i):
        results[i] = se_viz.explain(tiny, x)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        for b in ref.gates:
            np.testing.assert_array_equal(got.gate_grad[b], ref.gate_grad[b])
    assert _hook_count(tiny) == 0 and not tiny.training
    assert all(p.grad is None for p in tiny.parameters())
    after = se_viz.capture(tiny, x, engine="eager")
    np.testing.assert_array_equal(after.logits, before.logits)


def test_deleting_every_gate_of_a_block_equals_the_intervention_that_zeroes_them(tiny):
    x = batch(1, 32, seed=6)
    block = tiny.info.blocks[7].name
    curve = se_viz.deletion(tiny, x, block, "attribution", steps=8)
    c = tiny.info.blocks[7].channels
    assert curve.k[0] == 0 and curve.k[-1] == c and curve.fraction[-1] == 1.0
    cap = se_viz.capture(tiny, x, engine="eager", intervention=Intervention(gates={block: 0.0}))
    p_all = se_viz.Capture(cap.logits, cap.gates).probabilities[0, curve.target]
    assert curve.prob[-1] == pytest.approx(float(p_all), abs=1e-6)
    plain = se_viz.capture(tiny, x, engine="eager").probabilities[0, curve.target]
    assert curve.prob[0] == pytest.approx(float(plain), abs=1e-6)
    area = np.trapezoid(curve.prob, curve.fraction)
    assert curve.area == pytest.approx(float(area), rel=1e-6)


def test_deletion_orders_remove_what_they_say_first(tiny):
    """The first step of "gate" removes the largest gates; "random" is seeded."""
    x = batch(1, 32, seed=6)
    block = tiny.info.blocks[9].name
    ev = se_viz.explain(tiny, x)
    g = ev.gates[block][0]
    curve = se_viz.deletion(tiny, x, block, "gate", steps=4)
    k = int(curve.k[1])
    zeroed = g.copy()
    zeroed[np.argsort(-g, kind="stable")[:k]] = 0
    cap = se_viz.capture(tiny, x, engine="eager", intervention=Intervention(gates={block: zeroed}))
    assert curve.prob[1] == pytest.approx(float(cap.probabilities[0, curve.target]), abs=1e-6)
    a = se_viz.deletion(tiny, x, "all", "random", steps=4, seed=1)
    b = se_viz.deletion(tiny, x, "all", "random", steps=4, seed=1)
    np.testing.assert_array_equal(a.prob, b.prob)
    assert a.k[-1] == sum(b.channels for b in tiny.info.blocks)
    with pytest.raises(ValueError, match="unknown order"):
        se_viz.deletion(tiny, x, block, "biggest")


def test_eca_gates_take_interventions_and_gradients():
    """ECA's gate layer is (N, 1, C): a (C,) override and the gradients follow its layout."""
    model = se_viz.build_model("ecaresnet50d", seed=1)
    x = batch(1, 64, seed=3)
    ev = se_viz.explain(model, x, blocks=[model.info.blocks[-1].name])
    block = model.info.blocks[2].name
    g = ev.gates[block][0].copy()
    assert ev.gate_grad[block].shape == (1, model.info.blocks[2].channels)
    g[:10] = 0.0
    cap = se_viz.capture(model, x, engine="eager", intervention=Intervention(gates={block: g}))
    np.testing.assert_allclose(cap.gates[block][0], g)
