"""The package keeps the shape its docstring states: layers, no import circles, small files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "plugserve"
# Top to bottom, as plugserve/__init__.py draws them; a module belongs to the longest prefix that names it.
LAYERS = [
    ["plugserve.cli"],
    ["plugserve.demo", "plugserve.report", "plugserve.perf"],
    ["plugserve.serve", "plugserve.server", "plugserve.watchdog", "plugserve.client"],
    ["plugserve.build", "plugserve.check_plugins"],
    ["plugserve.lowering"],
    ["plugserve.trt", "plugserve.export", "plugserve.surgery", "plugserve.onnx_io", "plugserve.runners.torch_program",
     "plugserve.runners.torch_runner"],
    ["plugserve.repository", "plugserve.repository_api", "plugserve.ops", "plugserve.models"],
    ["plugserve.config", "plugserve.native", "plugserve.runners", "plugserve.console"],
]
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The plugserve modules `name` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        # `from plugserve.x import y` depends on module plugserve.x.y when y is one, else on plugserve.x.
        found |= {next(c for c in candidates if c in known)} if any(c in known for c in candidates) else set()
    return found - {name}


def layer(name: str) -> int:
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if name == prefix or name.startswith(prefix + ".")]
    if name == "plugserve":
        return len(LAYERS)
    assert matches, f"{name} is in no layer: add it to LAYERS and to the drawing in plugserve/__init__.py"
    return max(matches)[1]


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)


def test_no_module_imports_from_a_layer_above_its_own():
    known = modules()
    upward = [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
              for name, path in known.items() for target in imports(name, path, known) if layer(target) < layer(name)]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_python_file_is_at_most_500_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES
