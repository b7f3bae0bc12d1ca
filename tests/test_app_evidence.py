"""The app's "Class evidence" view and the overview's attribution colouring, driven through
streamlit.testing.v1.AppTest on the narrow demo model (SE_VIZ_WIDTH=8) and on an untrained
LCNet, offline. What the page draws is checked against `se_viz.explain` and
`se_viz.deletion` computed here on the same weights and photo; the app's calls to explain
are counted (it runs only when asked, once per image, network and class).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import se_viz
from se_viz import images, labels
from se_viz.app.views import class_evidence as view
from se_viz.app.views.overview import COLOURS
from se_viz.arch import SPECS
from se_viz.blocks import pick
from se_viz.engine import evidence as engine
from se_viz.engine.build import build_model
from se_viz.plots.evidence import upsample

from .test_app import WIDTH, _no_exception, _texts, _view, fresh_app

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "cat_chelsea.jpg"
CAT = (ROOT / "assets" / SAMPLE).read_bytes()
LABEL = "Class evidence"


@pytest.fixture(scope="module")
def narrow_model():
    """The app's untrained narrow model, built independently (same arch, width, seed)."""
    return build_model("se_resnet50_vd", None, width=WIDTH)


@pytest.fixture
def explains(monkeypatch) -> list[object]:
    """The target of every se_viz.explain the app calls (the engine's own calls, inside
    deletion, are not counted)."""
    calls: list[object] = []

    def spy(model, images_, target=None, *args, **kw):
        calls.append(target)
        return engine.explain(model, images_, target, *args, **kw)

    monkeypatch.setattr(se_viz, "explain", spy, raising=False)
    return calls


@pytest.fixture
def at(monkeypatch, explains) -> AppTest:
    """The narrow model's app with the sample photo picked in the sidebar, on the view."""
    app = fresh_app(monkeypatch)
    app.multiselect(key="samples").set_value([SAMPLE])
    app.run()
    _no_exception(app)
    assert explains == []  # nothing computed before the view is opened
    _view(app, LABEL)
    return app


def _array(value) -> np.ndarray:
    """A plotly JSON array: a list, or {"dtype", "bdata"[, "shape"]} (typed, base64)."""
    if not isinstance(value, dict):
        return np.asarray(value, dtype=np.float64)
    out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    shape = value.get("shape")
    if shape:
        out = out.reshape([int(n) for n in str(shape).split(",")])
    return out.astype(np.float64)


def _figure(app: AppTest, key: str) -> dict:
    """The figure drawn by ``chart(..., key)``."""
    found = [c for c in app.get("plotly_chart") if c.proto.id.endswith(f"fig_{key}")]
    assert len(found) == 1, [c.proto.id for c in app.get("plotly_chart")]
    return json.loads(found[0].proto.spec)


def _trace(fig: dict, kind: str) -> dict:
    return next(t for t in fig["data"] if t["type"] == kind)


def _cam_z(app: AppTest, kind: str) -> np.ndarray:
    return _array(_trace(_figure(app, f"ev_{kind}"), "heatmap")["z"])


def _direct(model, target=None, blocks=None):
    """explain on the cat photo, as the engine's own path decodes and crops it."""
    return engine.explain(model, [images.decode_image(CAT)], target, blocks)


def _close(drawn: np.ndarray, wanted: np.ndarray) -> None:
    assert drawn.shape == wanted.shape
    np.testing.assert_allclose(drawn, wanted, rtol=1e-4,
                               atol=1e-5 * max(float(np.abs(wanted).max()), 1e-12))


# ----------------------------------------------------------------------------- the view
def test_view_draws_for_the_sample_photo(at, explains, narrow_model):
    """The top-1 class at the default block: heading, Grad-CAM and LayerCAM over the crop,
    the gate vs attribution scatter, the top channels' maps; computed once, and a block
    change or an opacity change reruns nothing (every block's CAM came with the pass)."""
    ev = _direct(narrow_model)
    top1 = int(ev.target[0])
    block = pick(narrow_model.info.blocks)
    name = labels.label_for(top1, 1000)
    assert f"**Evidence for '{name}'** (class {top1}," in _texts(at.markdown)
    assert f"at **{block}**" in _texts(at.markdown)
    assert explains == [top1]
    _close(_cam_z(at, "gradcam"), upsample(ev.cam[block][0], (224, 224)))
    _close(_cam_z(at, "layercam"), upsample(ev.layercam[block][0], (224, 224)))
    assert _trace(_figure(at, "ev_gradcam"), "image")  # the crop under the map
    scatter = _figure(at, "ev_attribution")["data"][0]
    _close(_array(scatter["x"]), ev.gates[block][0])
    _close(_array(scatter["y"]), ev.attribution(block)[0])
    assert "LayerCAM weights each position" in _texts(at.caption)
    assert "Top-6 channels by attribution" in _texts(at.markdown)
    first = narrow_model.info.blocks[0].name
    at.selectbox(key="ev_block").set_value(first)
    at.slider(key="ev_opacity").set_value(0.8)
    at.run()
    _no_exception(at)
    assert explains == [top1]
    assert _trace(_figure(at, "ev_gradcam"), "heatmap")["opacity"] == pytest.approx(0.8)
    _close(_cam_z(at, "gradcam"), upsample(ev.cam[first][0], (224, 224)))


def test_another_class_changes_the_target_and_the_cam(at, explains, narrow_model):
    """A class found by searching all names: the heading names it, and the CAMs and the
    attributions equal se_viz.explain computed here for that class."""
    top1 = at.selectbox(key="ev_top").value
    assert len(at.selectbox(key="ev_top").options) == 5 and explains == [top1]
    at.radio(key="ev_source").set_value(view.SOURCES[1])
    at.run()
    assert at.selectbox(key="ev_class").value == top1 and explains == [top1]  # cached
    target = 417 if top1 != 417 else 418
    at.selectbox(key="ev_class").set_value(target)
    at.run()
    _no_exception(at)
    name = labels.label_for(target, 1000)
    assert f"**Evidence for '{name}'** (class {target}," in _texts(at.markdown)
    assert explains == [top1, target]
    ev = _direct(narrow_model, target)
    block = pick(narrow_model.info.blocks)
    _close(_cam_z(at, "gradcam"), upsample(ev.cam[block][0], (224, 224)))
    _close(_cam_z(at, "layercam"), upsample(ev.layercam[block][0], (224, 224)))
    _close(_array(_figure(at, "ev_attribution")["data"][0]["y"]), ev.attribution(block)[0])
    assert name in _figure(at, "ev_gradcam")["layout"]["title"]["text"]
    assert not np.allclose(ev.cam[block], _direct(narrow_model, top1).cam[block])


def test_deletion_button_draws_three_curves_with_their_areas(at, narrow_model, monkeypatch):
    """Nothing runs before the button; then one curve per order whose probabilities and
    area equal se_viz.deletion computed here."""
    runs = []
    real = engine.deletion
    monkeypatch.setattr(se_viz, "deletion", lambda *a, **k: runs.append(a) or real(*a, **k),
                        raising=False)
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("fig_ev_deletion")]
    at.button(key="ev_delete").click()
    at.run()
    _no_exception(at)
    assert len(runs) == 3
    block = pick(narrow_model.info.blocks)
    image = images.decode_image(CAT)
    curves = [engine.deletion(narrow_model, image, block, order) for order in view.ORDERS]
    fig = _figure(at, "ev_deletion")
    assert [t["type"] for t in fig["data"]] == ["scatter"] * 3
    for trace, curve in zip(fig["data"], curves):
        assert trace["name"] == f"{curve.order} (area {curve.area:.3f})"
        _close(_array(trace["y"]), curve.prob)
    table = at.table[-1].value
    assert list(table["order"]) == list(view.ORDERS)
    assert list(table["area under the curve"]) == [f"{c.area:.4f}" for c in curves]
    at.slider(key="ev_opacity").set_value(0.3)  # a rerun draws them again from the cache
    at.run()
    assert len(runs) == 3 and len(_figure(at, "ev_deletion")["data"]) == 3


def test_every_block_deletion_ranks_all_gates(at, narrow_model):
    at.radio(key="ev_scope").set_value(view.SCOPES[1])
    at.button(key="ev_delete").click()
    at.run()
    _no_exception(at)
    curve = engine.deletion(narrow_model, images.decode_image(CAT), "all", "attribution")
    assert at.table[-1].value["area under the curve"][0] == f"{curve.area:.4f}"


def test_an_expected_error_shows_its_message_and_the_page_still_works(monkeypatch):
    """explain refusing (e.g. no eager engine) or a bad class: the view and the overview's
    attribution colouring show the message; the pickers and the gate heatmap still work."""
    message = "Class evidence needs gradients: build the model with the eager engine."

    def refuse(*args, **kw):
        raise se_viz.SEVizError(message)

    monkeypatch.setattr(se_viz, "explain", refuse, raising=False)
    app = fresh_app(monkeypatch)
    app.file_uploader(key="uploads").set_value([("cat.jpg", CAT, "image/jpeg")])
    app.run()
    _view(app, LABEL)
    assert message in _texts(app.error)
    assert app.selectbox(key="ev_block") and "A gate says how strongly" in _texts(app.markdown)
    monkeypatch.setattr(se_viz, "explain", lambda *a, **k: engine.explain(*a, target=5000))
    app.radio(key="ev_source").set_value(view.SOURCES[1])
    app.run()
    _no_exception(app)
    assert "target class 5000 is out of range" in _texts(app.error), _texts(app.error)
    _view(app, "Overview")
    app.radio(key="overview_colour").set_value(COLOURS[1])
    app.run()
    _no_exception(app)
    assert "0 .. 999" in _texts(app.error) and "Top-5 classes" in _texts(app.markdown)
    app.radio(key="overview_colour").set_value(COLOURS[0])
    app.run()
    _no_exception(app)
    assert not app.error and "SE gates of cat.jpg" in json.dumps(
        json.loads(app.get("plotly_chart")[0].proto.spec)["layout"]["title"])


# ----------------------------------------------------------------------------- overview
def test_overview_switch_colours_the_heatmap_by_attribution(monkeypatch, explains,
                                                            narrow_model):
    """Gate colours by default (no gradient computed); the switch draws every block's
    attribution for the top-1 class on a diverging scale centred on 0."""
    app = fresh_app(monkeypatch)
    app.multiselect(key="samples").set_value([SAMPLE])
    app.run()
    gate_fig = _figure(app, "heatmap_0")
    assert "SE gates of" in gate_fig["layout"]["title"]["text"] and explains == []
    app.radio(key="overview_colour").set_value(COLOURS[1])
    app.run()
    _no_exception(app)
    ev = _direct(narrow_model, blocks=())
    top1 = int(ev.target[0])
    assert explains == [top1]
    fig = _figure(app, "heatmap_0")
    assert fig["layout"]["title"]["text"].startswith(
        f"Gate attribution for '{labels.label_for(top1, 1000)}' (top-1)")
    axis = fig["layout"]["coloraxis"]
    assert axis["cmid"] == 0 and axis["cmin"] == -axis["cmax"]
    assert axis["colorbar"]["title"]["text"] == "attribution"
    rows = {t["name"]: _array(t["z"])[0] for t in fig["data"]}
    assert list(rows) == [b.name for b in narrow_model.info.blocks]
    for block, attr in ev.attributions.items():
        _close(rows[block], attr[0])
    _view(app, LABEL)  # the view's top-1 evidence is the one the overview computed
    assert explains == [top1]


# ----------------------------------------------------------------------------- families
def test_the_view_draws_for_lcnet(monkeypatch, explains):
    """An untrained LCNet (hard-sigmoid SE, another family) with a photo: the view draws its
    CAM, equal to se_viz.explain here; the deletion button works."""
    arch = "lcnet_100"
    monkeypatch.delenv("SE_VIZ_WIDTH", raising=False)
    monkeypatch.setenv("SE_VIZ_ENGINE", "eager")
    monkeypatch.setenv("SE_VIZ_MIRROR", "http://127.0.0.1:9")
    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.session_state["family"] = SPECS[arch].family
    app.session_state["arch"] = arch
    app.run()
    app.file_uploader(key="uploads").set_value([("cat.jpg", CAT, "image/jpeg")])
    app.run()
    _view(app, LABEL)
    assert not app.error, _texts(app.error)
    model = build_model(arch)
    block = pick(model.info.blocks)
    ev = _direct(model)
    assert explains == [int(ev.target[0])]
    assert f"at **{block}**" in _texts(app.markdown)
    _close(_cam_z(app, "gradcam"), upsample(ev.cam[block][0], (224, 224)))
    app.button(key="ev_delete").click()
    app.run()
    _no_exception(app)
    assert len(_figure(app, "ev_deletion")["data"]) == 3
