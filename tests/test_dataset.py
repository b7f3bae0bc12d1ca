"""Dataset-scale analysis: exact sums, sharding across ranks, resume, bounded memory, report."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from se_viz.cli import EXIT_FAILED
from se_viz.cli import main as cli_main
from se_viz import dataset
from se_viz.dataset import decode, shards
from se_viz.analysis.dataset_stats import load_stats, typicality
from se_viz.dataset import RunOptions, Settings, analyze, list_images
from se_viz.errors import DatasetError, StatsFileError
from se_viz.plots.dataset import FIG6_TITLE, FIG7_TITLE, SAT_TITLE, SPEC_TITLE

from .conftest import make_tiny

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TINY = Settings(weights=None, width=8, num_classes=10, image_size=32, batch_size=4,
                shard_size=5)
QUIET = RunOptions(workers=0, progress=False)
CLI_TINY = ["--width", "8", "--num-classes", "10", "--image-size", "32", "--batch-size", "4",
            "--shard-size", "5", "--no-progress"]
COLOURS = {"goldfish": (220, 120, 20), "plane": (120, 150, 230), "pug": (160, 130, 100)}


def make_folder(root: Path, per_class: int = 6, size: int = 40, seed: int = 0,
                colours: dict = COLOURS) -> Path:
    """ImageFolder of PNGs whose colour depends on the class."""
    rng = np.random.default_rng(seed)
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 35, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:04d}.png")
    return root


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def assert_same_outputs(a: Path, b: Path) -> None:
    """stats.npz bit-identical (meta aside: it names the folder), per_image.csv and the gate
    store (gates.parquet) identical."""
    x, y = npz_arrays(a / "stats.npz"), npz_arrays(b / "stats.npz")
    assert x.keys() == y.keys()
    for k in x:
        if k != "meta":
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert (a / "per_image.csv").read_bytes() == (b / "per_image.csv").read_bytes()
    assert (a / "gates.parquet").read_bytes() == (b / "gates.parquet").read_bytes()


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "se_viz.dataset", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def single(folder, tmp_path_factory) -> Path:
    """One uninterrupted single-process run over ``folder`` (the reference)."""
    out = tmp_path_factory.mktemp("single")
    result = analyze(folder, out, TINY, QUIET)
    assert result.merged and result.complete and result.computed_shards == 4
    return out


# --------------------------------------------------------------------------- numbers


def test_class_means_and_stds_equal_hand_average_of_captures(folder, single):
    from se_viz import analysis
    from se_viz.engine.capture import capture
    from se_viz.images import load_image

    stats = load_stats(single / "stats.npz")
    files = list_images(folder)
    assert stats.classes == ("goldfish", "plane", "pug") == files.classes
    model = make_tiny()  # same arch, width, classes and seed as TINY
    pre = replace(model.preprocessing, resize=32, crop=32)
    cap = capture(model, [load_image(folder / f) for f in files.files], preprocessing=pre,
                  batch_size=7)  # other batches than the run: equal up to float32 rounding
    np.testing.assert_array_equal(stats.counts, [6, 6, 6])
    assert stats.all_count == 18 and stats.meta["ddof"] == 0 and stats.meta["untrained"]
    for block, g in cap.gates.items():
        g = g.astype(np.float64)
        for k in range(3):
            mine = g[files.labels == k]
            np.testing.assert_allclose(stats.means[block][k], mine.mean(axis=0), atol=2e-6)
            np.testing.assert_allclose(stats.stds[block][k], mine.std(axis=0, ddof=0), atol=2e-6)
        np.testing.assert_allclose(stats.all_mean[block], g.mean(axis=0), atol=2e-6)
        np.testing.assert_allclose(stats.all_std[block], g.std(axis=0), atol=2e-6)
    from se_viz.analysis.dataset_stats import class_specificity
    np.testing.assert_allclose(class_specificity(stats),
                               analysis.class_specificity(cap.gates, files.labels), atol=1e-4)

    rows = list(csv.DictReader(open(single / "per_image.csv", encoding="utf-8")))
    assert [r["file"] for r in rows] == list(files.files)
    probs = cap.probabilities
    for i, row in enumerate(rows):
        assert row["class"] == files.classes[files.labels[i]]
        assert int(row["pred_index"]) == probs[i].argmax()
        assert row["pred_name"] == f"class {probs[i].argmax()}"
        assert float(row["top1_prob"]) == pytest.approx(probs[i].max(), abs=2e-6)
        assert float(row["SE_5_2_mean"]) == pytest.approx(cap.gates["SE_5_2"][i].mean(), abs=2e-6)


def test_parquet_table_equals_the_csv(single):
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(single / "per_image.parquet").to_pylist()
    rows = list(csv.DictReader(open(single / "per_image.csv", encoding="utf-8")))
    assert len(table) == len(rows) == 18
    for got, want in zip(table, rows):
        assert got.keys() == want.keys()
        assert got["file"] == want["file"] and got["SE_4_6_top5"] == want["SE_4_6_top5"]
        assert got["pred_index"] == int(want["pred_index"])
        assert got["top1_prob"] == float(want["top1_prob"])


def test_image_rows_match_the_analysis_definitions():
    from se_viz import analysis

    rng = np.random.default_rng(1)
    gates = [rng.uniform(0, 1, (3, 40)), np.zeros((3, 3)), rng.uniform(0, 1, (3, 1))]
    gates[0][1, 5:9] = 0.999  # ties at the top: stable order
    probs = rng.dirichlet(np.ones(10), 3)
    rows = shards.image_rows(np.arange(3), gates, probs)
    np.testing.assert_array_equal(rows["pred"], probs.argmax(axis=1))
    for j, g in enumerate(gates):
        for i in range(3):
            assert rows["block_entropy"][i, j] == pytest.approx(
                analysis.normalized_entropy(g[i]), abs=1e-6)
            top = rows["top5"][i, j]
            np.testing.assert_array_equal(top[top >= 0], analysis.top_channels(g[i], 5))
    assert (rows["top5"][:, 2, 1:] == -1).all()  # one channel: padded


def test_typicality_against_class_and_all_images(single):
    stats = load_stats(single / "stats.npz")
    mean = {b: stats.means[b][1] for b in stats.blocks}
    t = typicality(stats, mean, "Plane")  # loose name match
    assert t["class"] == "plane" and t["baseline"] == "class" and t["count"] == 6
    assert all(z == pytest.approx(0, abs=1e-12) for z in t["mean_abs_z"].values())
    assert all(c == pytest.approx(1) for c in t["cosine"].values())
    shifted = {b: np.clip(m + 0.05, 0, 1) for b, m in mean.items()}
    assert typicality(stats, shifted, 1)["mean_abs_z"]["SE_2_1"] > 0
    fallback = typicality(stats, {"SE_2_1": stats.all_mean["SE_2_1"]}, "tench")
    assert fallback["class"] is None and fallback["baseline"] == "all images"
    assert fallback["count"] == 18 and fallback["mean_abs_z"]["SE_2_1"] == pytest.approx(0)
    with pytest.raises(ValueError, match="channels"):
        typicality(stats, {"SE_2_1": np.zeros(7)}, 0)
    with pytest.raises(ValueError, match="not in this stats file"):
        typicality(stats, {"SE_9_9": np.zeros(7)}, 0)


def test_load_stats_refuses_bad_and_foreign_files(tmp_path, single):
    with pytest.raises(StatsFileError, match="does not exist"):
        load_stats(tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(StatsFileError, match="not a readable stats file"):
        load_stats(tmp_path / "text.npz")
    np.savez(tmp_path / "foreign.npz", weight=np.zeros(3))
    with pytest.raises(StatsFileError, match="not a se_viz dataset stats file"):
        load_stats(tmp_path / "foreign.npz")
    np.savez(tmp_path / "pickled.npz", format=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(StatsFileError):
        load_stats(tmp_path / "pickled.npz")  # never unpickled
    with pytest.raises(StatsFileError, match="not a se_viz dataset stats file"):
        load_stats(next((single / "shards").glob("shard_*.npz")))
    damaged = npz_arrays(single / "stats.npz")
    damaged["SE_3_1_std"] = damaged["SE_3_1_std"][:, :3]
    np.savez(tmp_path / "damaged.npz", **damaged)
    with pytest.raises(StatsFileError, match="damaged or incomplete"):
        load_stats(tmp_path / "damaged.npz")
    data = (single / "stats.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(StatsFileError):
        load_stats(tmp_path / "truncated.npz")


# --------------------------------------------------------------------------- listing


def test_listing_is_imagefolder_sorted_and_limited(tmp_path):
    root = make_folder(tmp_path / "set", per_class=3, colours={"b": (0, 0, 0), "a": (9, 9, 9)})
    (root / "a" / "deeper").mkdir()
    shutil.copy(root / "a" / "0000.png", root / "a" / "deeper" / "x.PNG")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".hidden.png").write_bytes(b"")
    (root / ".cache").mkdir()
    files = list_images(root)
    assert files.classes == ("a", "b")
    assert files.files == ("a/0000.png", "a/0001.png", "a/0002.png", "a/deeper/x.PNG",
                           "b/0000.png", "b/0001.png", "b/0002.png")
    np.testing.assert_array_equal(files.labels, [0, 0, 0, 0, 1, 1, 1])
    assert list_images(root, limit_per_class=2).files == ("a/0000.png", "a/0001.png",
                                                          "b/0000.png", "b/0001.png")
    flat = make_folder(tmp_path / "flat", per_class=2, colours={"ignored": (1, 2, 3)})
    for f in (flat / "ignored").iterdir():
        f.rename(flat / f.name)
    assert list_images(flat).classes == ("flat",)  # images directly in DIR: one class
    with pytest.raises(DatasetError, match="no images"):
        list_images(flat / "ignored")
    with pytest.raises(DatasetError, match="not a folder"):
        list_images(tmp_path / "missing")


# --------------------------------------------------------------------------- distributed


def test_two_ranks_give_exactly_the_single_process_result(folder, single, tmp_path):
    out = tmp_path / "two"
    early = RunOptions(workers=0, progress=False, rank=0, world=2, merge_timeout=0)
    with pytest.raises(DatasetError, match="shards are missing"):  # rank 1 not done yet
        analyze(folder, out, TINY, early)
    r1 = analyze(folder, out, TINY, replace(QUIET, rank=1, world=2))
    assert (r1.computed_shards, r1.reused_shards, r1.merged) == (2, 0, False)  # shards 1, 3
    r0 = analyze(folder, out, TINY, early)
    assert (r0.computed_shards, r0.reused_shards, r0.merged) == (0, 2, True)  # done before
    assert_same_outputs(single, out)


def test_rank_and_world_come_from_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("PADDLE_TRAINER_ID", raising=False)
    monkeypatch.delenv("PADDLE_TRAINERS_NUM", raising=False)
    assert dataset.distributed_rank() == (0, 1)
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    assert dataset.distributed_rank() == (1, 2)
    monkeypatch.setenv("PADDLE_TRAINER_ID", "2")
    with pytest.raises(DatasetError, match="outside"):
        dataset.distributed_rank()


@pytest.mark.slow
def test_paddle_launcher_with_two_cpu_processes_equals_single_run(folder, single, tmp_path):
    out, logs = tmp_path / "launched", tmp_path / "logs"
    proc = subprocess.run(
        [PY, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs),
         PY, "-m", "se_viz.dataset", str(folder), "--out", str(out), "--workers", "1",
         *CLI_TINY], cwd=ROOT, capture_output=True, text=True, timeout=240)
    text = "".join(p.read_text() for p in sorted(logs.glob("workerlog.*")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + text[-3000:]
    assert "rank 0/2: computed 2 shard(s)" in text and "rank 1/2: computed 2 shard(s)" in text
    assert_same_outputs(single, out)


# --------------------------------------------------------------------------- resume


def shard_times(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard_*.npz")}


def test_interrupted_run_resumes_without_recomputing(folder, single, tmp_path):
    out = tmp_path / "resumed"
    first = analyze(folder, out, TINY, replace(QUIET, max_shards=2))
    assert (first.computed_shards, first.complete, first.merged) == (2, False, False)
    assert not (out / "stats.npz").exists()
    before = shard_times(out)
    assert sorted(before) == ["shard_00000.npz", "shard_00001.npz"]
    second = analyze(folder, out, TINY, QUIET)
    assert (second.computed_shards, second.reused_shards, second.merged) == (2, 2, True)
    after = shard_times(out)
    assert {k: after[k] for k in before} == before  # finished shards were not rewritten
    assert_same_outputs(single, out)
    again = analyze(folder, out, TINY, QUIET)
    assert (again.computed_shards, again.reused_shards) == (0, 4)


def test_resume_with_other_settings_or_files_refuses(folder, single, tmp_path):
    out = tmp_path / "refuse"
    shutil.copytree(single, out)
    with pytest.raises(DatasetError, match=r"batch_size: 4 then, 8 now.*new --out"):
        analyze(folder, out, replace(TINY, batch_size=8), QUIET)
    with pytest.raises(DatasetError, match="seed"):
        analyze(folder, out, replace(TINY, seed=1), QUIET)
    with pytest.raises(DatasetError, match=r"image list changed \(18 files then, 15 now\)"):
        analyze(folder, out, replace(TINY, limit_per_class=5), QUIET)
    assert_same_outputs(single, out)  # nothing was touched


def test_merge_only_rewrites_outputs_from_shards(single, tmp_path):
    out = tmp_path / "merge"
    shutil.copytree(single, out)
    for name in ("stats.npz", "per_image.csv", "report.html"):
        (out / name).unlink()
    assert cli_main(["analyze", str(tmp_path), "--out", str(out), "--merge-only"]) == 0
    assert_same_outputs(single, out)
    (out / "shards" / "shard_00002.npz").unlink()
    assert cli_main(["analyze", str(tmp_path), "--out", str(out), "--merge-only"]) == 1


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_result(tmp_path):
    data = make_folder(tmp_path / "data", per_class=120, size=32)
    args = [str(data), "--out", str(tmp_path / "out"), "--workers", "0", *CLI_TINY]
    proc = subprocess.Popen([PY, "-m", "se_viz.dataset", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (tmp_path / "out" / "shards" / "shard_00003.npz").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the kill"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = shard_times(tmp_path / "out")
    if len(before) == 72:
        pytest.skip("the run finished before it could be killed")
    done = cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"computed {72 - len(before)} shard(s), reused {len(before)}" in done.stdout
    after = shard_times(tmp_path / "out")
    assert {k: after[k] for k in before} == before
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == sorted(after)
    reference = analyze(data, tmp_path / "ref", TINY, QUIET)
    assert reference.computed_shards == 72
    assert_same_outputs(tmp_path / "ref", tmp_path / "out")


# --------------------------------------------------------------------------- files, memory


def test_bad_files_are_skipped_listed_and_exit_non_zero(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=3)
    (data / "pug" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (data / "plane" / "fake.jpg").write_text("not a jpeg")
    (data / "plane" / "empty.png").write_bytes(b"")
    code = cli_main(["analyze", str(data), "--out", str(tmp_path / "out"), "--workers", "1",
                     *CLI_TINY, "--shard-size", "2"])  # shard 3 = plane/empty.png, plane/fake.jpg
    all_bad = npz_arrays(tmp_path / "out" / "shards" / "shard_00003.npz")
    assert all_bad["class_ids"].size == 0 and all_bad["bad_index"].tolist() == [6, 7]
    assert all_bad["index"].size == 0 and all_bad["block_mean"].shape == (0, 16)
    assert code == EXIT_FAILED == 1
    err = capsys.readouterr().err
    assert "3 file(s) could not be used" in err and "pug/0001.png" in err
    lines = (tmp_path / "out" / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["plane/empty.png", "plane/fake.jpg",
                                                       "pug/0001.png"]
    assert "is empty" in lines[0] and "truncated or corrupt" in lines[2]
    stats = load_stats(tmp_path / "out" / "stats.npz")
    np.testing.assert_array_equal(stats.counts, [3, 3, 2])
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_image.csv", encoding="utf-8")))
    assert len(rows) == 8 and "pug/0001.png" not in {r["file"] for r in rows}
    assert "Skipped files (3)" in (tmp_path / "out" / "report.html").read_text()


def test_a_folder_without_any_usable_image_fails_clearly(tmp_path, capsys):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "x.png").write_bytes(b"junk")
    code = cli_main(["analyze", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *CLI_TINY])
    assert code == 1 and "none of the 1 files could be used" in capsys.readouterr().err
    assert (tmp_path / "out" / "skipped.txt").read_text().startswith("a/x.png\t")
    assert not (tmp_path / "out" / "stats.npz").exists()


def crash_on_purpose(paths, pre):
    """Decoder task for the test below: a file named crash*.png kills the worker process."""
    if any("crash" in Path(p).name for p in paths):
        os._exit(3)
    return decode.decode_files(paths, pre)


def test_a_file_that_kills_a_worker_is_skipped_and_the_run_goes_on(tmp_path):
    from se_viz.images import Preprocessing

    data = make_folder(tmp_path / "data", per_class=4, colours={"a": (1, 2, 3)})
    shutil.copy(data / "a" / "0000.png", data / "a" / "crash.png")
    paths = [str(p) for p in sorted((data / "a").iterdir())]  # 0000..0003, crash
    pre = Preprocessing(resize=32, crop=32)
    batches = [(i, paths[i:i + 2]) for i in range(0, 5, 2)]
    with decode.Decoder(1, pre, task=crash_on_purpose) as decoder:
        results = list(decoder.map(batches))
    assert [tag for tag, _ in results] == [0, 2, 4]
    assert [r[1] for _, r in results] == [[0, 1], [0, 1], []]
    assert "crashed the image decoder" in results[2][1][2][0][1]
    np.testing.assert_array_equal(results[0][1][0], decode.decode_files(paths[:2], pre)[0])


GEN = """
import sys, numpy as np
from pathlib import Path
from PIL import Image
root, n = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    d = root / f"c{i % 4}"
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(d / f"{i:05d}.png")
"""
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    peaks = {}
    for n in (100, 1500):
        subprocess.run([PY, "-c", GEN, str(tmp_path / f"d{n}"), str(n)], check=True)
        cmd = [PY, "-m", "se_viz.dataset", str(tmp_path / f"d{n}"), "--out",
               str(tmp_path / f"o{n}"), "--workers", "1", "--width", "8", "--num-classes", "10",
               "--image-size", "48", "--batch-size", "16", "--shard-size", "64", "--no-progress"]
        code, kib = subprocess.run([PY, "-c", PEAK, *cmd], cwd=ROOT, capture_output=True,
                                   text=True, check=True, timeout=180).stdout.split()
        assert code == "0"
        peaks[n] = int(kib) / 1024
        assert load_stats(tmp_path / f"o{n}" / "stats.npz").all_count == n
    # kept inputs would add 1400 * 27 KiB = 37 MiB, kept gates 1400 * 7.4 KiB = 10 MiB
    assert peaks[1500] < peaks[100] + 8, peaks


def test_library_modules_do_not_import_paddle_so_workers_stay_light():
    code = ("import sys, se_viz.dataset, se_viz.dataset.report; "
            "print('paddle' in sys.modules, 'plotly' in sys.modules)")
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- report


def test_report_is_one_standalone_html_with_the_four_views(single):
    from plotly.offline import get_plotlyjs

    text = (single / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count(get_plotlyjs()[:400]) == 1  # plotly.js inlined exactly once
    assert not re.search(r"<script[^>]+src=", text)  # nothing fetched from a CDN
    assert text.count("Plotly.newPlot(") == 4
    texts = [json.loads(t) for t in re.findall(r'"text":("(?:[^"\\]|\\.)*")', text)]
    for title in (FIG6_TITLE, FIG7_TITLE, SPEC_TITLE, SAT_TITLE):
        assert texts.count(title) == 1, title
    for block in ("SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1", "SE_5_2", "SE_5_3"):
        assert texts.count(block) == 2  # a panel in the Fig. 6 and in the Fig. 7 view
    assert "Untrained" in text and "goldfish, plane, pug" in text


@pytest.mark.slow
def test_report_renders_in_chromium_without_errors(single):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no /usr/bin/chromium")
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto((single / "report.html").as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length == 4")
            assert page.locator(".gtitle").count() >= 4
        finally:
            browser.close()
    assert errors == []
