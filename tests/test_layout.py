"""The package layout is the architecture: imports flow one way between kd_plugin's subpackages, with no cycle.

Every import statement counts, module-level or inside a function, so a lazy import cannot hide an edge.
"""
import ast
import os
from pathlib import Path

import kd_plugin

PACKAGE_DIR = os.path.dirname(kd_plugin.__file__)
# Higher layers may import lower ones, never the other way. Equal layers must not import each other.
LAYERS = [
    {"util"},
    {"models", "data"},
    {"checkpoint"},
    {"protocol"},
    {"distill"},
    {"spec"},  # the run spec: what every layer above speaks
    {"bridge"},
    {"engine"},
    {"export"},  # shipped formats; reporting's model cards measure them
    {"reporting"},
    {"experiments"},
    {"cli"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
# Modules at the top of kd_plugin: the package itself and the `python -m` names users type.
TOP_LEVEL = {"__init__", "__main__", "compress_classifier", "main_kd_cifar10", "distiller_launcher"}


def _modules():
    for root, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, PACKAGE_DIR)[:-3].split(os.sep)
                yield path, rel


def _imported_packages(path, rel):
    """The kd_plugin subpackages (first component below kd_plugin) that the module at PATH imports."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), path)
    here = rel[:-1]  # the module's package, for a module and for a package's __init__ alike
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # from . import x (at the top level)
                    target = [alias.name for alias in node.names][:1]
            elif node.module and node.module.split(".")[0] == "kd_plugin":
                target = node.module.split(".")[1:] or [alias.name for alias in node.names][:1]
            else:
                continue
            found.add(target[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "kd_plugin" and len(parts) > 1:
                    found.add(parts[1])
    return found


def _edges():
    edges = set()
    for path, rel in _modules():
        if len(rel) == 1:
            continue
        for target in _imported_packages(path, rel):
            if target != rel[0]:
                edges.add((rel[0], target, os.path.relpath(path, PACKAGE_DIR)))
    return edges


def test_every_subpackage_has_a_layer():
    packages = {rel[0] for _, rel in _modules() if len(rel) > 1}
    top = {rel[0] for _, rel in _modules() if len(rel) == 1}
    assert packages == set(RANK), "a new subpackage needs a place in LAYERS"
    assert top == TOP_LEVEL, "kd_plugin's top level holds only the package and its `python -m` entry points"


def test_imports_flow_downwards():
    upward = sorted(f"{where}: {src} -> {dst}" for src, dst, where in _edges() if RANK[dst] >= RANK[src])
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_cycle_between_packages():
    graph = {}
    for src, dst, _ in _edges():
        graph.setdefault(src, set()).add(dst)
    state = {}

    def visit(node, trail):
        if state.get(node) == "open":
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(node):] + [node]))
        if state.get(node) == "done":
            return
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])


def test_layer_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ..cli.compress_classifier import main\n")
    assert _imported_packages(str(bad), ["engine", "bad"]) == {"cli"}
    assert RANK["cli"] > RANK["engine"]
