"""`se-viz app`: the installed package's Streamlit app, with the packaged config.toml as flags.

The end-to-end test builds a wheel from a copy of the source tree, installs it with
``--no-deps --target`` into a folder, and starts ``se-viz app`` from a folder outside the
checkout with only that folder on PYTHONPATH, so the packaged files are the ones used. Then
the health endpoint answers and a real Chromium uploads a photo and sees the heatmap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from se_viz import cli

from .browser import CHROMIUM, app_page, free_port, stop, uploader, wait_for_heatmap, wait_healthy
from .test_browser import PHOTO

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the command line


def test_flags_are_the_packaged_config():
    settings = tomllib.loads((ROOT / "se_viz" / "app" / "config.toml").read_text("utf-8"))
    flags = cli.streamlit_flags()
    assert len(flags) == sum(len(v) for v in settings.values())
    for section, values in settings.items():
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            assert f"--{section}.{key}={text}" in flags
    assert "--server.maxUploadSize=200" in flags  # what the app needs for ~113 MB files


def test_app_command_runs_the_packaged_script(monkeypatch):
    command = cli.app_command(8600, "0.0.0.0")
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    script = Path(command[4])
    assert script == ROOT / "se_viz" / "app" / "script.py" and script.is_file()
    assert "--server.port=8600" in command and "--server.address=0.0.0.0" in command
    assert command.count("--server.headless=true") == 1
    assert "--server.port=" not in " ".join(cli.app_command())  # Streamlit's default port
    assert "--server.address=127.0.0.1" in cli.app_command()

    seen = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: seen.append((exe, argv)))
    monkeypatch.setattr(subprocess, "call", lambda argv: seen.append(("call", argv)) or 0)
    assert cli.main(["app", "--port", "8601"]) == 0
    assert seen and "--server.port=8601" in seen[0][1]


def test_app_without_streamlit_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "streamlit" else real(name, *a))
    assert cli.main(["app"]) == cli.EXIT_FAILED
    assert "pip install 'se_viz[app]'" in capsys.readouterr().err


def test_bad_port_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["app", "--port", "zero"])
    assert info.value.code == 2 and "not an integer" in capsys.readouterr().err


# --------------------------------------------------------------------------- from a wheel


def _build_wheel(tmp: Path) -> Path:
    """A wheel of a copy of the tree (no build files land in the checkout; no download)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "assets", src / "assets")
    shutil.copytree(ROOT / "se_viz", src / "se_viz", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(out), str(src)], check=True, cwd=tmp)
    (wheel,) = out.glob("se_viz-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed_app(tmp_path_factory):
    """(url, log, target): `se-viz app` from a wheel installed with --target, run outside
    the checkout with SE_VIZ_WIDTH=8 and empty caches."""
    tmp = tmp_path_factory.mktemp("se_viz_app")
    wheel = _build_wheel(tmp)
    names = zipfile.ZipFile(wheel).namelist()
    for packaged in ("se_viz/app/config.toml", "se_viz/app/script.py",
                     "se_viz/app/assets/cat_chelsea.jpg", "se_viz/data/imagenet_classes.txt"):
        assert packaged in names, packaged
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--target", str(target), str(wheel)], check=True, cwd=tmp)
    port, log = free_port(), tmp / "app.log"
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), SE_VIZ_WIDTH="8",
               SE_VIZ_HOME=str(tmp / "home"), HF_HOME=str(tmp / "hf"))
    env.pop("SE_VIZ_MIRROR", None)
    where = subprocess.run([sys.executable, "-c", "import se_viz; print(se_viz.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()) == target / "se_viz" / "__init__.py"  # not the checkout
    code = f"import sys; from se_viz.cli import main; sys.exit(main(['app', '--port', '{port}']))"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=elsewhere, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, timeout=120)
        yield url, log, target, proc
    finally:
        stop(proc)


@pytest.mark.browser
def test_installed_app_serves_its_packaged_files(installed_app):
    import urllib.request

    import psutil

    url, log, target, proc = installed_app

    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
        assert r.read().strip() == b"ok"
    # exec: the `se-viz app` process became Streamlit, running the installed script
    cmdline = psutil.Process(proc.pid).cmdline()
    assert str(target / "se_viz" / "app" / "script.py") in cmdline
    assert "--server.maxUploadSize=200" in cmdline and "--server.address=127.0.0.1" in cmdline
    assert not any(str(ROOT) in part for part in cmdline[1:])  # [0]: this venv's python


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
def test_installed_app_takes_an_upload(installed_app):
    url, log, _, _ = installed_app
    with app_page(url) as page:
        uploader(page).set_input_files(str(PHOTO))
        wait_for_heatmap(page)
        assert page.get_by_role("heading", name=PHOTO.name).first.is_visible()
        assert page.get_by_text("Top-5 classes").is_visible()
        assert page.locator('[data-testid="stException"]').count() == 0
    text = log.read_text()
    assert "Traceback" not in text and "ImportError" not in text
