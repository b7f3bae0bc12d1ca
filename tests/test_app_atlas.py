"""The app's Channel atlas view (streamlit.testing.v1.AppTest, offline) on a gate store made
by the real `se_viz.dataset.analyze` with the app's narrow network (SE_VIZ_WIDTH=8, 1000
classes, 224 crops) over tests/test_dataset.py's three-class folder.

What the page lists is checked against `GateStore` queried here: the top and bottom images
(`top`), the per-class figure (`per_class`) and each photo's closest images (`nearest` with
the photo's gates captured here); the Overview's and the Block explorer's "open in the
atlas" buttons land on that block and channel; a store of another network is refused.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from se_viz import images
from se_viz.dataset import Settings, analyze
from se_viz.dataset.atlas import GateStore
from se_viz.engine import capture as engine
from se_viz.engine.build import build_model
from se_viz.errors import DatasetError

from .test_app import CAT, WIDTH, _no_exception, _texts, _upload, _view, fresh_app, spy_captures
from .test_dataset import QUIET, TINY, make_folder

APP_NET = Settings(weights=None, width=WIDTH, num_classes=1000, batch_size=6, shard_size=8)
BLOCK, CHANNEL = "SE_3_4", 5
K = 8  # the view's default k


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("atlas_images"))


@pytest.fixture(scope="module")
def results(image_folder, tmp_path_factory) -> Path:
    """A results folder of the app's own network (18 images, 3 shards)."""
    out = tmp_path_factory.mktemp("atlas_results")
    assert analyze(image_folder, out, APP_NET, QUIET).merged
    return out


@pytest.fixture(scope="module")
def other_results(image_folder, tmp_path_factory) -> Path:
    """A results folder of another network (10 classes, 32 x 32 crops)."""
    out = tmp_path_factory.mktemp("atlas_other")
    assert analyze(image_folder, out, TINY, QUIET).merged
    return out


@pytest.fixture(scope="module")
def store(results) -> GateStore:
    return GateStore.open(results)


@pytest.fixture(scope="module")
def narrow_model():
    return build_model("se_resnet50_vd", None, width=WIDTH)


@pytest.fixture
def at(monkeypatch) -> AppTest:
    return fresh_app(monkeypatch)


def _open(app: AppTest, folder: Path) -> None:
    app.text_input(key="atlas_results").input(str(folder))
    app.run()
    _no_exception(app)


def _atlas(app: AppTest, results: Path) -> None:
    """The cat photo, the results folder, the Channel atlas view."""
    _upload(app, ("cat.jpg", CAT))
    _open(app, results)
    _view(app, "Channel atlas")
    assert not app.error, _texts(app.error)


def _choose(app: AppTest, block: str, channel: int) -> None:
    app.selectbox(key="atlas_block").set_value(block)
    app.run()
    app.number_input(key=f"atlas_channel_{block}").set_value(channel)
    app.run()
    _no_exception(app)


def _captions(app: AppTest) -> list[list[str]]:
    """The captions of every image grid on the page, in page order."""
    return [grid.captions for grid in app.get("image")]


def _listed(hits, value) -> list[str]:
    """Captions as the view writes them for ``hits`` (all files present here)."""
    return [f"{h.file} · {h.class_name} · {value(h)}" for h in hits]


def _array(value) -> np.ndarray:
    """A plotly JSON array: a list, or {"dtype", "bdata"} (typed, base64)."""
    if not isinstance(value, dict):
        return np.asarray(value, dtype=np.float64)
    return np.frombuffer(base64.b64decode(value["bdata"]), np.dtype(value["dtype"])).astype(
        np.float64)


def _figure(app: AppTest, key: str) -> dict:
    found = [c for c in app.get("plotly_chart") if c.proto.id.endswith(f"fig_{key}")]
    assert len(found) == 1, [c.proto.id for c in app.get("plotly_chart")]
    return json.loads(found[0].proto.spec)


def _cat_gates(model) -> dict[str, np.ndarray]:
    cap = engine.capture(model, [images.decode_image(CAT)])
    return {b: g[0] for b, g in cap.gates.items()}


# ----------------------------------------------------------------------------- the view
def test_without_a_results_folder_the_view_says_how_to_make_one(at):
    _upload(at, ("cat.jpg", CAT))
    _view(at, "Channel atlas")
    assert "Open a results folder in the sidebar" in _texts(at.info)
    assert "se-viz analyze photos/ --out results/" in _texts(at.code)


def test_top_and_bottom_lists_equal_the_store_and_maps_are_computed_once(
        monkeypatch, at, results, store):
    runs: list[tuple] = []
    spy_captures(monkeypatch, lambda model, kw: runs.append(tuple(kw.get("features", ()))))
    _atlas(at, results)
    _choose(at, BLOCK, 0)
    runs.clear()
    _choose(at, BLOCK, CHANNEL)
    grids = _captions(at)
    top = store.top(BLOCK, CHANNEL, k=K)
    bottom = store.top(BLOCK, CHANNEL, k=K, bottom=True)
    assert grids[0] == _listed(top, lambda h: f"gate {h.gate:.3f}")
    assert grids[1] == _listed(bottom, lambda h: f"gate {h.gate:.3f}")
    assert all(grid.value[0] for grid in at.get("image")[:2])  # pictures, not just captions
    assert f"Top {K}: the highest gates of channel {CHANNEL}" in _texts(at.markdown)
    assert runs == [(BLOCK,)] * (2 * K // 4)  # the lists' 16 images, 4 at a time, one block
    at.run()  # a rerun draws the cached maps
    _no_exception(at)
    assert len(runs) == 2 * K // 4
    at.selectbox(key="atlas_class").set_value("pug")  # one class only
    at.run()
    _no_exception(at)
    assert _captions(at)[0] == _listed(store.top(BLOCK, CHANNEL, k=K, klass="pug"),
                                       lambda h: f"gate {h.gate:.3f}")
    assert all(" · pug · " in c for c in _captions(at)[0])


def test_per_class_figure_equals_the_store(at, results, store):
    _atlas(at, results)
    _choose(at, "SE_5_3", 200)
    box = _figure(at, "atlas_classes")["data"][0]
    assert box["type"] == "box"
    want = {s.class_name: s for s in store.per_class("SE_5_3", 200)}
    assert sorted(box["x"]) == sorted(want)
    for field, attr in (("q1", "q25"), ("median", "median"), ("q3", "q75"),
                        ("lowerfence", "min"), ("upperfence", "max"), ("mean", "mean"),
                        ("sd", "std")):
        np.testing.assert_allclose(_array(box[field]),
                                   [getattr(want[x], attr) for x in box["x"]], rtol=1e-6,
                                   err_msg=field)
    medians = _array(box["median"])
    assert (np.diff(medians) <= 0).all()  # highest median first


def test_closest_images_equal_nearest_with_the_photos_gates(at, results, store, narrow_model):
    _atlas(at, results)
    _choose(at, BLOCK, CHANNEL)
    gates = _cat_gates(narrow_model)[BLOCK]
    want = store.nearest(gates, BLOCK, k=K)
    assert _captions(at)[2] == _listed(want, lambda h: f"similarity {h.similarity:.3f}")
    assert "Closest to **cat.jpg**" in _texts(at.caption)
    assert f"cat.jpg {gates[CHANNEL]:.3f}" in _texts(at.caption)  # the photo's own gate


@pytest.mark.parametrize("where", ["Overview", "Block explorer"])
def test_open_in_the_atlas_sets_block_and_channel(at, results, store, where):
    _upload(at, ("cat.jpg", CAT))
    _open(at, results)
    _view(at, where)
    block, channel = "SE_4_2", 7
    if where == "Overview":
        at.selectbox(key="overview_jump_block").set_value(block)
        prefix = "overview_jump"
    else:
        at.selectbox(key="block").set_value(block)
        prefix = "explorer_jump"
    at.run()
    at.number_input(key=f"{prefix}_channel_{block}").set_value(channel)
    at.run()
    button = at.button(key=f"{prefix}_open")
    assert button.label == f"Open channel {channel} of {block} in the atlas"
    button.click()
    at.run()
    _no_exception(at)
    assert at.session_state["view"] == "Channel atlas"
    assert at.selectbox(key="atlas_block").value == block
    assert at.number_input(key=f"atlas_channel_{block}").value == channel
    assert _captions(at)[0] == _listed(store.top(block, channel, k=K),
                                       lambda h: f"gate {h.gate:.3f}")


# ----------------------------------------------------------------------------- refusals
def test_a_store_of_another_network_is_refused_naming_both(at, other_results, narrow_model):
    _upload(at, ("cat.jpg", CAT))
    _open(at, other_results)
    _view(at, "Channel atlas")
    with pytest.raises(DatasetError) as refused:
        GateStore.open(other_results).check_network(narrow_model)
    errors = _texts(at.error)
    assert str(refused.value) in errors, errors
    assert "10 classes" in errors and "1000 classes" in errors, errors  # both networks
    assert not at.get("image")  # nothing listed from the other network's store
    _view(at, "Overview")  # the rest of the app still works
    assert "Top-5 classes" in _texts(at.markdown)


def test_a_folder_without_a_store_shows_the_error_and_the_app_works(at, tmp_path):
    _upload(at, ("cat.jpg", CAT))
    _open(at, tmp_path)
    assert "holds no dataset run" in _texts(at.error)
    _view(at, "Channel atlas")
    assert "Open a results folder in the sidebar" in _texts(at.info)
