"""The Reduction ratio view with a refit folder: AppTest for the numbers, Chromium for what a
person sees. The refit folders are made on the app's own narrow untrained network."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from se_viz.dataset import RunOptions
from se_viz.refit import RefitSettings, refit

from .test_app import CAT, _no_exception, _texts, _top5, _upload, _view, fresh_app
from .browser import CHROMIUM, app_page, uploader, wait_for_heatmap
from .test_browser import PHOTO, _plots_drawn, server  # noqa: F401
from .test_dataset import make_folder

APP_BASE = RefitSettings(weights=None, width=8, num_classes=1000, image_size=32, batch_size=4,
                         shard_size=8, steps=100)  # the app's SE_VIZ_WIDTH=8 network


@pytest.fixture(scope="module")
def app_refit(tmp_path_factory) -> Path:
    images = make_folder(tmp_path_factory.mktemp("images"), per_class=4)
    out = tmp_path_factory.mktemp("refit_app")
    assert refit(images, out, [8, 32], APP_BASE, RunOptions(workers=0, progress=False)).written
    return out


def _open_refit(at, path: Path) -> None:
    at.text_input(key="refit_path").set_value(str(path))
    at.run()
    _no_exception(at)


def _table(at, first_column: str) -> dict:
    return next(t.value for t in at.table if first_column in t.value.columns)


def test_refit_view_shows_the_folder_and_each_r_on_the_users_image(monkeypatch, app_refit):
    from se_viz.engine.build import build_model

    at = fresh_app(monkeypatch)
    _upload(at, ("cat.jpg", CAT))
    _open_refit(at, app_refit)
    _view(at, "Reduction ratio")
    summary = _table(at, "mean block RMSE")
    assert list(summary["r"]) == ["8", "32"]
    doc = json.loads((app_refit / "refit.json").read_text("utf-8"))
    agree = doc["fits"]["32"]["end_to_end"]["top1_agreement"]
    assert summary["top-1 agreement"][1] == f"{agree:.1%}"
    top = _table(at, "base r = 16")
    assert list(top.columns) == ["base r = 16", "r = 8", "r = 32"]
    for key in ("8", "32"):
        model = build_model("se_resnet50_vd", None, width=8,
                            se_weights=app_refit / f"se_r{key}.safetensors")
        assert list(top[f"r = {key}"]) == _top5(model, CAT)
    assert list(top["base r = 16"]) == _top5(build_model("se_resnet50_vd", None, width=8), CAT)
    assert "Refit on `se_resnet50_vd` at r = 16" in _texts(at.markdown)
    assert "Emulation, not a retrained network" in _texts(at.warning)  # kept, labelled


def test_refit_of_other_base_weights_is_refused_with_a_clear_message(monkeypatch, tmp_path):
    images = make_folder(tmp_path / "images", per_class=2)
    other = tmp_path / "other"
    settings = replace(APP_BASE, seed=3)
    refit(images, other, [32], settings, RunOptions(workers=0, progress=False))
    at = fresh_app(monkeypatch)
    _upload(at, ("cat.jpg", CAT))
    _open_refit(at, other)
    _view(at, "Reduction ratio")
    assert "made on other base weights (seeded:3" in _texts(at.error)
    assert list(_table(at, "mean block RMSE")["r"]) == ["32"]  # its curves still show


def test_uploaded_refit_files_and_a_missing_one(monkeypatch, app_refit):
    at = fresh_app(monkeypatch)
    _upload(at, ("cat.jpg", CAT))
    at.file_uploader(key="refit_upload").set_value([
        ("refit.json", (app_refit / "refit.json").read_bytes(), "application/json"),
        ("se_r8.safetensors", (app_refit / "se_r8.safetensors").read_bytes(),
         "application/octet-stream")])
    at.run()
    _view(at, "Reduction ratio")
    assert "se_r32.safetensors is missing" in _texts(at.warning)
    assert list(_table(at, "base r = 16").columns) == ["base r = 16", "r = 8"]


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
def test_refit_view_draws_in_the_browser(server, app_refit):  # noqa: F811
    url, log = server
    js_errors: list[str] = []
    with app_page(url, js_errors) as page:
        page.get_by_text("Refit folder (se-viz refit)").click()
        box = page.get_by_label("or a local path to the refit folder (OUT)")
        box.fill(str(app_refit))
        box.press("Enter")
        uploader(page).set_input_files(str(PHOTO))
        wait_for_heatmap(page)
        page.get_by_role("tab", name="Reduction ratio").click()
        page.get_by_text("base r = 16").first.wait_for(timeout=90_000)
        page.wait_for_timeout(1500)  # let plotly draw what just arrived
        main = page.locator('[data-testid="stMain"]').inner_text()
        from se_viz.blocks import pick
        from se_viz.engine.build import build_model

        shown = pick(build_model("se_resnet50_vd", None, width=8).info.blocks)  # the default
        for text in ("Refit at other r", "Gate error per block against r",
                     "r = 8", "r = 32", f"{shown}: gates, channels by base gate"):
            assert text in main or page.get_by_text(text).count(), text
        assert _plots_drawn(page) >= 4  # costs, errors, agreement, the image's gates
        assert page.locator('[data-testid="stException"]').count() == 0
        assert not js_errors, js_errors
    assert "Traceback" not in log.read_text()
