"""What the tests that drive a real browser share: Debian's Chromium and its flags, a
Streamlit server's start (free port, health) and stop, and the app's page opened, its
uploader and its heatmap. Used by test_browser, test_refit_app and test_app_command."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--disable-quic"]
VIEWPORT = {"width": 1400, "height": 1000}
READY = "Drop one or more photos"  # the uploader's text: the page has started

needs_chromium = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Until Streamlit's health endpoint says ok; fails with the server's log if it exits
    or does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"streamlit did not become healthy in {timeout} s:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C first (Streamlit shuts down cleanly; Paddle reports SIGTERM as a fatal
    error), then terminate, then kill."""
    for signal_it in (lambda: proc.send_signal(signal.SIGINT), proc.terminate, proc.kill):
        if proc.poll() is not None:
            return
        signal_it()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def app_pages(url: str, n: int = 1, js_errors: list[str] | None = None) -> Iterator[list]:
    """``n`` pages of the app at ``url`` in Chromium, each its own browser context (its own
    Streamlit session), all opened before waiting for any to start; JavaScript errors are
    appended to ``js_errors``. The browser is closed afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            pages = [browser.new_context(viewport=VIEWPORT).new_page() for _ in range(n)]
            for page in pages:
                if js_errors is not None:
                    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
                page.goto(url)
            for page in pages:
                page.get_by_text(READY).wait_for(timeout=90_000)
            yield pages
        finally:
            browser.close()


@contextmanager
def app_page(url: str, js_errors: list[str] | None = None) -> Iterator:
    """One page of the app (`app_pages`)."""
    with app_pages(url, 1, js_errors) as pages:
        yield pages[0]


def uploader(page):
    """The sidebar's file input."""
    return page.locator('[data-testid="stSidebar"] input[type="file"]').first


def wait_for_heatmap(page, timeout_ms: int = 90_000) -> None:
    """Until the gate heatmap has drawn its block labels."""
    page.locator(".js-plotly-plot text", has_text="SE_2_1").first.wait_for(timeout=timeout_ms)
