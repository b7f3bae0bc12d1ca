"""Gate capture: known answers, batch equivalence, hook hygiene, threads, interventions.

These test the forward-hook capture, the reference that the fast graph is held to
(tests/test_fast.py), so every capture here runs with ``SE_VIZ_ENGINE=eager``.
"""

from __future__ import annotations

import threading

import numpy as np
import paddle
import pytest

import se_viz
from se_viz.engine.hooks import GateRecorder
from se_viz.results import Intervention
from se_viz.engine.model import se_blocks

from .conftest import batch, make_tiny


@pytest.fixture(autouse=True)
def _hooks_engine(monkeypatch):
    monkeypatch.setenv("SE_VIZ_ENGINE", "eager")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _hook_count(model) -> int:
    return sum(len(layer._forward_pre_hooks) + len(layer._forward_post_hooks)
               for layer in model.sublayers(include_self=True))


def test_gates_equal_manual_recomputation_from_each_blocks_input(tiny_vd):
    names = [n for n, _, _ in se_blocks(tiny_vd)]
    cap = se_viz.capture(tiny_vd, batch(3), features=names)
    for name, _, se in se_blocks(tiny_vd):
        x = cap.features[name].before  # the SE block's own input (N, C, H, W)
        y = x.mean(axis=(2, 3))
        h = np.maximum(y @ se.squeeze.weight.numpy() + se.squeeze.bias.numpy(), 0)
        s = _sigmoid(h @ se.excitation.weight.numpy() + se.excitation.bias.numpy())
        np.testing.assert_allclose(cap.gates[name], s, rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(cap.squeeze[name], y, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(cap.features[name].after, x * s[:, :, None, None],
                                   rtol=1e-4, atol=1e-5)
        assert cap.gates[name].dtype == np.float32
        assert cap.gates[name].min() >= 0 and cap.gates[name].max() <= 1


def test_capture_logits_equal_the_plain_forward(tiny_canonical):
    x = batch(2, seed=5)
    cap = se_viz.capture(tiny_canonical, x)
    with paddle.no_grad():
        plain = tiny_canonical(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(cap.logits, plain, rtol=1e-5, atol=1e-5)
    assert cap.logits.shape == (2, 10)
    assert list(cap.gates) == [b.name for b in tiny_canonical.info.blocks]
    assert cap.gates["SE_5_3"].shape == (2, 256)  # width 8 -> 4 * 8 * 8 channels


def test_a_batch_equals_its_images_one_by_one(tiny_vd):
    x = batch(5, seed=2)
    whole = se_viz.capture(tiny_vd, x, features=["SE_3_2"])
    for i in range(5):
        one = se_viz.capture(tiny_vd, x[i:i + 1], features=["SE_3_2"])
        np.testing.assert_allclose(one.logits, whole.logits[i:i + 1], rtol=1e-4, atol=1e-5)
        for name in whole.gates:
            np.testing.assert_allclose(one.gates[name], whole.gates[name][i:i + 1],
                                       rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(one.features["SE_3_2"].after,
                                   whole.features["SE_3_2"].after[i:i + 1], rtol=1e-4, atol=1e-5)
    split = se_viz.capture(tiny_vd, x, batch_size=2)
    np.testing.assert_allclose(split.gates["SE_4_6"], whole.gates["SE_4_6"], atol=1e-6)


def test_pil_images_are_preprocessed_like_paddleclas(tiny_vd):
    from PIL import Image

    from se_viz.images import to_batch
    imgs = [Image.new("RGB", (300, 260), (200, 30, 60)), Image.new("RGB", (64, 64), (0, 90, 250))]
    a = se_viz.capture(tiny_vd, imgs)
    b = se_viz.capture(tiny_vd, to_batch(imgs))
    np.testing.assert_array_equal(a.logits, b.logits)


def test_no_hook_remains_after_success_or_exception(tiny_vd):
    before = _hook_count(tiny_vd)
    se_viz.capture(tiny_vd, batch(1), features=["SE_2_1", "SE_5_3"],
                   intervention=Intervention(gates={"SE_3_1": 1.0},
                                             hidden_masks={"SE_2_2": np.ones(2)}))
    assert _hook_count(tiny_vd) == before

    def boom(layer, inputs):
        raise RuntimeError("boom inside the forward")

    handle = dict(tiny_vd.named_sublayers())["bb_2_0"].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            se_viz.capture(tiny_vd, batch(1), features=["SE_2_1"])
    finally:
        handle.remove()
    assert _hook_count(tiny_vd) == before
    assert not tiny_vd.training


def test_recorder_exit_propagates_and_remove_is_idempotent(tiny_vd):
    base = _hook_count(tiny_vd)
    rec = GateRecorder(tiny_vd)
    with pytest.raises(KeyError):
        with rec:
            assert _hook_count(tiny_vd) == base + 32
            raise KeyError("inside")
    rec.remove()
    rec.remove()
    assert _hook_count(tiny_vd) == base


def test_train_mode_is_restored_and_capture_runs_in_eval():
    model = make_tiny(seed=1)
    x = batch(2)
    ref = se_viz.capture(model, x)
    model.train()
    got = se_viz.capture(model, x)
    assert model.training
    np.testing.assert_allclose(got.logits, ref.logits, atol=1e-6)  # eval BN, not batch stats
    model.eval()


def test_threads_on_one_shared_model_get_their_serial_results(tiny_vd):
    inputs = [batch(2, seed=10 + i) for i in range(6)]
    serial = [se_viz.capture(tiny_vd, x, features=["SE_4_1"]) for x in inputs]
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(inputs))

    def work(i):
        try:
            start.wait()
            for _ in range(3):
                results[i] = se_viz.capture(tiny_vd, inputs[i], features=["SE_4_1"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, ref in enumerate(serial):
        np.testing.assert_array_equal(results[i].logits, ref.logits)
        for name in ref.gates:
            np.testing.assert_array_equal(results[i].gates[name], ref.gates[name])
        np.testing.assert_array_equal(results[i].features["SE_4_1"].before,
                                      ref.features["SE_4_1"].before)
    assert _hook_count(tiny_vd) == 0


def test_forward_by_another_thread_is_not_recorded(tiny_vd):
    rec = GateRecorder(tiny_vd)
    with rec, paddle.no_grad():
        t = threading.Thread(target=lambda: tiny_vd(paddle.to_tensor(batch(1))))
        t.start()
        t.join()
    assert all(len(v) == 0 for v in rec.gates.values())


def test_overriding_gates_with_their_own_values_changes_nothing(tiny_vd):
    x = batch(1, seed=7)
    ref = se_viz.capture(tiny_vd, x)
    same = se_viz.capture(tiny_vd, x, intervention=Intervention(
        gates={n: ref.gates[n][0] for n in ref.gates}))
    np.testing.assert_allclose(same.logits, ref.logits, rtol=1e-5, atol=1e-5)


def test_gate_override_to_one_switches_se_off(tiny_vd):
    x = batch(1, seed=8)
    ref = se_viz.capture(tiny_vd, x, features=["SE_3_1"])
    off = se_viz.capture(tiny_vd, x, features=["SE_3_1"],
                         intervention=Intervention(gates={"SE_3_1": 1.0}))
    assert np.all(off.gates["SE_3_1"] == 1.0)
    np.testing.assert_allclose(off.features["SE_3_1"].after, off.features["SE_3_1"].before)
    np.testing.assert_array_equal(off.gates["SE_2_3"], ref.gates["SE_2_3"])  # upstream intact
    assert not np.allclose(off.logits, ref.logits)


def test_hidden_masks_emulate_a_smaller_bottleneck(tiny_vd):
    x = batch(2, seed=9)
    ref = se_viz.capture(tiny_vd, x)
    se = dict((n, s) for n, _, s in se_blocks(tiny_vd))["SE_4_2"]
    keep = se_viz.capture(tiny_vd, x, intervention=Intervention(
        hidden_masks={"SE_4_2": np.ones(se.hidden)}))
    np.testing.assert_allclose(keep.logits, ref.logits, atol=1e-6)
    zero = se_viz.capture(tiny_vd, x, intervention=Intervention(
        hidden_masks={"SE_4_2": np.zeros(se.hidden)}))
    expected = _sigmoid(se.excitation.bias.numpy())  # no hidden unit left: gate = sigmoid(b2)
    np.testing.assert_allclose(zero.gates["SE_4_2"], np.tile(expected, (2, 1)), atol=1e-6)


def test_bad_requests_are_refused_clearly(tiny_vd):
    with pytest.raises(ValueError, match="unknown block name.*SE_9_9.*SE_2_1"):
        se_viz.capture(tiny_vd, batch(1), features=["SE_9_9"])
    with pytest.raises(ValueError, match="shape"):
        se_viz.capture(tiny_vd, np.zeros((3, 32, 32), np.float32))
    with pytest.raises(TypeError):
        se_viz.capture(tiny_vd, "not images")
    with pytest.raises(ValueError, match="entries"):
        se_viz.capture(tiny_vd, batch(1), intervention=Intervention(
            hidden_masks={"SE_2_1": np.ones(7)}))
    assert _hook_count(tiny_vd) == 0


def test_memory_stays_flat_over_100_captures(tiny_vd):
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    x = batch(2, seed=4)
    for _ in range(20):
        se_viz.capture(tiny_vd, x, features=["SE_2_1"])
    start = proc.memory_info().rss
    for _ in range(100):
        se_viz.capture(tiny_vd, x, features=["SE_2_1"])
    grown = (proc.memory_info().rss - start) / 2**20
    assert grown < 25, f"RSS grew by {grown:.1f} MiB over 100 captures"
    assert _hook_count(tiny_vd) == 0


def test_top_k_and_probabilities(tiny_vd):
    cap = se_viz.capture(tiny_vd, batch(2))
    idx, prob = cap.top_k(5)
    assert idx.shape == (2, 5) and np.all(np.diff(prob, axis=1) <= 0)
    np.testing.assert_allclose(cap.probabilities.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(idx[:, 0], cap.logits.argmax(axis=1))
    one = cap.select(1)
    np.testing.assert_array_equal(one.gates["SE_3_3"], cap.gates["SE_3_3"][1:2])


@pytest.mark.slow
def test_full_size_se_resnet50_vd_capture_shapes():
    model = se_viz.build_model("se_resnet50_vd")
    assert model.info.untrained
    cap = se_viz.capture(model, batch(2, size=224, seed=1), features=["SE_5_3"])
    assert cap.logits.shape == (2, 1000)
    widths = [cap.gates[n].shape[1] for n in se_viz.BLOCK_NAMES]
    assert widths == [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert cap.features["SE_5_3"].before.shape == (2, 2048, 7, 7)
    assert all(0 <= cap.gates[n].min() and cap.gates[n].max() <= 1 for n in cap.gates)
    assert _hook_count(model) == 0
