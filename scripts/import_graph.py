"""Print snnbench's import graph (AST-based, no code is imported) and every import cycle.

Usage::

    python scripts/import_graph.py            # edges per module, then cycles
    python scripts/import_graph.py --cycles   # cycles only
    python scripts/import_graph.py --check    # exit status 1 on any cycle or up-arrow (tests/test_layout.py)
    python scripts/import_graph.py --root ../other-checkout --cycles

Both module-level imports and imports inside functions (marked ``(f)``) count: a function-level import is
how a cycle hides (Python tolerates it at run time, a reader cannot layer the code). Imports under
``if TYPE_CHECKING:`` are left out (they never run). An import names a module of the project
(``snnbench`` and its submodules, from the folders bench/, attacks/, defenses/); ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. Parent packages that Python initialises on the way
(``bench/__init__.py`` for ``snnbench.x``) are not edges: they are not a choice of the importing module.

A cycle is a strongly connected component of two or more modules (Tarjan's algorithm); one shortest
cycle through its first module is printed as an example.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# repository folder -> the import name it installs as (pyproject.toml's package-dir; docs/design.md "Layout")
PACKAGES = {"bench": "snnbench", "attacks": "snnbench.attacks", "defenses": "snnbench.defenses"}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name (``snnbench.…``) -> file, for every ``.py`` file of the project's packages."""
    out: dict[str, Path] = {}
    for folder, name in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [name, *path.relative_to(root / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def package_of(mod: str) -> str:
    """The sub-package a module belongs to: snnbench.attacks, snnbench.defenses, snnbench.snn or snnbench."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or mod in ("snnbench.attacks", "snnbench.defenses", "snnbench.snn") else "snnbench"


# The layers, lowest first (docs/design.md "Layers"). A module may import its own layer and lower ones; an
# import into a higher layer (module- or function-level) is an "up-arrow" and fails --check, as a cycle does.
# A new module must be placed here (an unplaced module fails --check too).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaf", ("errors", "kind_table", "eot_defaults", "paths", "seeding", "specs", "papers", "suite_spec", "protocol")),
    ("config and storage", ("registry", "store", "data")),
    ("spiking core", ("snn", "snn.*")),
    ("attacks and defenses", ("attacks", "attacks.*", "defenses", "defenses.*")),
    ("model services", ("kinds", "train", "scoring", "checks", "contract", "adapters", "importers", "activity")),
    ("read side", ("suite_results", "export", "report_data", "dataframes", "report_plots", "regress", "cost", "report")),
    ("pipeline", ("plan", "provenance", "prepare", "strategies", "diagnostics", "pipeline", "suites", "sweep",
                  "perf", "submission")),
    ("entry points", ("api", "cli", "cli_*", "__main__", "")),
]


def layer_of(mod: str) -> int:
    """Index in :data:`LAYERS` of a module (``snnbench.x.y`` matched as ``x.y``); -1 when unplaced."""
    from fnmatch import fnmatch

    short = mod[len("snnbench."):] if mod.startswith("snnbench.") else ("" if mod == "snnbench" else mod)
    for i, (_, pats) in enumerate(LAYERS):
        if any(fnmatch(short, p) if p else short == "" for p in pats):
            return i
    return -1


def up_arrows(full: dict[str, dict[str, bool]]) -> list[tuple[str, str, bool]]:
    """(importer, imported, function-level) for every import into a higher layer, and unplaced modules
    as (module, "unplaced", False)."""
    out = [(m, "unplaced", False) for m in sorted(full) if layer_of(m) < 0]
    for m, edges in sorted(full.items()):
        for t, f in sorted(edges.items()):
            if layer_of(m) >= 0 and layer_of(t) > layer_of(m):
                out.append((m, t, f))
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, bool]]:
    """Every import statement with ``True`` when it sits inside a function body."""
    found: list[tuple[ast.stmt, bool]] = []

    def walk(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    walk_stmt(sub, in_func)
                continue
            walk_stmt(child, in_func)

    def walk_stmt(child: ast.AST, in_func: bool) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append((child, in_func))
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            walk(child, True)
        else:
            walk(child, in_func)

    walk(tree, False)
    return found


def _resolve(mod: str, is_pkg: bool, node: ast.stmt, known: dict[str, Path]) -> list[str]:
    """Project modules named by one import statement."""
    targets: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:  # ``import a.b.c`` of a non-module attribute path
                name = name.rpartition(".")[0]
            if name:
                targets.append(name)
        return targets
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:  # relative import
        pkg = mod if is_pkg else mod.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            targets.append(sub)
        elif base in known:
            targets.append(base)
    return targets


def graph(root: Path = ROOT) -> dict[str, dict[str, bool]]:
    """module -> {imported project module: True when only imported inside functions}."""
    known = modules(root)
    out: dict[str, dict[str, bool]] = {}
    for mod, path in known.items():
        edges: dict[str, bool] = {}
        tree = ast.parse(path.read_text(), str(path))
        for node, in_func in _imports(tree):
            for target in _resolve(mod, path.name == "__init__.py", node, known):
                if target != mod:
                    edges[target] = edges.get(target, True) and in_func
        out[mod] = edges
    return out


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node, each sorted, list sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(comps)


def example_cycle(g: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest cycle through ``comp[0]`` inside the component (breadth-first search)."""
    start, members = comp[0], set(comp)
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(g.get(v, ())):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def cycles(full: dict[str, dict[str, bool]], include_function_level: bool) -> list[list[str]]:
    g = {m: {t for t, f in e.items() if include_function_level or not f} for m, e in full.items()}
    return strongly_connected(g)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", action="store_true", help="print only the cycles")
    ap.add_argument("--check", action="store_true", help="exit 1 when any cycle or up-arrow exists")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root to read (default: this one)")
    args = ap.parse_args(argv)
    full = graph(args.root)
    if not args.cycles:
        print("# import graph: module -> project modules it imports ((f) = only inside functions)")
        for mod in sorted(full):
            deps = ", ".join(f"{t}{' (f)' if f else ''}" for t, f in sorted(full[mod].items()))
            print(f"{mod} -> {deps or '-'}")
        print()
        pkg_edges = sorted(
            {(package_of(m), package_of(t)) for m, e in full.items() for t in e if package_of(m) != package_of(t)}
        )
        print("# package graph: " + ", ".join(f"{a} -> {b}" for a, b in pkg_edges))
        print()
    n_edges = sum(len(e) for e in full.values())
    n_func = sum(f for e in full.values() for f in e.values())
    print(f"# {len(full)} modules, {n_edges} edges ({n_func} only inside functions)")
    total = 0
    for label, inc in (("module-level imports only", False), ("module-level + function-level imports", True)):
        comps = cycles(full, inc)
        total += len(comps)
        print(f"# cycles ({label}): {len(comps)}")
        g = {m: {t for t, f in e.items() if inc or not f} for m, e in full.items()}
        for comp in comps:
            print(f"  component of {len(comp)}: {', '.join(comp)}")
            print(f"    e.g. {' -> '.join(example_cycle(g, comp))}")
    ups = up_arrows(full)
    print(f"# up-arrows (imports into a higher layer, LAYERS): {len(ups)}")
    for m, target, f in ups:
        print(f"  {m} -> {target}{' (f)' if f else ''}")
    return 1 if args.check and (total or ups) else 0


if __name__ == "__main__":
    raise SystemExit(main())
