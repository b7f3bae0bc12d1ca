"""The app's Class baseline view: a stats.npz from `se-viz analyze` as the baseline for an image.

The stats are made by the real `se_viz.dataset.analyze` on a small folder, with the app's
narrow model (SE_VIZ_WIDTH=8, 1000 classes, 224 crops); one class folder is named by the
WordNet id of the class the narrow model predicts for the cat photo, so the view must pick
it by itself. What the page says is checked against `report.typicality` computed here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from se_viz import images, labels
from se_viz.analysis import dataset_stats as report
from se_viz.plots.dataset import typicality_figure
from se_viz.engine import capture as engine
from se_viz.engine.build import build_model
from se_viz.dataset import RunOptions, Settings, analyze

from .test_app import CAT, WIDTH, _no_exception, _texts, _upload, _view, fresh_app

APP_NET = Settings(weights=None, width=WIDTH, num_classes=1000, batch_size=4)


@pytest.fixture
def at(monkeypatch):
    return fresh_app(monkeypatch)


@pytest.fixture(scope="module")
def narrow_model():
    """The app's untrained narrow model, built independently (same arch, width and seed)."""
    return build_model("se_resnet50_vd", None, width=WIDTH)


def _gates(model, data: bytes) -> tuple[dict[str, np.ndarray], int]:
    cap = engine.capture(model, [images.decode_image(data)])
    return {b: g[0] for b, g in cap.gates.items()}, int(cap.top_k(1)[0][0, 0])


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory, narrow_model) -> tuple[Path, str]:
    """(stats.npz of a 3-class folder, the class folder matching the cat's prediction)."""
    _, top = _gates(narrow_model, CAT)
    matched = labels.imagenet_wnids()[top]
    root = tmp_path_factory.mktemp("baseline_images")
    rng = np.random.default_rng(0)
    for k, name in enumerate([matched, "plane", "pug"]):
        (root / name).mkdir()
        for i in range(3):
            base = np.array([200, 120, 40]) if k == 0 else rng.integers(0, 255, 3)
            pixels = np.clip(base + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    out = tmp_path_factory.mktemp("baseline_out")
    result = analyze(root, out, APP_NET, RunOptions(workers=0, progress=False))
    assert result.complete
    return out / "stats.npz", matched


def _open_stats(app, path: Path) -> None:
    app.file_uploader(key="stats_upload").set_value(
        (path.name, path.read_bytes(), "application/octet-stream"))
    app.run()


def _summary(t: dict) -> str:
    z = t["mean_abs_z"]
    worst, best = max(z, key=z.get), min(z, key=z.get)
    return (f"Least typical block: **{worst}** (mean |z| {z[worst]:.2f}); most typical: "
            f"**{best}** ({z[best]:.2f}).")


def test_without_stats_the_view_says_how_to_make_them(at):
    _upload(at, ("cat.jpg", CAT))
    _view(at, "Class baseline")
    assert "Open a dataset's statistics" in _texts(at.info)
    assert any("se-viz analyze" in c.value for c in at.code)


def test_baseline_defaults_to_the_predicted_class_and_matches_typicality(at, narrow_model,
                                                                         stats_file):
    path, matched = stats_file
    _upload(at, ("cat.jpg", CAT))
    _open_stats(at, path)
    _view(at, "Class baseline")
    stats = report.load_stats(path)
    gates, top = _gates(narrow_model, CAT)
    box = at.selectbox(key="baseline_class_0")
    assert box.value == matched  # found by WordNet id, not chosen by hand
    assert list(box.options) == ["(all images of the dataset)", *stats.classes]
    assert f"Predicted: **{labels.label_for(top)}**" in _texts(at.caption)
    shown = _texts(at.markdown)
    assert "Baseline: **3 classes, 9 images**" in shown
    assert _summary(report.typicality(stats, gates, matched)) in shown

    box.set_value("(all images of the dataset)").run()
    _no_exception(at)
    everyone = report.typicality(stats, gates, None)
    assert everyone["baseline"] == "all images" and everyone["count"] == 9
    assert _summary(everyone) in _texts(at.markdown)
    at.selectbox(key="baseline_class_0").set_value("pug").run()
    assert _summary(report.typicality(stats, gates, "pug")) in _texts(at.markdown)


def test_a_file_that_is_not_stats_is_refused_by_name_and_the_page_works(at):
    buf = io.BytesIO()
    np.savez(buf, something=np.zeros(3))
    _upload(at, ("cat.jpg", CAT))
    at.file_uploader(key="stats_upload").set_value(("other.npz", buf.getvalue(),
                                                    "application/octet-stream")).run()
    _no_exception(at)
    assert "'other.npz' is not a se_viz dataset stats file" in _texts(at.error)
    assert len(at.table) == 1  # the overview's top-5 still there
    _view(at, "Class baseline")
    assert "Open a dataset's statistics" in _texts(at.info)


def test_stats_of_another_network_are_refused_with_the_reason(at, tmp_path, stats_file):
    path, _ = stats_file
    stats = report.load_stats(path)
    wider = {b: np.concatenate([m, m], axis=1) for b, m in stats.means.items()}
    other = report.DatasetStats(stats.classes, stats.counts, wider, wider,
                                {b: m[0] for b, m in wider.items()},
                                {b: m[0] for b, m in wider.items()}, stats.all_count,
                                {"arch": "se_resnet50_vd", "width": 16})
    target = tmp_path / "wide_stats.npz"
    np.savez(target, **report.stats_arrays(other))
    _upload(at, ("cat.jpg", CAT))
    at.text_input(key="stats_path").set_value(str(target)).run()
    _view(at, "Class baseline")
    errors = _texts(at.error)
    assert "channels" in errors and "another model" in errors
    at.text_input(key="stats_path").set_value(str(tmp_path / "missing.npz")).run()
    _no_exception(at)
    assert "does not exist" in _texts(at.error)


def test_match_class_by_wordnet_id_name_or_index(stats_file):
    path, matched = stats_file
    stats = report.load_stats(path)
    top = labels.imagenet_wnids().index(matched)
    assert report.match_class(stats, top) == stats.classes.index(matched)
    named = report.DatasetStats(("Golden_Retriever", "7"), stats.counts[:2], {}, {}, {}, {}, 0)
    assert report.match_class(named, labels.imagenet_labels().index("golden retriever")) == 0
    assert report.match_class(named, 7) == 1  # folder "7": class index 7
    assert report.match_class(named, 3) is None
    assert report.match_class(named, 7, num_classes=10) == 1  # not ImageNet: index only


def test_typicality_figure_shows_both_measures_per_block(stats_file, narrow_model):
    path, matched = stats_file
    stats = report.load_stats(path)
    gates, _ = _gates(narrow_model, CAT)
    t = report.typicality(stats, gates, matched)
    fig = typicality_figure(t)
    bars, line = fig.data
    assert list(bars.x) == list(line.x) == list(gates)
    np.testing.assert_allclose(bars.y, [t["mean_abs_z"][b] for b in gates])
    np.testing.assert_allclose(line.y, [t["cosine"][b] for b in gates])
    assert line.yaxis == "y2" and f"class '{matched}'" in fig.layout.title.text
