"""What a person sees: a real `streamlit run app.py` server driven by Debian's Chromium.

Uploads a photo through the page's own file input, waits for the gate heatmap, checks the
block names, the top-5 (against se_viz computed in this process) and that no exception
element is on the page, measures upload -> heatmap seconds and saves docs/screenshot.png;
then MobileNetV3 and RegNetY picked in the sidebar: a heatmap row per block, every view.
The server starts on the narrow demo model (SE_VIZ_WIDTH=8) with an empty weights cache.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .browser import (app_page, app_pages, free_port, needs_chromium, stop, uploader,
                      wait_for_heatmap, wait_healthy)

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "cat_chelsea.jpg"
WIDTH = 8

pytestmark = needs_chromium


@pytest.fixture
def server(tmp_path):
    """`streamlit run app.py` on a free port; terminated (then killed) afterwards."""
    port = free_port()
    log = tmp_path / "streamlit.log"
    env = dict(os.environ, SE_VIZ_WIDTH=str(WIDTH), SE_VIZ_HOME=str(tmp_path / "home"))
    env.pop("SE_VIZ_MIRROR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url, log
    finally:
        stop(proc)


def _expected_top5(photo: Path = PHOTO) -> list[tuple[str, str]]:
    """The narrow model's top-5 (label, probability as the app prints it) for ``photo``,
    computed here without the app."""
    from se_viz import labels
    from se_viz.engine import capture as engine
    from se_viz.engine.build import build_model
    from se_viz.images import load_image

    cap = engine.capture(build_model("se_resnet50_vd", None, width=WIDTH), [load_image(photo)])
    idx, p = cap.top_k(5)
    return [(labels.label_for(i, 1000), f"{q:.1%}") for i, q in zip(idx[0], p[0])]


def _full_page_screenshot(page, paths: list[Path]) -> None:
    """Streamlit scrolls inside its own container: grow the viewport to the content first."""
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('section, div')]"
        ".map(e => e.scrollHeight))")
    page.set_viewport_size({"width": 1400, "height": max(1000, min(int(height) + 40, 8000))})
    page.wait_for_timeout(1500)  # let plotly re-layout at the new size
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_upload_shows_heatmap_top5_and_no_exception(server, tmp_path):
    url, log = server
    expected = [label for label, _ in _expected_top5()]
    with app_page(url) as page:
        assert page.get_by_text("Untrained weights: the attention shown means nothing")\
            .first.is_visible()

        start = time.perf_counter()
        uploader(page).set_input_files(str(PHOTO))
        page.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=90_000)
        wait_for_heatmap(page, 30_000)
        seconds = time.perf_counter() - start
        print(f"\nupload -> heatmap visible: {seconds:.2f} s "
              f"(narrow SE_VIZ_WIDTH={WIDTH} model, 1 photo)")

        heatmap_text = page.locator(".js-plotly-plot").first.inner_text()
        for block in ("SE_2_1", "SE_3_4", "SE_5_3"):
            assert block in heatmap_text
        assert page.get_by_text("Top-5 classes").is_visible()
        table = page.locator('[data-testid="stTable"]').first.inner_text()
        for label in expected:
            assert label in table
        assert page.get_by_text("The 224 x 224 crop the network saw").is_visible()
        assert page.locator('[data-testid="stException"]').count() == 0

        _full_page_screenshot(page, [ROOT / "docs" / "screenshot.png",
                                     tmp_path / "screenshot.png"])

        page.get_by_role("tab", name="Compare blocks").click()
        page.get_by_text("The paper's finding.").wait_for(timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in log.read_text()
    assert (ROOT / "docs" / "screenshot.png").stat().st_size > 10_000


def test_four_sessions_at_once_each_see_only_their_own_image(server):
    """Four browser contexts (four Streamlit sessions) upload four photos at the same time;
    each page shows its own photo's name and top-5, none of the others', no exception."""
    url, log = server
    photos = sorted((ROOT / "assets").glob("*.jpg"))
    assert len(photos) >= 4
    photos = photos[:4]
    expected = {p.name: _expected_top5(p) for p in photos}
    with app_pages(url, len(photos)) as pages:
        for page, photo in zip(pages, photos):  # all four before waiting for any
            uploader(page).set_input_files(str(photo))
        for page, photo in zip(pages, photos):
            wait_for_heatmap(page, 120_000)
            page.get_by_role("heading", name=photo.name).wait_for(timeout=30_000)
            table = page.locator('[data-testid="stTable"]').first.inner_text()
            for label, prob in expected[photo.name]:
                assert label in table and prob in table, (photo.name, label, prob, table)
            main = page.locator('[data-testid="stMain"]').inner_text()
            for other in photos:
                if other != photo:
                    assert other.name not in main, (photo.name, other.name)
            assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in log.read_text()


# (tab, text that shows the view has drawn, button to press first or None, text after it)
VIEWS = [
    ("Overview", "Top-5 classes", None, None),
    ("Block explorer", "Most amplified (top-k gates)", None, None),
    ("SE block, step by step", "The published SELayer2", None, None),
    ("Compare blocks", "The paper's finding.", None, None),
    ("Compare images", "Blocks that separate these images most", None, None),
    ("Class baseline", "Open a dataset's statistics", None, None),
    ("Reduction ratio", "Per stage at r =", "Run emulation", "Emulated r ="),
    ("Interventions", "Force a block's gates", "Run intervention", "of the top-5 kept"),
    ("Class evidence", "Evidence for '", "Run deletion", "area under the curve"),
    ("Export", "Figures as standalone HTML", None, None),
]


def _plots_drawn(page) -> int:
    """Number of visible Plotly charts; each must have drawn its SVG (a JS error leaves the
    chart div hidden and empty)."""
    plots = page.locator(".js-plotly-plot")
    drawn = 0
    for i in range(plots.count()):
        plot = plots.nth(i)
        if plot.is_visible():
            assert plot.locator(".main-svg").count() > 0, f"chart {i} did not draw"
            drawn += 1
    return drawn


def test_every_view_draws_in_the_browser_without_errors(server):
    """Two photos, then every tab in turn (and its Run button): no JavaScript error, no
    exception element, every visible chart drawn."""
    url, log = server
    js_errors: list[str] = []
    with app_page(url, js_errors) as page:
        uploader(page).set_input_files([str(PHOTO), str(ROOT / "assets" / "coffee_cup.jpg")])
        wait_for_heatmap(page)
        charts = {}
        for tab, ready, button, after in VIEWS:
            page.get_by_role("tab", name=tab).click()
            page.get_by_text(ready).first.wait_for(timeout=60_000)
            if button:
                page.get_by_role("button", name=button).click()
                page.get_by_text(after).first.wait_for(timeout=90_000)
            page.wait_for_timeout(1200)  # let plotly draw what just arrived
            charts[tab] = _plots_drawn(page)
            assert page.locator('[data-testid="stException"]').count() == 0, tab
            assert not js_errors, (tab, js_errors)
    print(f"\ncharts drawn per view: {charts}")
    for tab in ("Overview", "Block explorer", "SE block, step by step", "Compare blocks",
                "Compare images", "Reduction ratio", "Interventions", "Class evidence"):
        assert charts[tab] >= 1, (tab, charts)
    assert "Traceback" not in log.read_text()


# ----------------------------------------------------------------------------- new families
FAMILY_VIEWS = [  # (tab, text drawn by every SE network, button or None, text after it)
    ("Overview", "Top-5 classes", None, None),
    ("Block explorer", "Most amplified (top-k gates)", None, None),
    ("SE block, step by step", "The published SELayer2", None, None),
    ("Compare blocks", "The paper's finding", None, None),
    ("Compare images", "Blocks that separate these images most", None, None),
    ("Class baseline", "Open a dataset's statistics", None, None),
    ("Reduction ratio", "Emulation: a larger r without a refit", "Run emulation",
     "Emulated r ="),
    ("Interventions", "Force a block's gates", "Run intervention", "of the top-5 kept"),
    ("Export", "Figures as standalone HTML", None, None),
]
# Each row of the overview's heatmap (one trace per attention block): name, type, channels.
HEATMAP_ROWS = """() => {
    const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p =>
        p._fullLayout && String(p._fullLayout.title.text).includes('SE gates of'));
    return plot ? plot._fullData.map(t => [t.name, t.type, t.z[0].length]) : null;
}"""


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the sidebar selectbox labelled ``label`` (a combobox)."""
    box = page.get_by_role("combobox", name=label)
    box.click()
    box.fill(option)  # the list shows the options that match what is typed
    page.get_by_role("option").filter(has_text=option).first.click()


def _wait_for_rows(page, rows: list, timeout_ms: int = 90_000) -> list:
    """Until the overview's heatmap has exactly ``rows``; what it has (for the message)."""
    try:
        page.wait_for_function(f"rows => JSON.stringify(({HEATMAP_ROWS})()) === "
                               "JSON.stringify(rows)", arg=rows, timeout=timeout_ms)
    except Exception:
        pytest.fail(f"heatmap rows {page.evaluate(HEATMAP_ROWS)} != {rows}")
    return page.evaluate(HEATMAP_ROWS)


def test_new_families_draw_every_view_in_the_browser(server):
    """MobileNetV3 and RegNetY picked in the sidebar (untrained, seeded: no download) with
    two photos: the heatmap has one row per attention block of that network (its name and
    channel count), every view draws and its Run button works, with no exception element
    and no JavaScript error."""
    from playwright.sync_api import expect

    from se_viz.arch import ARCHS, SPECS
    from se_viz.engine.build import build_model

    url, log = server
    js_errors: list[str] = []
    timings = {}
    with app_page(url, js_errors) as page:
        for n, arch in enumerate(("mobilenetv3_large_100", "regnety_008")):
            start = time.perf_counter()
            blocks = build_model(arch).info.blocks
            rows = [[b.name, "heatmap", b.channels] for b in blocks]
            if n:  # the second network is picked with the photos on the page
                page.get_by_role("tab", name="Overview").click()
            family = SPECS[arch].family
            _choose(page, "Family", family)
            first = next(a for a in ARCHS if SPECS[a].family == family)
            expect(page.get_by_role("combobox", name="Architecture")).to_have_value(
                re.compile(f"^{first} "), timeout=60_000)  # the family's list is there
            if first != arch:
                _choose(page, "Architecture", arch)
            page.get_by_text(f"{arch} ({family})").first.wait_for(timeout=60_000)
            if n == 0:
                uploader(page).set_input_files([str(PHOTO),
                                                str(ROOT / "assets" / "coffee_cup.jpg")])
            assert _wait_for_rows(page, rows) == rows
            assert page.get_by_text("Untrained weights: the attention shown means nothing")\
                .first.is_visible()
            sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
            assert "width apply to" not in sidebar  # SE_VIZ_WIDTH is SE-ResNet-50's alone
            charts = {}
            for tab, ready, button, after in FAMILY_VIEWS:
                page.get_by_role("tab", name=tab).click()
                page.get_by_text(ready).first.wait_for(timeout=60_000)
                if button:
                    page.get_by_role("button", name=button).click()
                    page.get_by_text(after).first.wait_for(timeout=90_000)
                page.wait_for_timeout(800)  # let plotly draw what just arrived
                charts[tab] = _plots_drawn(page)
                assert page.locator('[data-testid="stException"]').count() == 0, (arch, tab)
                assert "Something unexpected" not in page.locator(
                    '[data-testid="stMain"]').inner_text(), (arch, tab)
                assert not js_errors, (arch, tab, js_errors)
            for tab in ("Overview", "Block explorer", "SE block, step by step",
                        "Compare blocks", "Compare images", "Reduction ratio", "Interventions"):
                assert charts[tab] >= 1, (arch, tab, charts)
            timings[arch] = time.perf_counter() - start
    print(f"\nseconds per family (pick, heatmap, every view): "
          f"{ {a: round(s, 1) for a, s in timings.items()} }")
    assert "Traceback" not in log.read_text()


# ----------------------------------------------------------------------------- channel atlas
@pytest.fixture(scope="module")
def atlas_results(tmp_path_factory) -> Path:
    """A results folder of the server's own network (narrow SE-ResNet-50, 1000 classes,
    224 crops) over tests/test_dataset.py's 18-image folder."""
    from se_viz.dataset import Settings, analyze

    from .test_dataset import QUIET, make_folder

    images = make_folder(tmp_path_factory.mktemp("atlas_images"))
    out = tmp_path_factory.mktemp("atlas_results")
    net = Settings(weights=None, width=WIDTH, num_classes=1000, batch_size=6, shard_size=8)
    assert analyze(images, out, net, QUIET).merged
    return out


def _atlas_ready(page, channel: int, block: str, k: int = 8) -> None:
    """Until the atlas shows channel ``channel`` of ``block``: its top list's title, and
    every thumbnail of the grid loaded."""
    main = page.locator('[data-testid="stMain"]')
    title = f"Top {k}: the highest gates of channel {channel} of {block}"
    main.get_by_text(title).filter(visible=True).wait_for(timeout=90_000)
    page.wait_for_function("() => { const imgs = [...document.querySelectorAll("
                           "'[data-testid=\"stMain\"] [data-testid=\"stImage\"] img')]"
                           ".filter(i => i.offsetParent !== null);"
                           " return imgs.length > 0 && imgs.every(i => i.complete && "
                           "i.naturalWidth > 0); }", timeout=60_000)


def _shown(page):
    """The main area's visible part (the open tab; others stay in the page, hidden)."""
    return page.locator('[data-testid="stMain"]')


def _grid_captions(page) -> list[str]:
    return _shown(page).locator('[data-testid="stImage"]').filter(visible=True)\
        .all_inner_texts()


def test_channel_atlas_grid_and_click_through_from_the_overview(server, atlas_results):
    """A results folder opened in the sidebar, a channel picked in the Channel atlas: the
    grid of top and bottom images is there (the files GateStore.top names, pictures
    loaded); then the Overview's "Open channel C of block B in the atlas" lands on the
    atlas with that block and channel."""
    from playwright.sync_api import expect

    from se_viz.dataset.atlas import GateStore

    url, log = server
    store = GateStore.open(atlas_results)
    js_errors: list[str] = []
    with app_page(url, js_errors) as page:
        uploader(page).set_input_files(str(PHOTO))
        wait_for_heatmap(page)
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Channel atlas (results folder)").click()
        box = sidebar.get_by_label("Results folder")
        box.fill(str(atlas_results))
        box.press("Enter")
        start = time.perf_counter()
        page.get_by_role("tab", name="Channel atlas").click()
        main = _shown(page)
        block = main.get_by_role("combobox", name="Attention block").filter(visible=True)\
            .input_value().split()[0]
        channel = main.get_by_label("Channel", exact=True).filter(visible=True)
        channel.fill("5")
        channel.press("Enter")
        _atlas_ready(page, 5, block)
        seconds = time.perf_counter() - start
        captions = "\n".join(_grid_captions(page))
        for hit in store.top(block, 5, k=8) + store.top(block, 5, k=8, bottom=True):
            assert f"{hit.file} · {hit.class_name} · gate {hit.gate:.3f}" in captions
        assert main.locator('[data-testid="stImage"] img').filter(visible=True).count() \
            >= 16 + 8  # the two lists and the photo's closest images
        assert page.locator('[data-testid="stException"]').count() == 0
        print(f"\natlas: folder typed -> channel 5 of {block} drawn: {seconds:.1f} s")

        page.get_by_role("tab", name="Overview").click()
        _choose(page, "Block for the atlas", "SE_4_2")
        main.get_by_role("button", name="Open channel 0 of SE_4_2 in the atlas")\
            .wait_for(timeout=30_000)  # the block's own channel input is drawn
        jump = main.get_by_label("Channel", exact=True).filter(visible=True)
        jump.fill("7")
        jump.press("Enter")
        main.get_by_role("button", name="Open channel 7 of SE_4_2 in the atlas").click()
        _atlas_ready(page, 7, "SE_4_2")
        expect(page.get_by_role("tab", name="Channel atlas")).to_have_attribute(
            "aria-selected", "true")
        assert main.get_by_role("combobox", name="Attention block").filter(visible=True)\
            .input_value().startswith("SE_4_2")
        expect(main.get_by_label("Channel", exact=True).filter(visible=True))\
            .to_have_value("7")
        captions = "\n".join(_grid_captions(page))
        for hit in store.top("SE_4_2", 7, k=8):
            assert f"{hit.file} · {hit.class_name} · gate {hit.gate:.3f}" in captions
        assert page.locator('[data-testid="stException"]').count() == 0
        assert not js_errors, js_errors
    assert "Traceback" not in log.read_text()
