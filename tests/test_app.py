"""The Streamlit app driven through streamlit.testing.v1.AppTest (no browser, no network).

Every test runs the real ``app.py`` with a narrow demo model (SE_VIZ_WIDTH=8: width 8,
1000 classes, 224 x 224 crops, seeded untrained weights) and checks what the page shows
against se_viz computed directly, not just that something appears. Network runs are
counted by wrapping ``se_viz.engine.capture.capture``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

import se_viz
from se_viz import analysis, export, images, labels
from se_viz.engine import capture as engine, costs
from se_viz.results import Intervention
from se_viz.engine.build import build_model
from se_viz.engine.weights import export_state, save_safetensors

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
ASSETS = ROOT / "assets"
CAT = (ASSETS / "cat_chelsea.jpg").read_bytes()
COFFEE = (ASSETS / "coffee_cup.jpg").read_bytes()
WIDTH = 8


def fresh_app(monkeypatch, **env: str) -> AppTest:
    """A fresh app session on the narrow model, offline, with every Streamlit cache emptied;
    ``env`` adds or overrides settings."""
    settings = {"SE_VIZ_WIDTH": str(WIDTH),
                "SE_VIZ_ENGINE": "eager",  # direct captures in the tests use the same path
                "SE_VIZ_MIRROR": "http://127.0.0.1:9"}  # refused at once: offline
    for name, value in {**settings, **env}.items():
        monkeypatch.setenv(name, value)
    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(str(APP), default_timeout=90)
    app.run()
    _no_exception(app)
    return app


def spy_captures(monkeypatch, record) -> None:
    """Call ``record(model, kwargs)`` on every se_viz.engine.capture.capture (one per network
    run)."""
    real = engine.capture

    def spy(model, images_, **kw):
        record(model, kw)
        return real(model, images_, **kw)

    monkeypatch.setattr(engine, "capture", spy)


@pytest.fixture
def at(monkeypatch) -> AppTest:
    return fresh_app(monkeypatch)


@pytest.fixture
def forward_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every network run of one image."""
    calls: list[dict] = []
    spy_captures(monkeypatch, lambda model, kw: calls.append(kw))
    return calls


@pytest.fixture(scope="module")
def narrow_model():
    """The app's untrained model, built independently (same arch, width and seed)."""
    return build_model("se_resnet50_vd", None, width=WIDTH)


def _no_exception(app: AppTest) -> None:
    """No traceback element and no unexpected-error message on the page."""
    assert not app.exception, [e.value for e in app.exception]
    assert "Something unexpected" not in _texts(app.error), _texts(app.error)


def _upload(app: AppTest, *files: tuple[str, bytes]) -> None:
    app.file_uploader(key="uploads").set_value(
        [(name, data, "image/jpeg") for name, data in files])
    app.run()
    _no_exception(app)


def _view(app: AppTest, label: str) -> None:
    app.session_state["view"] = label
    app.run()
    _no_exception(app)


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _top5(model, data: bytes, intervention=None) -> list[str]:
    """Top-5 as the app prints it: 'label' and 'p%' for a direct capture."""
    cap = engine.capture(model, [images.decode_image(data)], intervention=intervention)
    idx, p = cap.top_k(5)
    return [f"{labels.label_for(i, 1000)} ({q:.1%})" for i, q in zip(idx[0], p[0])]


# ----------------------------------------------------------------------------- start


def test_starts_offline_with_untrained_warning_and_narrow_notice(at):
    warnings = _texts(at.warning)
    assert "Untrained weights: the attention shown means nothing" in warnings
    assert "Narrow demo model" in _texts(at.info)
    assert "SE_VIZ_WIDTH=8" in _texts(at.info)
    assert "Drop one or more photos" in _texts(at.info)
    assert not at.error
    assert not at.tabs  # nothing to show before an image is chosen


def test_download_offline_fails_fast_with_clear_error(at):
    start = time.perf_counter()
    at.button(key="download").click()
    at.run()
    elapsed = time.perf_counter() - start
    _no_exception(at)
    errors = _texts(at.error)
    assert "Could not download" in errors and "by hand" in errors
    assert elapsed < 15
    assert "Untrained weights" in _texts(at.warning)  # still usable, still honest


def test_download_success_saves_into_the_cache_with_progress(at, monkeypatch, tmp_path):
    """A local mirror stands in for the internet; the file lands where fetch() expects it."""
    import functools
    import http.server
    import threading

    from se_viz.engine import download

    payload = b"weights" * 300_000  # 2.1 MB: several 1 MiB progress steps
    (tmp_path / download.PRETRAINED["se_resnet50_vd"].filename).write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    steps: list[tuple[int, int | None]] = []
    real_fetch = download.fetch

    def fetch(arch, *, progress=None, **kw):
        def spy(done, total):
            steps.append((done, total))
            progress(done, total)
        return real_fetch(arch, progress=spy, **kw)

    monkeypatch.setattr(download, "fetch", fetch)
    monkeypatch.setenv("SE_VIZ_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        at.button(key="download").click()
        at.run()
    finally:
        server.shutdown()
        server.server_close()
    _no_exception(at)
    assert download.cached_path("se_resnet50_vd").read_bytes() == payload
    assert steps[-1] == (len(payload), len(payload)) and len(steps) >= 3
    assert not at.error
    # The narrow demo model cannot use a full-size file, and says so.
    assert "only fits the full-size model" in _texts(at.caption)


def test_bad_width_setting_is_an_error_not_a_traceback(monkeypatch):
    monkeypatch.setenv("SE_VIZ_WIDTH", "wide")
    app = AppTest.from_file(str(APP), default_timeout=60)
    app.run()
    _no_exception(app)
    assert "SE_VIZ_WIDTH must be a positive integer" in _texts(app.error)


def test_import_app_has_no_side_effects():
    """`import app` builds nothing and calls no Streamlit command (no bare-mode warnings)."""
    code = "import app, sys; assert callable(app.main); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "ScriptRunContext" not in out.stderr and "streamlit run" not in out.stderr


# ----------------------------------------------------------------------------- overview


def test_upload_shows_crop_top5_and_heatmap_matching_direct_capture(at, narrow_model):
    _upload(at, ("cat.jpg", CAT))
    assert [t.label for t in at.tabs][:2] == ["Overview", "Block explorer"]
    assert "cat.jpg" in _texts(at.subheader)
    table = at.table[0].value
    shown = [f"{c} ({p})" for c, p in zip(table["class"], table["probability"])]
    assert shown == _top5(narrow_model, CAT)
    assert len(at.image) == 1  # the 224 x 224 crop
    assert len(at.get("plotly_chart")) == 1


def test_sample_photos_are_selectable(at):
    at.multiselect(key="samples").set_value(["coffee_cup.jpg", "rocket_falcon9_launch.jpg"])
    at.run()
    _no_exception(at)
    assert {"coffee_cup.jpg", "rocket_falcon9_launch.jpg"} <= set(_texts(at.subheader).split())
    assert len(at.table) == 2


def test_bad_upload_names_the_file_and_the_good_image_still_shows(at):
    at.file_uploader(key="uploads").set_value([("junk.png", b"not an image", "image/png"),
                                              ("cat.jpg", CAT, "image/jpeg")])
    at.run()
    _no_exception(at)
    assert len(at.error) == 1 and "junk.png" in at.error[0].value
    assert "not an image" in at.error[0].value or "supported" in at.error[0].value
    assert "cat.jpg" in _texts(at.subheader) and len(at.table) == 1


def test_duplicate_upload_is_analysed_once(at, forward_calls):
    _upload(at, ("a.jpg", CAT), ("b.jpg", CAT))
    assert len(forward_calls) == 1 and len(at.table) == 1


# ----------------------------------------------------------------------------- caching


def test_view_changes_never_rerun_the_network(at, forward_calls, narrow_model):
    _upload(at, ("cat.jpg", CAT), ("coffee.jpg", COFFEE))
    assert len(forward_calls) == 2  # one run per image, all 16 blocks' maps kept
    names = [b.name for b in narrow_model.info.blocks]
    assert all(list(c["features"]) == names for c in forward_calls)
    at.radio(key="order").set_value("sorted by gate").run()
    at.radio(key="order").set_value("sorted by another image").run()
    at.selectbox(key="order_ref").set_value("coffee.jpg").run()
    for label in ("Block explorer", "SE block, step by step", "Compare blocks",
                  "Compare images", "Interventions", "Export", "Overview", "Block explorer"):
        _view(at, label)
    at.selectbox(key="block").set_value("SE_4_6").run()
    at.slider(key="k").set_value(12).run()
    at.selectbox(key="explore_image").set_value("coffee.jpg").run()
    at.radio(key="maps_as").set_value("overlay on the image").run()
    _no_exception(at)
    assert len(forward_calls) == 2


def test_channel_order_changes_the_heatmap_not_the_numbers(at):
    _upload(at, ("cat.jpg", CAT))
    before = at.get("plotly_chart")[0].proto.spec
    at.radio(key="order").set_value("sorted by gate").run()
    after = at.get("plotly_chart")[0].proto.spec
    _no_exception(at)
    assert before != after and '"customdata"' in after  # hover maps position -> channel


# ----------------------------------------------------------------------------- views


def test_block_explorer_shows_stats_of_the_chosen_block(at, narrow_model):
    _upload(at, ("cat.jpg", CAT))
    _view(at, "Block explorer")
    at.selectbox(key="block").set_value("SE_3_2").run()
    _no_exception(at)
    gates = engine.capture(narrow_model, [images.decode_image(CAT)]).gates["SE_3_2"][0]
    stats = analysis.gate_stats(gates)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["mean gate"] == f"{stats.mean:.3f}"
    assert metrics["entropy (0-1)"] == f"{stats.entropy:.3f}"
    assert metrics["gates > 0.9"] == f"{stats.frac_high:.1%}"
    assert "SE_3_2" in _texts(at.markdown)
    at.radio(key="maps_as").set_value("overlay on the image").run()
    _no_exception(at)
    assert len(at.image) >= 2  # top-k and bottom-k overlays


def test_se_block_step_by_step_shows_the_blocks_own_gates(at, narrow_model):
    _upload(at, ("cat.jpg", CAT))
    _view(at, "SE block, step by step")
    at.selectbox(key="steps_block").set_value("SE_3_2").run()
    _no_exception(at)
    cap = engine.capture(narrow_model, [images.decode_image(CAT)], features=["SE_3_2"])
    gates, squeeze = cap.gates["SE_3_2"][0], cap.squeeze["SE_3_2"][0]
    table = at.table[-1].value
    channels = [int(c) for c in table["channel"]]
    assert channels[:2] == list(analysis.top_channels(gates, 2))
    assert channels[2:] == list(analysis.top_channels(gates, 2, largest=False))
    assert list(table["gate s"]) == [f"{gates[c]:.4f}" for c in channels]
    assert list(table["squeeze z"]) == [f"{squeeze[c]:.4f}" for c in channels]
    text = _texts(at.markdown)
    h = 64 // 16  # SE_3_2 of the narrow model: C = 64, r = 16
    assert f"`(1, 64) -> (1, {h})`" in text and "y=self.excitation(x)" in text
    assert "SELayer1 and SELayer2 give the same output" in _texts(at.success)
    assert len(at.get("plotly_chart")) >= 6  # U, z, hidden, gates, reweight, bug, diagram


def test_compare_blocks_states_the_papers_finding(at):
    _upload(at, ("cat.jpg", CAT), ("coffee.jpg", COFFEE))
    _view(at, "Compare blocks")
    assert analysis.PAPER_FIG6_FINDING in _texts(at.info)
    assert len(at.get("plotly_chart")) == 3


def test_compare_images_table_equals_analysis(at, narrow_model):
    _upload(at, ("cat.jpg", CAT))
    _view(at, "Compare images")
    assert "two or more images" in _texts(at.info)
    _upload(at, ("cat.jpg", CAT), ("coffee.jpg", COFFEE))
    cap = engine.capture(narrow_model, [images.decode_image(CAT), images.decode_image(COFFEE)])
    want = analysis.compare_images({b: g[0] for b, g in cap.gates.items()},
                                   {b: g[1] for b, g in cap.gates.items()}, 10)
    table = at.dataframe[0].value
    assert list(table["block"]) == [b.name for b in narrow_model.info.blocks]
    np.testing.assert_allclose(table["js"], want["js"], atol=1e-6)
    np.testing.assert_allclose(table["topk_overlap"], want["topk_overlap"])
    worst = want["block"][int(np.argmax(want["js"]))]
    assert f"separate these images most** (largest Jensen-Shannon distance): {worst}" in \
        _texts(at.markdown)


def test_reduction_tab_shows_costs_beside_the_paper(at):
    _upload(at, ("cat.jpg", CAT))
    _view(at, "Reduction ratio")
    whole = at.table[0].value
    assert list(whole["r"]) == ["1", "2", "4", "8", "16", "32", "64"]
    c16 = costs.network_costs("se_resnet50_vd", 16)
    row = list(whole["r"]).index("16")
    assert whole["params (M)"][row] == f"{c16.params_total / 1e6:.2f}"
    assert whole["paper params (M)"][row] == "28.1"
    assert whole["paper top-1 err (%)"][row] == "22.28"
    assert len(at.table[1].value) == 4  # per stage
    assert "Squeeze-and-Excitation Networks" in _texts(at.caption)
    assert "Emulation, not a retrained network" in _texts(at.warning)


def test_reduction_emulation_runs_once_and_is_labelled(at, forward_calls):
    _upload(at, ("cat.jpg", CAT))
    _view(at, "Reduction ratio")
    at.selectbox(key="emulate_r").set_value(64)
    next(b for b in at.button if b.label == "Run emulation").click()
    at.run()
    _no_exception(at)
    masked = [c for c in forward_calls if c.get("intervention")]
    assert len(masked) == 1 and masked[0]["intervention"].hidden_masks
    assert "Emulated r = 64" in _texts(at.markdown)
    _view(at, "Overview")
    _view(at, "Reduction ratio")
    assert len([c for c in forward_calls if c.get("intervention")]) == 1  # cached


def test_intervention_changes_top5_as_a_direct_capture_does(at, narrow_model):
    _upload(at, ("cat.jpg", CAT))
    _view(at, "Interventions")
    at.radio(key="iv_scope").set_value("remove the last stage's SE (the paper's cheap variant)")
    next(b for b in at.button if b.label == "Run intervention").click()
    at.run()
    _no_exception(at)
    table = at.table[-1].value
    before = _top5(narrow_model, CAT)
    last = list(se_viz.blocks.stages(narrow_model.info.blocks).values())[-1]
    after = _top5(narrow_model, CAT, Intervention(gates={b: 1.0 for b in last}))
    assert list(table["before"]) == before
    assert list(table["after"]) == after
    assert before != after


# ----------------------------------------------------------------------------- export


def test_exports_carry_the_gates_of_a_direct_capture(at, narrow_model, monkeypatch, tmp_path):
    sent: dict[str, bytes] = {}
    real = st.download_button

    def recording(label, data, *args, **kw):
        sent[kw["file_name"]] = data() if callable(data) else data
        return real(label, data, *args, **kw)

    monkeypatch.setattr(st, "download_button", recording)
    _upload(at, ("cat.jpg", CAT), ("coffee.jpg", COFFEE))
    _view(at, "Export")
    cap = engine.capture(narrow_model, [images.decode_image(CAT), images.decode_image(COFFEE)])
    for name in ("se_gates.csv", "se_gates.npz", "se_gates.json"):
        path = tmp_path / name
        path.write_bytes(sent[name])
        files, logits, gates, meta = export.read(path)
        assert files == ["cat.jpg", "coffee.jpg"]
        np.testing.assert_allclose(logits, cap.logits, atol=1e-6)
        assert list(gates) == [b.name for b in narrow_model.info.blocks]
        for block, g in gates.items():
            np.testing.assert_allclose(g, cap.gates[block], atol=1e-6)
        assert str(meta["width"]) == "8" and str(meta["untrained"]) == "True"
        assert meta["preprocessing"] == images.PADDLECLAS_EVAL.describe()
        assert str(meta["se_viz_version"]) == se_viz.__version__
    doc = json.loads(sent["se_gates.json"])
    idx, _ = cap.top_k(5)
    assert [t["label"] for t in doc["top5"][0]] == [labels.label_for(i) for i in idx[0]]
    with np.load(io.BytesIO(sent["se_gates.npz"]), allow_pickle=False) as z:
        assert z["SE_5_3"].shape == (2, 4 * WIDTH * 8)
    html = sent["se_viz_figure.html"].decode("utf-8")
    assert "<html" in html[:200].lower() and "plotly" in html.lower()


# ----------------------------------------------------------------------------- weights


def _weights_bytes(seed: int, tmp_path: Path) -> tuple[bytes, object]:
    model = build_model("se_resnet50_vd", None, width=WIDTH, seed=seed)
    path = save_safetensors(export_state(model), tmp_path / f"narrow{seed}.safetensors")
    return path.read_bytes(), model


def test_uploaded_safetensors_weights_are_used(at, tmp_path):
    data, model = _weights_bytes(7, tmp_path)
    at.radio(key="weights_kind").set_value("Upload .safetensors").run()
    at.file_uploader(key="weights_upload").set_value(("narrow7.safetensors", data,
                                                      "application/octet-stream"))
    at.run()
    _no_exception(at)
    assert images.image_digest(data)[:12] in _texts(at.success)
    assert "Untrained weights" not in _texts(at.warning)
    _upload(at, ("cat.jpg", CAT))
    table = at.table[0].value
    assert [f"{c} ({p})" for c, p in zip(table["class"], table["probability"])] == \
        _top5(model, CAT)


def test_pickle_disguised_as_safetensors_is_refused(at):
    at.radio(key="weights_kind").set_value("Upload .safetensors").run()
    evil = b"\x80\x04\x95" + b"cos\nsystem\n" + b"\x00" * 64  # a pickle, never unpickled
    at.file_uploader(key="weights_upload").set_value(("evil.safetensors", evil,
                                                      "application/octet-stream"))
    at.run()
    _no_exception(at)
    assert "evil.safetensors" in _texts(at.error)
    assert "Showing untrained weights instead" in _texts(at.error)
    assert "Untrained weights" in _texts(at.warning)


def test_local_weights_path_and_missing_path(at, tmp_path):
    _, model = _weights_bytes(3, tmp_path)
    at.radio(key="weights_kind").set_value("Local file path").run()
    at.text_input(key="weights_path").set_value(str(tmp_path / "narrow3.safetensors")).run()
    _no_exception(at)
    assert "narrow3.safetensors" in _texts(at.success)
    at.text_input(key="weights_path").set_value(str(tmp_path / "missing.pdparams")).run()
    _no_exception(at)
    assert "missing.pdparams" in _texts(at.error)
    assert "Untrained weights" in _texts(at.warning)


def test_max_pixels_refusal_is_shown(at):
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (60_000).to_bytes(4, "big") * 2  # IHDR claims 60000 x 60000 pixels
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid header
    _upload(at, ("huge.png", bytes(data)), ("cat.jpg", CAT))
    assert "huge.png" in _texts(at.error) and "pixels" in _texts(at.error)
    assert len(at.table) == 1


@pytest.mark.slow
def test_cached_pretrained_file_is_used_automatically(monkeypatch):
    """Full size (SE_VIZ_WIDTH unset): a file at download.expected_path is picked up."""
    from se_viz.engine import download

    monkeypatch.delenv("SE_VIZ_WIDTH", raising=False)
    st.cache_resource.clear()
    model = build_model("se_resnet50", None, seed=5)
    dest = download.expected_path("se_resnet50")  # a .safetensors name in the isolated cache
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(export_state(model), dest)
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.run()
    app.selectbox(key="arch").set_value("se_resnet50").run()
    _no_exception(app)
    status = _texts(app.success)
    assert dest.name in status and "r = 16" in status
    assert images.image_digest(dest.read_bytes())[:12] in status
    assert "Untrained weights" not in _texts(app.warning)
    assert "Narrow demo model" not in _texts(app.info)
