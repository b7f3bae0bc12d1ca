"""The fast ONNX Runtime capture: equal to the hook capture, cached once per weights, safe."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import se_viz
from se_viz import fast
from se_viz.hooks import Intervention
from se_viz.model import cpu_threads, se_blocks, set_cpu_threads

from .conftest import batch, make_tiny

ROOT = Path(__file__).resolve().parents[1]


def assert_same_capture(got, ref, top=5):
    """Fast vs hooks: same fields, gates and squeeze within 1e-4, same top-k, close logits."""
    assert list(got.gates) == list(ref.gates) == list(se_viz.BLOCK_NAMES)
    assert list(got.squeeze) == list(ref.squeeze) and got.features == {} == ref.features
    for name in ref.gates:
        for field in ("gates", "squeeze"):
            a, b = getattr(got, field)[name], getattr(ref, field)[name]
            assert a.shape == b.shape and a.dtype == b.dtype == np.float32, (field, name)
            assert np.abs(a - b).max() <= 1e-4, (field, name, np.abs(a - b).max())
    assert got.logits.shape == ref.logits.shape and got.logits.dtype == np.float32
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.top_k(top)[0], ref.top_k(top)[0])


@pytest.fixture()
def no_fast(monkeypatch):
    """Make any use of the fast path fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("the fast path was used")
    monkeypatch.setattr(fast, "capture_fast", refuse)


@pytest.mark.parametrize("arch", ["se_resnet50_vd", "se_resnet50"])
@pytest.mark.parametrize("size", [32, 37])  # 37: odd maps, partial ceil-mode pooling windows
def test_fast_equals_hooks_on_tiny_models(arch, size):
    model = make_tiny(arch, seed=3)
    x = batch(3, size=size, seed=size)
    got = se_viz.capture(model, x, engine="fast")
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))
    _, info = fast.graph_for(model)
    assert info.source == "built" and info.path is not None and info.path.is_file()


def test_auto_uses_the_fast_path_for_plain_captures(tiny_vd, monkeypatch):
    calls = []
    real = fast.capture_fast
    monkeypatch.setattr(fast, "capture_fast", lambda *a, **k: calls.append(1) or real(*a, **k))
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


def assert_same_features(got, ref, names):
    """Maps before and after SE from the fast graph equal the hooks' (relative 1e-4)."""
    assert list(got.features) == list(ref.features) == list(names)
    for name in names:
        for field in ("before", "after"):
            a, b = getattr(got.features[name], field), getattr(ref.features[name], field)
            assert a.shape == b.shape and a.dtype == b.dtype == np.float32, (name, field)
            scale = max(1.0, float(np.abs(b).max()))
            assert np.abs(a - b).max() <= 1e-4 * scale, (name, field, np.abs(a - b).max())
        np.testing.assert_array_equal(got.features[name].after,
                                      got.features[name].before
                                      * got.gates[name][:, :, None, None])


@pytest.mark.parametrize("arch", ["se_resnet50_vd", "se_resnet50"])
def test_feature_maps_from_the_fast_graph_equal_the_hooks(arch, monkeypatch):
    calls = []
    real = fast.capture_fast
    monkeypatch.setattr(fast, "capture_fast", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = make_tiny(arch, seed=13)
    x = batch(3, size=37, seed=14)
    names = ["SE_2_1", "SE_3_4", "SE_5_3"]
    got = se_viz.capture(model, x, features=names[::-1], batch_size=2)  # forward order back
    ref = se_viz.capture(model, x, features=names, engine="eager")
    assert calls == [1]
    plain = {k: v for k, v in vars(got).items() if k != "features"}
    assert_same_capture(se_viz.Capture(**plain), se_viz.Capture(**{
        k: v for k, v in vars(ref).items() if k != "features"}))
    assert_same_features(got, ref, names)
    _, with_maps = fast.graph_for(model, maps=True)
    _, gates_only = fast.graph_for(model)
    assert with_maps.maps and not gates_only.maps and with_maps.key != gates_only.key
    assert with_maps.path != gates_only.path and with_maps.path.is_file()


def test_bad_engine_requests_are_refused_clearly(tiny_vd, monkeypatch):
    x = batch(1)
    with pytest.raises(ValueError, match="engine must be one of auto, eager, fast"):
        se_viz.capture(tiny_vd, x, engine="gpu")
    with pytest.raises(ValueError, match="cannot apply interventions"):
        se_viz.capture(tiny_vd, x, intervention=Intervention(gates={"SE_2_1": 1.0}),
                       engine="fast")
    with pytest.raises(ValueError, match="unknown block name.*SE_9_9"):
        se_viz.capture(tiny_vd, x, features=["SE_9_9"], engine="fast")
    assert not fast.use_fast(object(), "auto")  # not an SEResNet: hooks (which then refuse)
    monkeypatch.setenv("SE_VIZ_ENGINE", "turbo")
    with pytest.raises(ValueError, match="SE_VIZ_ENGINE.*turbo"):
        se_viz.capture(tiny_vd, x)


def test_second_model_with_the_same_weights_loads_the_graph_from_disk(monkeypatch):
    x = batch(2, seed=6)
    first = make_tiny("se_resnet50_vd", seed=11)
    a = se_viz.capture(first, x, engine="fast")
    _, built = fast.graph_for(first)

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a graph that is cached on disk")
    monkeypatch.setattr(fast, "build_onnx", no_build)
    second = make_tiny("se_resnet50_vd", seed=11)
    b = se_viz.capture(second, x, engine="fast")
    _, loaded = fast.graph_for(second)
    assert (built.source, loaded.source) == ("built", "disk")
    assert loaded.key == built.key and loaded.path == built.path
    np.testing.assert_array_equal(a.logits, b.logits)
    for name in a.gates:
        np.testing.assert_array_equal(a.gates[name], b.gates[name])
        np.testing.assert_array_equal(a.squeeze[name], b.squeeze[name])


def test_different_weights_get_their_own_cache_entry():
    x = batch(1, seed=7)
    one, two = make_tiny(seed=1), make_tiny(seed=2)
    a, b = se_viz.capture(one, x), se_viz.capture(two, x)
    (_, i1), (_, i2) = fast.graph_for(one), fast.graph_for(two)
    assert i1.key != i2.key and i1.path != i2.path and i1.path.is_file() and i2.path.is_file()
    assert not np.allclose(a.logits, b.logits)
    assert_same_capture(b, se_viz.capture(two, x, engine="eager"))


def test_the_disk_cache_keeps_only_the_most_recent_graphs(monkeypatch):
    monkeypatch.setattr(fast, "KEEP_GRAPHS", 2)
    paths = []
    for seed in (31, 32, 33):
        model = make_tiny(seed=seed)
        se_viz.capture(model, batch(1))
        paths.append(fast.graph_for(model)[1].path)
    assert sorted(fast.graph_dir().glob("*.onnx")) == sorted(paths[1:])


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_cached_graph_is_rebuilt(damage):
    x = batch(2, seed=8)
    model = make_tiny("se_resnet50", seed=21)
    se_viz.capture(model, x)
    _, info = fast.graph_for(model)
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
    _, rebuilt = fast.graph_for(again)
    assert rebuilt.source == "built" and rebuilt.path == info.path
    assert rebuilt.path.read_bytes() != bytes(data)
    assert_same_capture(got, se_viz.capture(again, x, engine="eager"))


def test_weights_changed_in_place_get_a_new_graph():
    model = make_tiny(seed=4)
    x = batch(2, seed=9)
    se_viz.capture(model, x)
    _, before = fast.graph_for(model)
    bias = model.out.bias
    bias.set_value(bias.numpy() + np.arange(10, dtype=np.float32))
    got = se_viz.capture(model, x)
    _, after = fast.graph_for(model)
    assert after.key != before.key
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))


def test_an_unwritable_cache_still_captures(tmp_path, monkeypatch):
    blocker = tmp_path / "home_is_a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SE_VIZ_HOME", str(blocker))
    model = make_tiny(seed=5)
    x = batch(1, seed=10)
    got = se_viz.capture(model, x)
    _, info = fast.graph_for(model)
    assert info.source == "built" and info.path is None
    assert_same_capture(got, se_viz.capture(model, x, engine="eager"))


def test_threads_sharing_a_model_get_their_own_results():
    model = make_tiny("se_resnet50_vd", seed=9)  # fresh: the first build races too
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
        for name in serial.gates:
            np.testing.assert_array_equal(results[i].gates[name], serial.gates[name])
        assert_same_capture(results[i], se_viz.capture(model, x, engine="eager"))


def test_graph_outputs_and_validity():
    import onnx

    model = make_tiny("se_resnet50", seed=0)
    proto = fast.build_onnx(model)
    onnx.checker.check_model(proto)
    names = [o.name for o in proto.graph.output]
    blocks = list(se_viz.BLOCK_NAMES)
    assert names == ["logits", fast.GATES, fast.SQUEEZE]
    widths = [se.channels for _, _, se in se_blocks(model)]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[fast.BLOCKS_KEY]) == [[b, c] for b, c in zip(blocks, widths)]
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in proto.graph.output[1:]]
    assert dims == [["N", sum(widths)]] * 2
    ops = {node.op_type for node in proto.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions
    with_maps = fast.build_onnx(model, maps=True)
    onnx.checker.check_model(with_maps)
    assert [o.name for o in with_maps.graph.output] == names + [
        fast.MAPS_PREFIX + b for b in blocks]


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


@pytest.mark.slow
def test_fast_equals_hooks_on_the_full_size_model():
    model = se_viz.build_model("se_resnet50_vd")
    x = batch(2, size=224, seed=12)
    assert_same_capture(se_viz.capture(model, x, engine="fast"),
                        se_viz.capture(model, x, engine="eager"))


@pytest.mark.slow
def test_benchmark_suite_runs_in_quick_mode(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| measure |" in proc.stdout and "capture all 16 gates" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    gate = [r for r in rows if r["name"] == "largest gate difference"]
    assert len(gate) == 1 and 0 <= gate[0]["value"] <= 1e-4


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
    assert len(fast._BINDINGS[model]) == 2  # one graph per variant, not one per call
