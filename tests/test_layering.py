"""The house layout, checked on the source: every module under se_viz/ (recursively) and
app.py, every import (module level, inside functions and under ``if TYPE_CHECKING:``: a
typing-only import is a dependency too, and a cycle through one is still a cycle).

* no import cycles between se_viz modules;
* each layer imports only the layers allowed below it (`ALLOWED`);
* only se_viz.engine imports paddle, paddle2onnx, onnx or onnxruntime;
* only se_viz.app imports streamlit;
* only se_viz/engine/hooks.py registers hooks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "se_viz"

BOTTOM = {"errors", "arch", "blocks", "maths", "paths", "images", "labels", "results", "cache",
          "export", "version"}
# layer -> the layers its modules may import (besides their own layer)
ALLOWED = {
    "bottom": {"bottom"},
    "analysis": {"bottom"},
    "plots": {"bottom", "analysis"},
    "engine": {"bottom"},
    "runs": {"bottom", "analysis", "engine"},
    "dataset": {"bottom", "analysis", "plots", "engine"},
    "refit": {"bottom", "analysis", "plots", "engine", "dataset"},
    "cli": {"bottom", "analysis", "plots", "engine", "runs", "dataset", "refit", "root"},
    "app": {"bottom", "analysis", "plots", "engine", "runs", "dataset", "refit", "root"},
    "root": {"bottom", "analysis", "plots", "engine"},  # se_viz/__init__: the public API
}
ENTRY_POINTS = {"se_viz.__main__", "se_viz.dataset.__main__"}  # hand argv to the cli
ENGINE_ONLY = {"paddle", "paddle2onnx", "onnx", "onnxruntime"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    top = parts[1]
    return "bottom" if top in BOTTOM else top


def imports(module: str, path: Path) -> set[str]:
    """Absolute names of everything ``module`` imports; relative imports resolved, and
    ``from package import name`` resolved to the submodule when ``name`` is one."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in MODULES else source)
    return found


GRAPH = {m: {i for i in imports(m, p) if i in MODULES and i != m} for m, p in MODULES.items()}
EXTERNAL = {m: {i.split(".")[0] for i in imports(m, p) if not i.startswith("se_viz")}
            for m, p in MODULES.items()}


def test_every_module_is_seen():
    assert "se_viz.engine.traced" in MODULES and "se_viz.app.views.overview" in MODULES
    assert GRAPH["se_viz.engine.capture"] >= {"se_viz.engine.traced", "se_viz.engine.hooks"}
    assert "se_viz.maths" in GRAPH["se_viz.results"]  # `from .maths import ...`
    assert "se_viz.analysis.stats" in GRAPH["se_viz.analysis"]
    assert {"se_viz.runs.images", "se_viz.runs.queue"} <= GRAPH["se_viz.runs.results"]
    assert layer("se_viz.runs.queue") == "runs" and layer("se_viz.refit.steps") == "refit"
    assert "se_viz.dataset.shards" in GRAPH["se_viz.refit.pairs"]


def test_typing_only_imports_are_counted():
    """``if TYPE_CHECKING:`` imports are edges of the graph (a cycle through one is still a
    cycle); dataset.shards has one (images)."""
    assert "se_viz.images" in GRAPH["se_viz.dataset.shards"]
    assert "se_viz.refit.run" not in GRAPH["se_viz.refit.steps"]


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(set(MODULES) - ENTRY_POINTS))
def test_each_layer_imports_only_the_layers_below_it(module):
    mine = layer(module)
    wrong = sorted(i for i in GRAPH[module]
                   if layer(i) != mine and layer(i) not in ALLOWED[mine])
    assert not wrong, f"{module} ({mine}) imports {wrong}"


def test_entry_points_only_call_the_command_line():
    for module in ENTRY_POINTS:
        assert GRAPH[module] <= {"se_viz.cli"}, (module, GRAPH[module])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_paddle_onnx_and_streamlit_stay_in_their_packages(module):
    ext = EXTERNAL[module]
    if layer(module) != "engine":
        assert not ext & ENGINE_ONLY, f"{module} imports {ext & ENGINE_ONLY}"
    if layer(module) != "app":
        assert "streamlit" not in ext, module


def test_app_py_is_only_the_entry_point():
    names = imports("app", ROOT / "app.py")
    assert names == {"se_viz.app.frame"}, names
    assert len((ROOT / "app.py").read_text("utf-8").splitlines()) < 30


def test_only_the_recorder_registers_hooks():
    for module, path in MODULES.items():
        if "register_forward_" in path.read_text("utf-8"):
            assert module == "se_viz.engine.hooks", module


def test_the_frame_is_small_and_every_view_has_a_label_and_a_render():
    frame = PKG / "app" / "frame.py"
    assert len(frame.read_text("utf-8").splitlines()) < 150
    views = sorted((PKG / "app" / "views").glob("*.py"))
    table = (PKG / "app" / "views" / "__init__.py").read_text("utf-8")
    for view in views:
        if view.name == "__init__.py":
            continue
        text = view.read_text("utf-8")
        assert "\nLABEL = " in text and "\ndef render(page" in text, view.name
        assert view.stem in table, f"{view.stem} is not in the VIEWS table"
