"""Upload -> heatmap visible, in a real browser, with the full-size SE-ResNet-50.

    python benchmarks/browser_upload.py            # every sample photo, one after the other
    python benchmarks/browser_upload.py --width 8  # the narrow demo model of the tests

Starts ``streamlit run app.py`` on 127.0.0.1 with an empty weights cache (untrained, seeded
weights: the same network and cost as the pretrained one), opens Debian's Chromium through
Playwright, and for each photo in ``assets/`` (a new upload each time, so nothing is cached)
measures the seconds from handing the file to the page's file input until the gate
heatmap's block labels are drawn. Prints one line per photo and the median.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"streamlit did not start in {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64, help="64: SE-ResNet-50; 8: narrow demo")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    photos = sorted((ROOT / "assets").glob("*.jpg"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    home = tempfile.mkdtemp(prefix="se_viz_browser_bench_")
    env = dict(os.environ, SE_VIZ_WIDTH=str(args.width), SE_VIZ_HOME=home)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py",
                             "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    seconds = []
    try:
        _wait_healthy(url, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            page.goto(url)
            page.get_by_text("Drop one or more photos").wait_for(timeout=180_000)
            page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
            print(f"page ready (model built, fast graph prepared, welcome chart drawn): "
                  f"{time.perf_counter() - start:.2f} s")
            uploader = page.locator('[data-testid="stSidebar"] input[type="file"]').first
            heatmaps = page.locator(".js-plotly-plot", has_text="SE_2_1")
            for i, photo in enumerate(photos):  # each upload adds one photo to the page
                start = time.perf_counter()
                uploader.set_input_files(str(photo))
                page.get_by_role("heading", name=photo.name).wait_for(timeout=120_000)
                heatmaps.nth(i).locator("text", has_text="SE_2_1").first.wait_for(
                    timeout=120_000)
                seconds.append(time.perf_counter() - start)
                print(f"{photo.name}: upload -> heatmap visible {seconds[-1]:.2f} s")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"median over {len(seconds)} uploads: {statistics.median(seconds):.2f} s "
          f"(SE_VIZ_WIDTH={args.width}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
