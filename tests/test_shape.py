"""The shape of the code under src/: rooms of a readable size, and imports that point one way.

Measured with `ast` on the source files themselves (nothing is imported or run):
- no module over 500 lines, no class over 200, no function over 60;
- a room imports only rooms below it: model (and safefiles) ← blobs ← sources ← plan ← sinks ← run/report ← cli;
- no sink imports another sink (sinks share only sinks/base, sinks/fsout and sinks/tarout).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "regcarve"
MODULE_MAX, CLASS_MAX, FUNCTION_MAX = 500, 200, 60
LAYERS = [  # bottom first: a room may import its own layer and those below
    {"__init__", "safefiles", "model"},
    {"blobs"},
    {"sources"},
    {"plan"},
    {"sinks"},
    {"run", "report"},
    {"cli", "__main__"},
]
SHARED_BY_SINKS = {"__init__", "base", "fsout", "tarout"}


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def room(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def layer_of(name: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if name in rooms)


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every `import regcarve…` and `from regcarve… import`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("regcarve"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("regcarve")]
    return found


def test_there_is_code_to_measure():
    assert len(modules()) > 30 and all(room(p) in set().union(*LAYERS) for p in modules()), \
        "every top-level module or package of src/regcarve has a layer"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_sizes(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MODULE_MAX
    for node in ast.walk(ast.parse(text)):
        length = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
        if isinstance(node, ast.ClassDef):
            assert length <= CLASS_MAX, f"class {node.name}: {length} lines"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert length <= FUNCTION_MAX, f"{node.name}(): {length} lines"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_one_way(path):
    here = layer_of(room(path))
    rel = path.relative_to(SRC).parts
    for line, name in imported(ast.parse(path.read_text())):
        parts = name.split(".")
        if len(parts) < 2:
            continue
        target = parts[1] if parts[1] in set().union(*LAYERS) else "__init__"  # a name regcarve/__init__ holds
        assert layer_of(target) <= here, f"line {line}: {room(path)} imports {name}, a room above it"
        if rel[0] == "sinks" and len(rel) > 1 and parts[1] == "sinks" and len(parts) > 2:
            mine = rel[1].removesuffix(".py")
            theirs = parts[2]
            assert theirs in SHARED_BY_SINKS or theirs == mine, f"line {line}: sink {mine} imports sink {theirs}"
