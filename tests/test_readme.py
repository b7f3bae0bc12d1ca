"""The README's two commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert first_block, "README must open with a code block holding the two commands"
    return [ln for ln in first_block.group(1).splitlines() if ln and not ln.startswith("#")]


def test_readme_opens_with_exactly_two_commands():
    app, tests = _readme_commands()
    assert "streamlit run app.py" in app and "scripts/setup.sh" in app
    assert "pytest" in tests and "scripts/setup.sh --dev" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert _readme_commands()[1] in ci.splitlines()


def test_setup_installs_what_the_tests_need():
    setup = (ROOT / "scripts" / "setup.sh").read_text("utf-8")
    assert "requirements.txt" in setup and "requirements-dev.txt" in setup
    assert "apt-get install" in setup and "chromium" in setup
    dev = (ROOT / "requirements-dev.txt").read_text("utf-8")
    for pkg in ("pytest", "playwright", "psutil", "hypothesis"):
        assert re.search(rf"^{pkg}==", dev, re.M), pkg
    runtime = (ROOT / "requirements.txt").read_text("utf-8")
    for pkg in ("paddlepaddle==3.3.1", "streamlit==", "plotly==", "pillow=="):
        assert pkg in runtime
