"""House layering: nothing under se_viz/ imports streamlit; numpy layers never import paddle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "se_viz"
PADDLE_FREE = ("analysis", "figures", "images", "export", "labels", "download", "errors",
               "report", "cache", "mosaic", "shards")
PADDLE_MODULES = {"model", "hooks", "api", "costs", "fast", "dataset"}


def _runtime_nodes(tree: ast.AST):
    """All nodes except those under ``if TYPE_CHECKING:`` (typing-only imports)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> set[str]:
    """Absolute module names imported at run time (relative ones as se_viz.<name>)."""
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and node.module:
                names.add(f"se_viz.{node.module}")
            elif node.level:
                names.update(f"se_viz.{a.name}" for a in node.names)
            else:
                names.add(node.module or "")
    return names


@pytest.mark.parametrize("path", sorted(PKG.glob("*.py")), ids=lambda p: p.name)
def test_no_streamlit_under_the_package(path):
    assert not any(n.split(".")[0] == "streamlit" for n in _imports(path)), path.name


@pytest.mark.parametrize("module", PADDLE_FREE)
def test_numpy_layers_never_import_paddle(module):
    path = PKG / f"{module}.py"
    if not path.exists():
        pytest.skip(f"{module}.py not present")
    imported = _imports(path)
    assert not any(n.split(".")[0] == "paddle" for n in imported), module
    inner = {n.split(".")[1] for n in imported if n.startswith("se_viz.") and n.count(".") >= 1}
    assert not inner & PADDLE_MODULES, f"{module} imports {inner & PADDLE_MODULES}"


def test_only_hooks_registers_hooks():
    for path in PKG.glob("*.py"):
        text = path.read_text("utf-8")
        if path.name != "hooks.py":
            assert "register_forward_" not in text, path.name
