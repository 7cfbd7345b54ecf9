"""The import graph: dependencies point one way between the packages of the `rohde` namespace, and no
module imports itself back through another. Read from the source with `ast`, so lazy imports inside
functions count too."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOTS = (REPO_ROOT, REPO_ROOT / "server", REPO_ROOT / "training")  # the three roots of the namespace

# Which packages each package may import (besides itself). The core is at the bottom; the server never
# imports training; the tools on top (bench, cli) may use everything.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "simulation": {"core"},
    "classic": {"core"},
    "server": {"core", "simulation"},
    "training": {"core", "simulation", "classic"},
    "data_tools": {"core", "simulation", "classic"},
    "bench": {"core", "simulation", "classic", "server", "training"},
    "reliability": {"core", "simulation", "classic", "server", "training", "bench"},
    "cli": {"core", "data_tools", "server", "training", "bench", "reliability"},
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in (root / "rohde").rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, module: str, *, top_level_only: bool) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _package(module: str) -> str:
    return module.split(".")[1]


def test_the_three_roots_hold_the_whole_namespace() -> None:
    packages = {_package(m) for m in _modules() if m.count(".") >= 1}
    assert packages == set(ALLOWED), packages
    assert not any((root / "rohde" / "__init__.py").exists() for root in ROOTS), "rohde is a namespace package"


def test_dependencies_point_one_way() -> None:
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        own = _package(module)
        for target in _imports(path, module, top_level_only=False):
            if target.startswith("rohde.") and target in modules:
                other = _package(target)
                if other != own and other not in ALLOWED[own]:
                    wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(set(wrong)))


def test_no_module_imports_itself_back() -> None:
    modules = _modules()
    graph = {m: {t for t in _imports(p, m, top_level_only=False) if t in modules and t != m}
             for m, p in modules.items()}
    # A package's __init__ importing its own modules is not a loop of interest; the modules themselves are.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import loops:\n" + "\n".join(" -> ".join(c) for c in cycles)
