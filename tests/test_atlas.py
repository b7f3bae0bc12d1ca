"""Channel atlas (issue 19): the gate store of ``se-viz analyze`` and its queries, held to
per-image captures; resumed, merged and multi-process stores to a one-shot one; every bad
store and argument to its message."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from se_viz.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from se_viz.cli import main as cli_main
from se_viz.dataset import analyze, list_images
from se_viz.dataset.atlas import GateStore
from se_viz.dataset.shards import read_manifest, write_store_from_shards
from se_viz.dataset.store import MAX_ERROR, STORE_FILE, dequantize, quantize
from se_viz.errors import DatasetError

from .conftest import make_tiny
from .test_dataset import CLI_TINY, PY, QUIET, ROOT, TINY, make_folder

pq = pytest.importorskip("pyarrow.parquet")

BLOCKS = ("SE_2_1", "SE_3_4", "SE_5_3")  # first, middle, last (32, 64, 256 channels)
# the run's batches differ from the reference capture's: equal up to float32 rounding
TOL = MAX_ERROR + 2e-6


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def single(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    assert analyze(folder, out, TINY, QUIET).merged
    return out


@pytest.fixture(scope="module")
def store(single) -> GateStore:
    return GateStore.open(single)


@pytest.fixture(scope="module")
def captured(folder) -> dict[str, np.ndarray]:
    """Every image's gates, captured one call per image (the known answers)."""
    from se_viz.engine.capture import capture
    from se_viz.images import load_image

    model = make_tiny()  # as TINY: same arch, width, classes and seed
    pre = replace(model.preprocessing, resize=32, crop=32)
    caps = [capture(model, [load_image(folder / f)], preprocessing=pre)
            for f in list_images(folder).files]
    return {b: np.concatenate([c.gates[b] for c in caps]) for b in caps[0].gates}


def assert_best_first(values: list[float], reference: np.ndarray, descending: bool = True) -> None:
    """``values`` are the best len(values) of ``reference``, in order (within TOL)."""
    want = np.sort(reference)[::-1] if descending else np.sort(reference)
    np.testing.assert_allclose(values, want[:len(values)], atol=TOL)


# --------------------------------------------------------------------------- the store


def test_store_holds_every_gate_of_every_image_within_half_a_step(folder, single, captured):
    files = list_images(folder)
    pf = pq.ParquetFile(single / STORE_FILE)
    table = pf.read()
    assert table.column_names == ["index", "file", "class", "label", "size", "mtime_ns",
                                  *captured]
    assert table.column("index").to_pylist() == list(range(18))
    assert table.column("file").to_pylist() == list(files.files)
    assert table.column("class").to_pylist() == [files.classes[k] for k in files.labels]
    stat = [os.stat(folder / f) for f in files.files]
    assert table.column("size").to_pylist() == [s.st_size for s in stat]
    assert table.column("mtime_ns").to_pylist() == [s.st_mtime_ns for s in stat]
    for block, gates in captured.items():
        raw = b"".join(table.column(block).to_pylist())
        assert len(raw) == 2 * gates.size  # 2 bytes a gate
        q = np.frombuffer(raw, "<u2").reshape(gates.shape)
        np.testing.assert_allclose(dequantize(q), gates, atol=TOL, rtol=0)
    meta = json.loads(pf.schema_arrow.metadata[b"se_viz"])
    assert meta["scale"] == 65535 and meta["classes"] == ["goldfish", "plane", "pug"]
    assert meta["key_sha256"] == read_manifest(single)["key_sha256"]


def test_quantisation_error_is_at_most_half_a_step():
    g = np.random.default_rng(0).uniform(0, 1, 100_000)
    assert np.abs(dequantize(quantize(g)) - g).max() <= MAX_ERROR + 1e-9
    np.testing.assert_array_equal(quantize([0.0, 1.0, -0.5, 1.5]), [0, 65535, 0, 65535])
    with pytest.raises(DatasetError, match="NaN"):
        quantize([0.5, np.nan])


# --------------------------------------------------------------------------- queries


@pytest.mark.parametrize("block", BLOCKS)
def test_top_and_bottom_k_equal_the_captured_ranking(store, captured, block):
    for channel in (0, 5, captured[block].shape[1] - 1):
        ref = captured[block][:, channel]
        top = store.top(block, channel, k=5)
        assert_best_first([h.gate for h in top], ref)
        for h in top:  # each hit's gate is that image's captured gate
            assert abs(h.gate - ref[h.index]) <= TOL
        bottom = store.top(block, channel, k=4, bottom=True)
        assert_best_first([h.gate for h in bottom], ref, descending=False)
        everything = store.top(block, channel, k=100)
        assert sorted(h.index for h in everything) == list(range(18))
        gates = [h.gate for h in everything]
        assert gates == sorted(gates, reverse=True)


def test_top_k_within_a_class(store, captured, folder):
    labels = list_images(folder).labels
    for klass, k in (("plane", 1), ("PUG", 2), ("0", 0)):  # a name in any case, or an index
        k_ = store.class_label(klass)
        assert k_ == k
        ref = np.where(labels == k, captured["SE_4_6"][:, 7], -np.inf)
        hits = store.top("SE_4_6", 7, k=6, klass=klass)
        assert [h.class_name for h in hits] == [store.classes[k]] * 6
        assert_best_first([h.gate for h in hits], ref)


def test_per_class_summary_equals_numpy_on_the_captures(store, captured, folder):
    labels = list_images(folder).labels
    summary = store.per_class("SE_3_4", 11)
    assert [s.class_name for s in summary] == ["goldfish", "plane", "pug"]
    for k, s in enumerate(summary):
        g = captured["SE_3_4"][labels == k, 11].astype(np.float64)
        assert s.count == 6
        for got, want in ((s.mean, g.mean()), (s.std, g.std()), (s.min, g.min()),
                          (s.max, g.max()), (s.median, np.median(g)),
                          (s.q10, np.quantile(g, 0.1)), (s.q90, np.quantile(g, 0.9))):
            assert got == pytest.approx(want, abs=TOL)
    values = store.channel_values("SE_3_4", 11)
    assert values.gate.dtype == np.float32 and values.gate.shape == (18,)
    np.testing.assert_array_equal(values.label, labels)


def cosine(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    rows, query = rows.astype(np.float64), query.astype(np.float64)
    return rows @ query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(query))


@pytest.mark.parametrize("block", BLOCKS)
def test_nearest_equals_cosine_similarity_on_the_captures(store, captured, block):
    rng = np.random.default_rng(3)
    gates = captured[block]
    for query in (gates[7], rng.normal(0, 1, gates.shape[1])):
        ref = cosine(gates, query)
        hits = store.nearest(query, block, k=5)
        assert_best_first([h.similarity for h in hits], ref)
        for h in hits:
            assert h.similarity == pytest.approx(ref[h.index], abs=1e-5)
    itself = [h for h in store.nearest(gates[7], block, k=18) if h.index == 7][0]
    assert itself.similarity == pytest.approx(1, abs=1e-5)  # first, or tied within rounding
    hits = store.nearest(gates[7], block, k=3, klass="goldfish")
    assert {h.class_name for h in hits} == {"goldfish"} and 7 not in [h.index for h in hits]


def test_answers_do_not_depend_on_row_groups(single, store, tmp_path):
    """A store written in row groups of 4 images (5 groups) answers exactly as one group,
    so queries stream: the merge of per-group candidates is exact, ties by index."""
    small = tmp_path / "small"
    shutil.copytree(single, small)
    write_store_from_shards(small, read_manifest(small), row_group=4)
    assert pq.ParquetFile(small / STORE_FILE).metadata.num_row_groups == 5
    streamed = GateStore.open(small)
    query = np.random.default_rng(0).uniform(0, 1, 256)
    assert streamed.nearest(query, "SE_5_3", k=7) == store.nearest(query, "SE_5_3", k=7)
    for bottom in (False, True):
        assert streamed.top("SE_5_3", 9, 7, bottom) == store.top("SE_5_3", 9, 7, bottom)
    assert streamed.per_class("SE_2_1", 3) == store.per_class("SE_2_1", 3)


def test_ties_come_in_index_order_across_row_groups(single, tmp_path):
    from se_viz.dataset.store import StoreChunk, write_store

    out = tmp_path / "ties"
    shutil.copytree(single, out)
    manifest = read_manifest(out)
    key = manifest["key"]
    width = sum(key["channels"])
    chunks = [StoreChunk(np.arange(lo, lo + 6), [f"f{i}.png" for i in range(lo, lo + 6)],
                         np.full(6, lo // 6), quantize(np.full((6, width), 0.5)),
                         np.full((6, 2), -1)) for lo in (0, 6, 12)]
    write_store(out / STORE_FILE, key, manifest["key_sha256"], chunks, row_group=4)
    tied = GateStore.open(out)
    assert [h.index for h in tied.top("SE_2_1", 0, k=18)] == list(range(18))
    assert [h.index for h in tied.top("SE_2_1", 0, k=5, bottom=True)] == list(range(5))
    assert [h.index for h in tied.nearest(np.ones(32), "SE_2_1", k=7)] == list(range(7))
    assert [h.index for h in tied.top("SE_2_1", 0, k=3, klass="pug")] == [12, 13, 14]
    assert {h.status for h in tied.top("SE_2_1", 0, k=2)} == {"missing"}  # no such files


# --------------------------------------------------------------------------- same bytes


def test_resumed_merged_and_two_rank_stores_equal_the_one_shot_store(folder, single, tmp_path):
    want = (single / STORE_FILE).read_bytes()
    resumed = tmp_path / "resumed"
    assert not analyze(folder, resumed, TINY, replace(QUIET, max_shards=1)).complete
    assert not (resumed / STORE_FILE).exists()
    assert analyze(folder, resumed, TINY, QUIET).reused_shards == 1
    assert (resumed / STORE_FILE).read_bytes() == want
    (resumed / STORE_FILE).unlink()
    assert cli_main(["analyze", str(folder), "--out", str(resumed), "--merge-only"]) == 0
    assert (resumed / STORE_FILE).read_bytes() == want
    ranks = tmp_path / "ranks"
    analyze(folder, ranks, TINY, replace(QUIET, rank=1, world=2))
    assert analyze(folder, ranks, TINY, replace(QUIET, rank=0, world=2)).merged
    assert (ranks / STORE_FILE).read_bytes() == want


@pytest.mark.slow
def test_paddle_launcher_with_two_processes_writes_the_one_shot_store(folder, single, tmp_path):
    out, logs = tmp_path / "launched", tmp_path / "logs"
    proc = subprocess.run(
        [PY, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs),
         PY, "-m", "se_viz.dataset", str(folder), "--out", str(out), "--workers", "0",
         *CLI_TINY], cwd=ROOT, capture_output=True, text=True, timeout=240)
    text = "".join(p.read_text() for p in sorted(logs.glob("workerlog.*")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + text[-3000:]
    assert "rank 1/2: computed 2 shard(s)" in text
    assert (out / STORE_FILE).read_bytes() == (single / STORE_FILE).read_bytes()
    query = ["atlas", "--block", "SE_4_6", "--channel", "3", "--top", "18", "--json"]
    runs = [subprocess.run([PY, "-m", "se_viz", query[0], str(o), *query[1:]], cwd=ROOT,
                           capture_output=True, text=True, timeout=60) for o in (single, out)]
    assert runs[0].returncode == runs[1].returncode == 0, runs[1].stderr
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout)


# --------------------------------------------------------------------------- command line


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(["atlas", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_top_json_is_the_api_answer_best_first(single, store, capsys):
    code, out, err = run_cli(capsys, str(single), "--block", "SE_4_6", "--channel", "3",
                             "--top", "4", "--json")
    assert code == EXIT_OK and err == ""
    rows = json.loads(out)
    hits = store.top("SE_4_6", 3, k=4)
    assert [(r["file"], r["class"], r["gate"], r["index"]) for r in rows] == \
        [(h.file, h.class_name, h.gate, h.index) for h in hits]
    assert [r["gate"] for r in rows] == sorted((r["gate"] for r in rows), reverse=True)
    code, out, _ = run_cli(capsys, str(single), "--block", "SE_4_6", "--channel", "3",
                           "--bottom", "--class", "plane", "--top", "2", "--json")
    rows = json.loads(out)
    assert [r["file"] for r in rows] == [h.file for h in store.top("SE_4_6", 3, 2, True,
                                                                  "plane")]
    code, out, _ = run_cli(capsys, str(single), "--block", "SE_4_6", "--channel", "3")
    assert code == EXIT_OK and out.splitlines()[0].startswith("top 10 of SE_4_6 channel 3")
    assert f"{hits[0].gate:.5f}  {hits[0].class_name}  {hits[0].file}" in out


def test_cli_like_captures_with_the_store_network(single, folder, captured, capsys):
    image = folder / "plane" / "0002.png"  # index 8
    code, out, err = run_cli(capsys, str(single), "--block", "SE_5_3", "--like", str(image),
                             "--top", "3", "--json")
    assert code == EXIT_OK, err
    rows = json.loads(out)
    assert rows[0]["file"] == "plane/0002.png" and rows[0]["similarity"] == pytest.approx(1)
    ref = cosine(captured["SE_5_3"], captured["SE_5_3"][8])
    assert_best_first([r["similarity"] for r in rows], ref)
    assert {"file", "class", "similarity"} <= rows[0].keys()


def test_unknown_block_channel_or_class_gets_one_line_listing_what_exists(single, capsys):
    cases = {("--block", "SE_9_9", "--channel", "0"):
             "no block 'SE_9_9' in this store; its blocks: SE_2_1, SE_2_2,",
             ("--block", "SE_2_1", "--channel", "32"):
             "channel 32 is out of range: SE_2_1 has 32 channels (0..31)",
             ("--block", "SE_2_1", "--channel", "-1"): "SE_2_1 has 32 channels (0..31)",
             ("--block", "SE_2_1", "--channel", "0", "--class", "cat"):
             "no class 'cat' in this store; its classes: goldfish, plane, pug"}
    for args, message in cases.items():
        code, out, err = run_cli(capsys, str(single), *args)
        assert code == EXIT_FAILED and out == "" and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, str(single), "--block", "SE_9_9", "--like", "x.png")
    assert code == EXIT_FAILED and "SE_5_3" in err  # checked before the network is built


def test_bad_arguments_are_usage_errors(single, capsys):
    for args in (("--block", "SE_2_1"), ("--block", "SE_2_1", "--channel", "1", "--like", "x"),
                 ("--block", "SE_2_1", "--like", "x.png", "--bottom"),
                 ("--block", "SE_2_1", "--channel", "1", "--weights", "w.safetensors"),
                 ("--block", "SE_2_1", "--channel", "1", "--top", "0")):
        with pytest.raises(SystemExit) as exc:
            cli_main(["atlas", str(single), *args])
        assert exc.value.code == EXIT_USAGE, args
    capsys.readouterr()


def test_python_api_argument_errors(store):
    with pytest.raises(DatasetError, match="k must be >= 1"):
        store.top("SE_2_1", 0, k=0)
    with pytest.raises(DatasetError, match="must be 32 finite gates"):
        store.nearest(np.ones(31), "SE_2_1")
    with pytest.raises(DatasetError, match="not all zero"):
        store.nearest(np.zeros(32), "SE_2_1")
    with pytest.raises(DatasetError, match="finite"):
        store.nearest(np.full(32, np.nan), "SE_2_1")


# --------------------------------------------------------------------------- bad stores


def test_bad_stores_are_refused_with_what_to_do(single, folder, tmp_path, capsys):
    with pytest.raises(DatasetError, match="holds no dataset run"):
        GateStore.open(tmp_path)
    out = tmp_path / "copy"
    shutil.copytree(single, out)
    (out / STORE_FILE).unlink()
    with pytest.raises(DatasetError, match=r"has no gates.parquet .*se-viz analyze"):
        GateStore.open(out)
    data = (single / STORE_FILE).read_bytes()
    (out / STORE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="is damaged"):
        GateStore.open(out)
    other = tmp_path / "other"  # another run (other files) of the same network
    analyze(folder, other, replace(TINY, limit_per_class=5), QUIET)
    shutil.copy(other / STORE_FILE, out / STORE_FILE)
    with pytest.raises(DatasetError, match="belongs to another run"):
        GateStore.open(out)
    (out / STORE_FILE).write_bytes(b"PAR1 not parquet PAR1")
    code, _, err = run_cli(capsys, str(out), "--block", "SE_2_1", "--channel", "0")
    assert code == EXIT_FAILED and "is damaged" in err


def test_a_store_of_another_network_is_refused_naming_both(store):
    store.check_network(make_tiny())  # the network that made it
    for other, differs in ((make_tiny(seed=1), "seed"), (make_tiny(width=16), "width"),
                           (make_tiny(num_classes=5), "classes"),
                           (make_tiny(reduction=4), "r")):
        with pytest.raises(DatasetError) as exc:
            store.check_network(other)
        text = str(exc.value)
        assert text.startswith("this store was made by se_resnet50_vd (r 16, 10 classes, "
                               "width 8, untrained weights, seed 0, 16 blocks); the network "
                               "given is se_resnet50_vd ("), text
        assert differs in re.search(r"\(([^()]*) differ\)", text).group(1).split(", "), text
    with pytest.raises(DatasetError, match="made by se_resnet50_vd .* given is se_resnet50 "):
        store.check_network(make_tiny("se_resnet50"))


def test_changed_weights_file_is_refused_naming_both(folder, tmp_path, capsys):
    from se_viz.engine.weights import export_state, save_safetensors

    weights = save_safetensors(export_state(make_tiny(seed=2)), tmp_path / "w.safetensors")
    out = tmp_path / "trained"
    analyze(folder, out, replace(TINY, weights=str(weights), limit_per_class=2), QUIET)
    image = folder / "pug" / "0000.png"
    code, text, err = run_cli(capsys, str(out), "--block", "SE_3_1", "--like", str(image))
    assert code == EXIT_OK and "pug/0000.png" in text.splitlines()[1], err
    sha = read_manifest(out)["network"]["weights_sha256"]
    save_safetensors(export_state(make_tiny(seed=3)), weights)  # the file changed since
    code, _, err = run_cli(capsys, str(out), "--block", "SE_3_1", "--like", str(image))
    assert code == EXIT_FAILED and f"made by se_resnet50_vd (r 16, 10 classes, width 8, " \
        f"weights {sha[:12]}" in err and "weights differ" in err
    weights.unlink()
    code, _, err = run_cli(capsys, str(out), "--block", "SE_3_1", "--like", str(image))
    assert code == EXIT_FAILED and "not there any more" in err and "--weights" in err


def test_moved_and_changed_files_are_named(single, folder, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)  # copy2 keeps size and mtime
    store = GateStore.open(single, root=moved)
    hits = store.top("SE_2_1", 4, k=18)
    assert {h.status for h in hits} == {"ok"}
    gone, touched = hits[0].file, hits[1].file
    (moved / gone).unlink()
    (moved / touched).write_bytes((moved / touched).read_bytes() + b"\0")
    status = {h.file: h.status for h in store.top("SE_2_1", 4, k=18)}
    assert status[gone] == "missing" and status[touched] == "changed"
    assert sum(s == "ok" for s in status.values()) == 16
    code, out, err = run_cli(capsys, str(single), "--root", str(moved), "--block", "SE_2_1",
                             "--channel", "4", "--top", "3")
    assert code == EXIT_FAILED and f"{gone}  [missing]" in out and f"{touched}  [changed]" in out
    assert f"2 listed file(s) moved, were deleted or changed" in err and gone in err
    code, out, err = run_cli(capsys, str(single), "--block", "SE_2_1", "--channel", "4")
    assert code == EXIT_OK and err == ""  # where it was analysed, all is well
