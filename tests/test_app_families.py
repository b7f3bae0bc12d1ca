"""The app with a new-family network and a fine-tuned head: a 10-class LCNet checkpoint
uploaded as .safetensors with a class-names file (streamlit.testing.v1.AppTest, offline).

The page's top-5 is checked against se_viz computed here on the same weights; a names file
with the wrong number of lines shows read_labels' message and leaves the model usable.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from se_viz import images, labels
from se_viz.arch import SPECS
from se_viz.engine import capture as engine
from se_viz.engine.build import build_model
from se_viz.engine.weights import export_state, save_safetensors

ROOT = Path(__file__).resolve().parents[1]
CAT = (ROOT / "assets" / "cat_chelsea.jpg").read_bytes()
ARCH, K = "lcnet_100", 10
NAMES = [f"kind {c}" for c in "abcdefghij"]


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _no_exception(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]
    assert "Something unexpected" not in _texts(app.error), _texts(app.error)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[bytes, object]:
    """A seeded 10-class lcnet_100 and its weights as safetensors bytes."""
    model = build_model(ARCH, num_classes=K, seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "lcnet10.safetensors"
    return save_safetensors(export_state(model), path).read_bytes(), model


def _top5(model, names) -> list[tuple[str, str]]:
    """(name, probability as the app prints it) of the cat photo, computed here."""
    cap = engine.capture(model, [images.decode_image(CAT)])
    idx, p = cap.top_k(5)
    return [(labels.label_for(i, K, names), f"{q:.1%}") for i, q in zip(idx[0], p[0])]


def _page_top5(app: AppTest) -> list[tuple[str, str]]:
    table = app.table[0].value
    return list(zip(table["class"], table["probability"]))


def _app_with(monkeypatch, checkpoint_bytes: bytes, names_file: bytes) -> AppTest:
    """The app on lcnet_100 (picked before the first run: no full-size model is built),
    with the checkpoint, the names file and the cat photo uploaded."""
    monkeypatch.setenv("SE_VIZ_ENGINE", "eager")  # the direct capture above runs eagerly too
    monkeypatch.delenv("SE_VIZ_WIDTH", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.session_state["family"] = SPECS[ARCH].family
    app.session_state["arch"] = ARCH
    app.session_state["weights_kind"] = "Upload .safetensors"
    app.run()
    _no_exception(app)
    app.file_uploader(key="weights_upload").set_value(
        ("lcnet10.safetensors", checkpoint_bytes, "application/octet-stream"))
    app.file_uploader(key="labels_upload").set_value(("names.txt", names_file, "text/plain"))
    app.run()
    _no_exception(app)
    app.file_uploader(key="uploads").set_value([("cat.jpg", CAT, "image/jpeg")])
    app.run()
    _no_exception(app)
    return app


def test_ten_class_checkpoint_with_names_shows_them_in_the_top5(monkeypatch, checkpoint):
    data, model = checkpoint
    app = _app_with(monkeypatch, data, "\n".join(NAMES).encode() + b"\n")
    assert not app.error, _texts(app.error)
    assert images.image_digest(data)[:12] in _texts(app.success)  # the upload, not seeded
    assert "Untrained weights" not in _texts(app.warning)
    assert f"{K} classes named kind a, kind b, kind c, ..." in _texts(app.caption)
    expected = _top5(model, NAMES)
    assert _page_top5(app) == expected
    assert {name for name, _ in expected} <= set(NAMES)


def test_names_file_with_the_wrong_count_is_refused_and_the_model_still_works(
        monkeypatch, checkpoint):
    data, model = checkpoint
    app = _app_with(monkeypatch, data, "\n".join(NAMES[:9]).encode())
    errors = _texts(app.error)
    with pytest.raises(ValueError) as refused:
        labels.read_labels("\n".join(NAMES[:9]).encode(), K)
    assert "names.txt" in errors and str(refused.value) in errors, errors
    assert f"{K} classes." in _texts(app.caption)  # no names taken from the file
    assert _page_top5(app) == _top5(model, None)  # "class i", the same numbers
    app.session_state["view"] = "Export"  # another view draws too
    app.run()
    _no_exception(app)
    assert "Figures as standalone HTML" in _texts(app.markdown)


# ----------------------------------------------------------------------------- every view
QUICK = ("ecaresnet50d", "efficientnet_b0", "mobilenetv3_large_100", "lcnet_100", "regnety_008")
# (view, text it draws for every network, or for ECA networks (no bottleneck) when it differs)
VIEW_TEXTS = {"Overview": "Top-5 classes", "Block explorer": "Most amplified",
              "SE block, step by step": ("The published SELayer2", "has no SE block"),
              "Compare blocks": "The paper's finding", "Compare images": "separate these images",
              "Class baseline": "Open a dataset's statistics",
              "Channel atlas": "Open a results folder in the sidebar",
              "Reduction ratio": ("Emulated r =", "r does not apply"),
              "Interventions": "of the top-5 kept", "Class evidence": "Evidence for '",
              "Export": "Figures as standalone HTML"}


def _page_text(app: AppTest) -> str:
    return "\n".join(_texts(getattr(app, kind)) for kind in (
        "markdown", "info", "subheader", "caption", "error", "warning", "success"))


@pytest.mark.parametrize("arch", QUICK)
def test_every_view_draws_for_the_network(monkeypatch, arch):
    """One network of each family (and ECA) untrained with two photos: every view draws its
    own content, the Run buttons work, nothing goes wrong, and the page says plainly that
    the weights are untrained."""
    from se_viz.app.views import LABELS

    monkeypatch.delenv("SE_VIZ_WIDTH", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.session_state["family"] = SPECS[arch].family
    app.session_state["arch"] = arch
    app.run()
    _no_exception(app)
    assert "Untrained weights: the attention shown means nothing" in _texts(app.warning)
    coffee = (ROOT / "assets" / "coffee_cup.jpg").read_bytes()
    app.file_uploader(key="uploads").set_value([("cat.jpg", CAT, "image/jpeg"),
                                                ("coffee.jpg", coffee, "image/jpeg")])
    app.run()
    eca = all(b.kind == "eca" for b in build_model(arch).info.blocks)
    assert set(VIEW_TEXTS) == set(LABELS)
    for label in LABELS:
        app.session_state["view"] = label
        app.run()
        for button in [b for b in app.button if b.label in ("Run intervention",
                                                              "Run emulation")]:
            button.click()
            app.run()
        _no_exception(app)
        assert not app.error, (arch, label, _texts(app.error))
        wanted = VIEW_TEXTS[label]
        wanted = wanted if isinstance(wanted, str) else wanted[eca]
        assert wanted in _page_text(app), (arch, label)
