"""Every module imports on its own in a fresh interpreter, and the layers depend one way.

A module that is only importable after another one was imported first hides an import circle; the layer
check keeps the folder structure honest (a lower layer never imports a higher one).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "molre_lib"

# Lower layers first; a module may import its own layer and the layers before it only.
LAYERS = ["common", "data", "reports", "adapters", "backbones", "stats", "engine", "plots", "analysis", "export",
          "workbook", "cli"]
# plots draws data and statistics only (it sits beside engine, not above it).
ALLOWED_EXTRA = {"plots": {"common", "data", "stats"}}  # reports: report text -> labels (data-level)


def _modules() -> list[str]:
    mods = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.append(".".join(parts))
    return mods


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "molre_lib":
                found |= {f"molre_lib.{a.name}" for a in node.names}
            elif target.startswith("molre_lib"):
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("molre_lib")}
    return found


def test_layers_depend_one_way():
    problems = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
        own = _layer(module)
        if own is None:
            continue
        allowed = set(LAYERS[: LAYERS.index(own) + 1]) if own not in ALLOWED_EXTRA else ALLOWED_EXTRA[own] | {own}
        for target in _imports(p, module):
            layer = _layer(target)
            if layer is not None and layer not in allowed:
                problems.append(f"{module} imports {target} (layer {layer} is above {own})")
    assert not problems, "\n".join(problems)


def test_every_module_imports_alone():
    """One fresh interpreter imports every module in turn, each after clearing molre_lib from sys.modules."""
    code = (
        "import importlib, sys\n"
        f"mods = {_modules()!r}\n"
        "bad = []\n"
        "for m in mods:\n"
        "    for k in [k for k in sys.modules if k == 'molre_lib' or k.startswith('molre_lib.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (lazy imports in functions too), except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit_one(other)
            else:
                visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        visit(node)

    visit(tree)
    return found


def _import_graph() -> dict[str, set[str]]:
    """module -> the molre_lib modules it imports (``from pkg import mod`` points at the module, ``from pkg import
    name`` at the package)."""
    paths = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        paths[".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)] = p
    graph = {}
    for module, path in paths.items():
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
                continue
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets |= {f"{target}.{a.name}" if f"{target}.{a.name}" in paths else target for a in node.names}
        graph[module] = {t for t in targets if t in paths and t != module}
    return graph


def test_no_import_cycles():
    """Static: the import graph (lazy imports included, ``if TYPE_CHECKING:`` blocks left out) has no cycle, so no
    module works only because another one happened to be imported first, and no lazy import hides a circle."""
    graph = _import_graph()
    assert "molre_lib.engine.train" in graph and "molre_lib.backbones.registry" in graph  # the walk found the tree
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                walk(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_backbone_registry_is_a_leaf():
    """Like timm's _registry.py: the spec and the registry import nothing else of the package at run time."""
    graph = _import_graph()
    assert graph["molre_lib.backbones.registry"] == set()


def test_docs_layout_lists_every_package():
    """The docs' repository layout (docs/reference/layout.md) has one line per folder of molre_lib, in the order
    of the layers."""
    page = (PKG.parent / "docs" / "reference" / "layout.md").read_text()
    section = page[page.index("## Library layers"):]
    listed = [line.split("/")[0] for line in section.splitlines() if line and line.split("/")[0].isidentifier()
              and "/ " in line and (PKG / line.split("/")[0]).is_dir()]
    folders = sorted(p.name for p in PKG.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    assert sorted(listed) == folders
    assert [f for f in listed if f in LAYERS] == LAYERS
