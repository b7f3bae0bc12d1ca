"""Nothing outside the networks' definitions knows a block count, a name, a depth or a width:
every module reads the model's own block list (``model.info.blocks``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "se_viz"
# where a network is described (and the paper's own facts about SE-ResNet-50's blocks)
DEFINITIONS = ("engine/networks/", "arch.py")
PAPER = ("analysis/paper.py",)
TABLES = {"BLOCK_NAMES", "STAGES", "DEPTHS", "block_channels", "FULL_WIDTH", "stage_of",
          "paper_name", "module_path", "EXPANSION"}
BLOCK_LITERAL = re.compile(r"^SE_\d+_\d+$|\b16 blocks\b|\b15,?104\b")


def _modules(skip: tuple[str, ...]):
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(skip):
            yield rel, ast.parse(path.read_text(encoding="utf-8"))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_no_module_reads_the_old_se_resnet50_tables():
    found = []
    for rel, tree in _modules(DEFINITIONS):
        for node in ast.walk(tree):
            name = (node.id if isinstance(node, ast.Name) else
                    node.attr if isinstance(node, ast.Attribute) else
                    None)
            imported = ([a.name for a in node.names] if isinstance(node, ast.ImportFrom)
                        else [])
            for n in [name, *imported]:
                if n in TABLES and not (rel == "__init__.py" and n == "BLOCK_NAMES"):
                    found.append(f"{rel}:{node.lineno} {n}")
    assert not found, "read model.info.blocks instead: " + ", ".join(found)


def test_no_block_name_or_count_is_written_into_the_code():
    found = []
    for rel, tree in _modules(DEFINITIONS + PAPER):
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docs and BLOCK_LITERAL.search(node.value):
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, "block names and counts come from model.info.blocks: " + ", ".join(found)


def test_the_checks_see_what_they_look_for(tmp_path):
    """The patterns catch an import of a table and a literal block name."""
    tree = ast.parse('from ..arch import BLOCK_NAMES\nx = "SE_4_6"\n')
    assert any(isinstance(n, ast.ImportFrom) and "BLOCK_NAMES" in [a.name for a in n.names]
               for n in ast.walk(tree))
    assert any(isinstance(n, ast.Constant) and BLOCK_LITERAL.search(str(n.value))
               for n in ast.walk(tree))
