"""The fast engine: the model's own forward traced with the gate recorder, run by ONNX
Runtime. Held to the eager hooks; cached by program and weights; never stale."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import paddle
import pytest
from paddle import nn

import se_viz
from se_viz.engine import capture as engine
from se_viz.engine import compat, traced
from se_viz.engine.hooks import GRAPH_OUTPUTS, graph_outputs, map_output
from se_viz.engine.model import se_blocks
from se_viz.engine.runtime import cpu_threads, set_cpu_threads
from se_viz.paths import graph_cache_dir
from se_viz.results import Intervention

from .conftest import batch, make_tiny

ROOT = Path(__file__).resolve().parents[1]
GATE_ATOL = 1e-4  # float32 reordering between the two engines (measured: <= 5e-7 here)


def assert_same_capture(got, ref, top=5, atol=GATE_ATOL):
    """Fast vs hooks: same fields, gates and squeeze within ``atol``, same top-k, close logits."""
    assert list(got.gates) == list(ref.gates) and ref.gates
    assert list(got.squeeze) == list(ref.squeeze)
    for name in ref.gates:
        for field in ("gates", "squeeze"):
            a, b = getattr(got, field)[name], getattr(ref, field)[name]
            assert a.shape == b.shape and a.dtype == b.dtype == np.float32, (field, name)
            assert np.abs(a - b).max() <= atol, (field, name, np.abs(a - b).max())
    assert got.logits.shape == ref.logits.shape and got.logits.dtype == np.float32
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.top_k(top)[0], ref.top_k(top)[0])


def assert_same_features(got, ref, names, atol=GATE_ATOL):
    """Maps before and after SE from the fast graph equal the hooks' (``atol`` relative to
    the largest value, at least 1): each held to the eager capture, none derived."""
    assert list(got.features) == list(ref.features) == list(names)
    for name in names:
        for field in ("before", "after"):
            a, b = getattr(got.features[name], field), getattr(ref.features[name], field)
            assert a.shape == b.shape and a.dtype == b.dtype == np.float32, (name, field)
            scale = max(1.0, float(np.abs(b).max()))
            assert np.abs(a - b).max() <= atol * scale, (name, field, np.abs(a - b).max())


@pytest.fixture()
def no_fast(monkeypatch):
    """Make any use of the fast path fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("the fast path was used")
    monkeypatch.setattr(traced, "capture_fast", refuse)


@pytest.fixture()
def traces(monkeypatch) -> list:
    """Every trace of a model (one per graph made)."""
    calls: list = []
    real = traced.trace
    monkeypatch.setattr(traced, "trace", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


# ----------------------------------------------------------------------------- equal to eager
@pytest.mark.parametrize("arch", ["se_resnet50_vd", "se_resnet50"])
@pytest.mark.parametrize("size", [32, 37])  # 37: odd maps, partial ceil-mode pooling windows
def test_fast_equals_hooks_on_tiny_models(arch, size):
    model = make_tiny(arch, seed=3)
    x = batch(3, size=size, seed=size)
    got = se_viz.capture(model, x, engine="fast")
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))
    _, info = traced.graph_for(model)
    assert info.source == "built" and info.path is not None and info.path.is_file()


@pytest.mark.parametrize("arch", ["se_resnet50_vd", "se_resnet50"])
def test_feature_maps_from_the_fast_graph_equal_the_hooks(arch, monkeypatch):
    calls = []
    real = traced.capture_fast
    monkeypatch.setattr(traced, "capture_fast", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = make_tiny(arch, seed=13)
    x = batch(3, size=37, seed=14)
    names = ["SE_2_1", "SE_3_4", "SE_5_3"]
    got = se_viz.capture(model, x, features=names[::-1], batch_size=2)  # forward order back
    ref = se_viz.capture(model, x, features=names, engine="eager")
    assert calls == [1]
    assert_same_capture(got, ref)
    assert_same_features(got, ref, names)
    _, with_maps = traced.graph_for(model, maps=True)
    _, gates_only = traced.graph_for(model)
    assert with_maps.maps and not gates_only.maps and with_maps.key != gates_only.key
    assert with_maps.path != gates_only.path and with_maps.path.is_file()


def test_maps_after_se_are_the_se_layers_output_not_before_times_gate():
    """A user scales one SE block's output: the fast graph's maps after SE are that output
    (as the hooks see it), not the input times the gate."""
    model = make_tiny("se_resnet50_vd", seed=19)
    block = dict((n, se) for n, _, se in se_blocks(model))["SE_3_2"]
    real = block.forward
    block.forward = lambda t: real(t) * 0.5
    x = batch(2, size=37, seed=24)
    got = se_viz.capture(model, x, features=["SE_3_2"], engine="fast")
    ref = se_viz.capture(model, x, features=["SE_3_2"], engine="eager")
    assert_same_capture(got, ref)
    assert_same_features(got, ref, ["SE_3_2"])
    maps, gate = got.features["SE_3_2"], got.gates["SE_3_2"][:, :, None, None]
    np.testing.assert_allclose(maps.after, 0.5 * maps.before * gate, rtol=1e-5, atol=1e-6)


def test_a_model_whose_gates_were_swapped_after_building_is_traced_again(traces):
    """The issue's user test: build, capture, swap every block's gate for Hardsigmoid,
    capture again. The fast engine must return Hardsigmoid gates, equal to the hooks."""
    model = make_tiny("se_resnet50_vd", seed=5)
    x = batch(2, seed=15)
    sigmoid = se_viz.capture(model, x, engine="fast")
    _, before = traced.graph_for(model)
    for _, _, se in se_blocks(model):
        se.gate = nn.Hardsigmoid()
    hard = se_viz.capture(model, x, engine="fast")
    _, after = traced.graph_for(model)
    assert len(traces) == 2 and after.key != before.key
    assert_same_capture(hard, se_viz.capture(model, x, engine="eager"))
    assert max(np.abs(hard.gates[n] - sigmoid.gates[n]).max() for n in hard.gates) > 1e-2
    pre = {n: se.excitation(se.act(se.squeeze(paddle.to_tensor(hard.squeeze[n])))).numpy()
           for n, _, se in se_blocks(model)}
    for name, z in pre.items():  # Paddle's hardsigmoid: clip(z / 6 + 0.5, 0, 1)
        np.testing.assert_allclose(hard.gates[name], np.clip(z / 6 + 0.5, 0, 1), atol=1e-5)


def test_steep_gates_are_held_to_the_hooks():
    """SE weights scaled up several times: gates near 0 and 1, sensitive to float order."""
    model = make_tiny("se_resnet50", seed=6)
    for _, _, se in se_blocks(model):
        for layer in (se.squeeze, se.excitation):
            layer.weight.set_value(layer.weight.numpy() * 6.0)
    x = batch(3, size=40, seed=16)
    got = se_viz.capture(model, x, engine="fast")
    ref = se_viz.capture(model, x, engine="eager")
    steep = np.concatenate([g.ravel() for g in ref.gates.values()])
    assert ((steep < 0.02) | (steep > 0.98)).mean() > 0.2  # they really are steep
    assert_same_capture(got, ref)


def test_a_replaced_forward_or_a_foreign_hook_is_traced_again(traces):
    model = make_tiny("se_resnet50_vd", seed=7)
    x = batch(1, seed=17)
    se_viz.capture(model, x)
    block = model.blocks[3][2]
    real = block.scale.forward
    block.scale.forward = lambda t: real(t) * 0.5  # a user edits one block's output
    got = se_viz.capture(model, x)
    assert len(traces) == 2
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))
    handle = model.blocks[0][2].conv0.register_forward_post_hook(lambda layer, i, o: o * 2.0)
    try:
        got = se_viz.capture(model, x)
        assert len(traces) == 3
        assert_same_capture(got, se_viz.capture(model, x, engine="eager"))
    finally:
        handle.remove()


def test_weights_changed_in_place_get_a_new_graph():
    model = make_tiny(seed=4)
    x = batch(2, seed=9)
    se_viz.capture(model, x)
    _, before = traced.graph_for(model)
    bias = model.out.bias
    bias.set_value(bias.numpy() + np.arange(10, dtype=np.float32))
    got = se_viz.capture(model, x)
    _, after = traced.graph_for(model)
    assert after.key != before.key
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))
    with paddle.no_grad():  # an in-place edit of one value: the tensor's version moves
        model.blocks[5][2].scale.excitation.bias[0] = 7.0
    got = se_viz.capture(model, x)
    assert traced.graph_for(model)[1].key != after.key
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))


@pytest.mark.parametrize("arch", ["se_resnet50_vd", "se_resnet50"])
def test_both_se_implementations_give_the_same_graph_numbers(arch):
    linear = make_tiny(arch, seed=8)
    conv = make_tiny(arch, seed=8, se_impl="conv")
    x = batch(2, seed=18)
    a, b = se_viz.capture(linear, x, engine="fast"), se_viz.capture(conv, x, engine="fast")
    assert traced.graph_for(linear)[1].key != traced.graph_for(conv)[1].key
    assert_same_capture(a, b, atol=1e-5)  # float order of Linear vs 1x1 conv only
    assert_same_capture(b, se_viz.capture(conv, x, engine="eager"))


# ----------------------------------------------------------------------------- the cache key
def test_the_key_is_the_program_and_the_weights_not_the_build_order(traces):
    """Framework-generated names (linear_65.w_0, /SEResNet_1/...) depend on what was built
    before; the key must not: a second model with the same weights loads from disk."""
    x = batch(2, seed=6)
    first = make_tiny("se_resnet50_vd", seed=11)
    a = se_viz.capture(first, x, engine="fast")
    _, built = traced.graph_for(first)
    make_tiny("se_resnet50", seed=1)  # shifts every generated name of the next model
    second = make_tiny("se_resnet50_vd", seed=11)
    assert {p.name for p in second.parameters()} != {p.name for p in first.parameters()}
    b = se_viz.capture(second, x, engine="fast")
    _, loaded = traced.graph_for(second)
    assert (built.source, loaded.source) == ("built", "disk")
    assert loaded.key == built.key and loaded.path == built.path
    np.testing.assert_array_equal(a.logits, b.logits)
    for name in a.gates:
        np.testing.assert_array_equal(a.gates[name], b.gates[name])
    other = make_tiny("se_resnet50_vd", seed=12)  # same program, other weights
    se_viz.capture(other, x)
    assert traced.graph_for(other)[1].key != built.key


def test_the_program_text_names_parameters_by_their_state_dict_keys(tmp_path):
    model = make_tiny("se_resnet50", seed=0)
    prefix = traced.trace(model, False, tmp_path)
    text = traced.program_text(model, prefix.with_suffix(".json"))
    assert '"bb_3_2.scale.excitation.weight"' in text and '"out.bias"' in text
    assert not any(p.name in text for p in model.parameters())


def test_the_disk_cache_keeps_only_the_most_recent_graphs(monkeypatch):
    monkeypatch.setattr(traced, "KEEP_GRAPHS", 2)
    paths = []
    for seed in (31, 32, 33):
        model = make_tiny(seed=seed)
        se_viz.capture(model, batch(1))
        paths.append(traced.graph_for(model)[1].path)
    assert sorted(graph_cache_dir().glob("*.onnx")) == sorted(paths[1:])


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_cached_graph_is_rebuilt(damage):
    x = batch(2, seed=8)
    model = make_tiny("se_resnet50", seed=21)
    se_viz.capture(model, x)
    _, info = traced.graph_for(model)
    data = bytearray(info.path.read_bytes())
    if damage == "flip":  # a weight byte: still a valid protobuf, wrong numbers
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 3]
    else:
        data = bytearray(b"not an onnx graph")
    info.path.write_bytes(bytes(data))
    again = make_tiny("se_resnet50", seed=21)
    got = se_viz.capture(again, x)
    _, rebuilt = traced.graph_for(again)
    assert rebuilt.source == "built" and rebuilt.key == info.key and rebuilt.path.is_file()
    assert not info.path.exists() or info.path == rebuilt.path  # the damaged file is gone
    assert rebuilt.path.read_bytes() != bytes(data)
    assert_same_capture(got, se_viz.capture(again, x, engine="eager"))


def test_an_unwritable_cache_still_captures(tmp_path, monkeypatch):
    blocker = tmp_path / "home_is_a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SE_VIZ_HOME", str(blocker))
    model = make_tiny(seed=5)
    x = batch(1, seed=10)
    got = se_viz.capture(model, x)
    _, info = traced.graph_for(model)
    assert info.source == "built" and info.path is None
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))


# ----------------------------------------------------------------------------- failures
def test_a_conversion_that_produces_nothing_falls_back_to_the_hooks(monkeypatch, caplog):
    """paddle2onnx logs and swallows its own errors; se_viz checks what it returned."""
    import paddle2onnx

    monkeypatch.setattr(paddle2onnx, "export", lambda *a, **k: b"")
    model = make_tiny(seed=22)
    x = batch(2, seed=19)
    with caplog.at_level("WARNING", logger="se_viz"):
        got = se_viz.capture(model, x)
        again = se_viz.capture(model, x)
    assert sum("no fast graph" in r.message for r in caplog.records) == 1  # once, not per call
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"), atol=0)
    assert_same_capture(again, got, atol=0)
    with pytest.raises(ValueError, match="engine='fast': paddle2onnx converted nothing"):
        se_viz.capture(model, x, engine="fast")


def test_a_graph_that_disagrees_on_the_probe_is_never_used(monkeypatch):
    real = traced.FastGraph.run

    def wrong(self, batch_, features=()):
        cap = real(self, batch_, features)
        return se_viz.Capture(cap.logits + 1.0, cap.gates, cap.squeeze, cap.features)
    monkeypatch.setattr(traced.FastGraph, "run", wrong)
    model = make_tiny(seed=23)
    with pytest.raises(ValueError, match="differs from the eager forward on a probe"):
        se_viz.capture(model, batch(1), engine="fast")
    assert not list(graph_cache_dir().glob("*.onnx"))  # never stored either


def test_a_model_cast_off_float32_after_a_fast_capture_falls_back_to_the_hooks(caplog):
    """Cast to float64 after its graph was made: "auto" captures with the hooks (the same
    gates as before the cast), "fast" refuses, pointing to the eager engine."""
    model = make_tiny("se_resnet50", seed=25)
    x = batch(2, seed=26)
    fast = se_viz.capture(model, x, engine="fast")
    model.to(dtype="float64")
    # the network takes float32 images: cast them to the model's dtype (as its user would)
    handle = model.register_forward_pre_hook(lambda layer, inputs: inputs[0].astype("float64"))
    try:
        assert traced.bound(model) and not traced.supports(model)
        with caplog.at_level("WARNING", logger="se_viz"):
            auto = se_viz.capture(model, x)
        assert any("float32 CPU weights" in r.message for r in caplog.records)
        eager = se_viz.capture(model, x, engine="eager")
        assert_same_capture(auto, eager, atol=0)
        assert_same_capture(auto, fast)  # float64 vs float32: the same gates
        with pytest.raises(ValueError, match="engine='fast'.*float32 CPU.*use engine='eager'"):
            se_viz.capture(model, x, engine="fast")
    finally:
        handle.remove()


def test_bad_engine_requests_are_refused_clearly(tiny_vd, monkeypatch):
    x = batch(1)
    with pytest.raises(ValueError, match="engine must be one of auto, eager, fast"):
        se_viz.capture(tiny_vd, x, engine="gpu")
    with pytest.raises(ValueError, match="cannot apply interventions"):
        se_viz.capture(tiny_vd, x, intervention=Intervention(gates={"SE_2_1": 1.0}),
                       engine="fast")
    with pytest.raises(ValueError, match="unknown block name.*SE_9_9"):
        se_viz.capture(tiny_vd, x, features=["SE_9_9"], engine="fast")
    assert not engine.use_fast(object(), "auto")  # not an SEResNet: hooks (which then refuse)
    monkeypatch.setenv("SE_VIZ_ENGINE", "turbo")
    with pytest.raises(ValueError, match="SE_VIZ_ENGINE.*turbo"):
        se_viz.capture(tiny_vd, x)


# ----------------------------------------------------------------------------- dispatch
def test_auto_uses_the_fast_path_for_plain_captures(tiny_vd, monkeypatch):
    calls = []
    real = traced.capture_fast
    monkeypatch.setattr(traced, "capture_fast", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = batch(5, seed=1)
    whole = se_viz.capture(tiny_vd, x)
    split = se_viz.capture(tiny_vd, x, batch_size=2)  # three runs, joined
    assert calls == [1, 1]
    for name in whole.gates:
        np.testing.assert_allclose(split.gates[name], whole.gates[name], atol=1e-6)
    np.testing.assert_allclose(split.logits, whole.logits, atol=1e-5)


def test_engine_eager_and_env_opt_out_bypass_the_fast_path(tiny_vd, no_fast, monkeypatch):
    x = batch(2, seed=4)
    assert se_viz.capture(tiny_vd, x, engine="eager").logits.shape == (2, 10)
    monkeypatch.setenv("SE_VIZ_ENGINE", "eager")
    assert se_viz.capture(tiny_vd, x).logits.shape == (2, 10)


def test_interventions_use_the_hooks(tiny_vd, no_fast):
    x = batch(2, seed=5)
    off = se_viz.capture(tiny_vd, x, intervention=Intervention(gates={"SE_2_1": 1.0}))
    assert np.all(off.gates["SE_2_1"] == 1.0)
    both = se_viz.capture(tiny_vd, x, features=["SE_3_2"],
                          intervention=Intervention(gates={"SE_3_2": 0.5}))
    np.testing.assert_array_equal(both.features["SE_3_2"].after,
                                  both.features["SE_3_2"].before * np.float32(0.5))


def test_tracing_leaves_the_model_as_it_was(tiny_canonical):
    """No hook left behind, still eager and in eval mode, the same eager numbers."""
    x = batch(2, seed=20)
    before = se_viz.capture(tiny_canonical, x, engine="eager")
    traced.forget(tiny_canonical)
    se_viz.capture(tiny_canonical, x, engine="fast", features=["SE_4_2"])
    assert paddle.in_dynamic_mode() and not tiny_canonical.training
    for _, layer in tiny_canonical.named_sublayers(include_self=True):
        pre, post, *_ = compat.layer_parts(layer)
        assert not pre and not post
    after = se_viz.capture(tiny_canonical, x, engine="eager")
    assert_same_capture(after, before, atol=0)


def test_threads_sharing_a_model_get_their_own_results():
    model = make_tiny("se_resnet50_vd", seed=9)  # fresh: the first trace races too
    inputs = [batch(2, seed=100 + i) for i in range(4)]
    results: dict[int, se_viz.Capture] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                results[i] = se_viz.capture(model, inputs[i], engine="fast")
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, x in enumerate(inputs):
        serial = se_viz.capture(model, x, engine="fast")
        np.testing.assert_array_equal(results[i].logits, serial.logits)
        assert_same_capture(results[i], se_viz.capture(model, x, engine="eager"))


def test_eager_captures_in_other_threads_do_not_make_the_graph_look_stale(traces):
    """The recorder's own hooks (registered during eager captures) are not a model change."""
    model = make_tiny("se_resnet50", seed=10)
    x = batch(1, seed=21)
    se_viz.capture(model, x, engine="fast")
    stop = threading.Event()

    def eager_loop() -> None:
        while not stop.is_set():
            se_viz.capture(model, x, intervention=Intervention(gates={"SE_2_1": 1.0}))

    worker = threading.Thread(target=eager_loop)
    worker.start()
    try:
        for _ in range(20):
            se_viz.capture(model, x, engine="fast")
    finally:
        stop.set()
        worker.join()
    assert len(traces) == 1


def test_graph_outputs_and_validity(tmp_path):
    import onnx

    model = make_tiny("se_resnet50", seed=0)
    data = traced.to_onnx(traced.trace(model, True, tmp_path))
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    blocks = [(n, se.channels) for n, _, se in se_blocks(model)]
    roles = graph_outputs([n for n, _ in blocks])
    assert len(proto.graph.output) == len(roles) == 3 + 2 * len(blocks)
    x = batch(2, size=40, seed=3)
    out = dict(zip(roles, traced.ort_session(data, 1).run(None, {"images": x})))
    total = sum(c for _, c in blocks)
    assert [out[r].shape for r in GRAPH_OUTPUTS] == [(2, 10), (2, total), (2, total)]
    for name, c in blocks:
        before, after = out[map_output("before", name)], out[map_output("after", name)]
        assert before.shape == after.shape and before.shape[:2] == (2, c)


def test_a_graph_with_another_number_of_outputs_is_refused(tmp_path):
    model = make_tiny("se_resnet50", seed=0)
    data = traced.to_onnx(traced.trace(model, True, tmp_path))  # maps outputs too
    blocks = [(n, se.channels) for n, _, se in se_blocks(model)]
    with pytest.raises(traced.GraphError, match=f"has {3 + 2 * len(blocks)} outputs, "
                                                f"expected 3"):
        traced.FastGraph(data, blocks, False, 1)


def test_cpu_threads_default_to_every_core_and_honour_the_override(monkeypatch):
    import os

    monkeypatch.delenv("SE_VIZ_THREADS", raising=False)
    assert cpu_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SE_VIZ_THREADS", "1")
    assert cpu_threads() == 1 and set_cpu_threads() == 1
    monkeypatch.setenv("SE_VIZ_THREADS", "lots")  # ignored: not a positive integer
    assert cpu_threads() == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=">= 1"):
        set_cpu_threads(0)
    assert set_cpu_threads() == len(os.sched_getaffinity(0))


def test_memory_stays_flat_over_100_fast_captures():
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    model = make_tiny("se_resnet50_vd", seed=17)
    x = batch(2, size=64, seed=4)
    for _ in range(20):  # both graph variants built, arenas warm
        se_viz.capture(model, x)
        se_viz.capture(model, x, features=["SE_2_1", "SE_5_3"])
    start = proc.memory_info().rss
    for _ in range(100):
        se_viz.capture(model, x)
        se_viz.capture(model, x, features=["SE_2_1", "SE_5_3"])
    grown = (proc.memory_info().rss - start) / 2**20
    assert grown < 25, f"RSS grew by {grown:.1f} MiB over 100 fast captures"
    assert len(traced._BINDINGS[model]) == 2  # one graph per variant, not one per call


# ----------------------------------------------------------------------------- full size
@pytest.mark.slow
@pytest.mark.parametrize("se_impl", ["linear", "conv"])
def test_fast_equals_hooks_on_the_full_size_model(se_impl):
    model = se_viz.build_model("se_resnet50_vd", se_impl=se_impl)
    x = batch(2, size=224, seed=12)
    assert_same_capture(se_viz.capture(model, x, engine="fast"),
                        se_viz.capture(model, x, engine="eager"))


@pytest.mark.slow
def test_benchmark_suite_runs_in_quick_mode(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| measure |" in proc.stdout and "capture all 16 gates" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    gate = [r for r in rows if r["name"] == "largest gate difference"]
    assert len(gate) == 1 and 0 <= gate[0]["value"] <= 1e-4


def test_the_networks_own_size_runs_in_a_session_fixed_to_it():
    """Fixed height and width let ONNX Runtime fuse residual adds (onnx_rewrite); other
    sizes run in a second session made on first use, with the same numbers as the hooks."""
    model = make_tiny("se_resnet50", seed=31)
    size = model.preprocessing.crop
    x = batch(2, size=size, seed=32)
    got = se_viz.capture(model, x, engine="fast")
    graph, _ = traced.graph_for(model)
    assert graph.size == (size, size) and graph._any_size is None  # one session so far
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))
    small = batch(1, size=48, seed=33)
    assert_same_capture(se_viz.capture(model, small, engine="fast"),
                        se_viz.capture(model, small, engine="eager"))
    assert graph.any_size() is graph._any_size is not None
    assert graph.any_size().get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert graph.session.get_inputs()[0].shape[2:] == [size, size]


def test_a_graph_input_that_is_not_an_image_batch_is_refused():
    import onnx
    from onnx import TensorProto, helper

    from se_viz.engine import onnx_rewrite

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])],
                                                "g", [x], [y]))
    with pytest.raises(ValueError, match="image input"):
        onnx_rewrite.rewrite(model.SerializeToString())
    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None, 7])
    data = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])],
                                               "g", [image], [y])).SerializeToString()
    dims = onnx.load_from_string(onnx_rewrite.rewrite(data)).graph.input[0].type.tensor_type
    assert [d.dim_param or d.dim_value for d in dims.shape.dim] == ["batch", 3, "height", 7]
