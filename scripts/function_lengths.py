"""List the longest functions of snnbench (AST-based: ``end_lineno - lineno + 1``, decorators excluded).

Usage: ``python scripts/function_lengths.py [N]`` (default 15) prints the N longest functions/methods of
``bench/``, ``attacks/`` and ``defenses/`` with their line counts and parameter counts, then a summary
(functions over 50 and over 80 lines, functions with more than 8 parameters: the project's size habits are
functions that fit a screen and at most ~8 parameters).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "attacks", "defenses")


def functions(root: Path = ROOT) -> list[tuple[int, int, str]]:
    """(lines, parameters, "path:line qualname") for every function and method."""
    out: list[tuple[int, int, str]] = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            rel = path.relative_to(root)

            def visit(node: ast.AST, prefix: str, rel: Path = rel) -> None:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        name = f"{prefix}{child.name}"
                        a = child.args
                        params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                        params -= 1 if a.args and a.args[0].arg in ("self", "cls") else 0
                        assert child.end_lineno is not None
                        out.append((child.end_lineno - child.lineno + 1, params, f"{rel}:{child.lineno} {name}"))
                        visit(child, f"{name}.")
                    elif isinstance(child, ast.ClassDef):
                        visit(child, f"{prefix}{child.name}.")
                    else:
                        visit(child, prefix)

            visit(tree, "")
    return sorted(out, key=lambda t: (-t[0], t[2]))


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 15
    fns = functions()
    print(f"{'lines':>5} {'params':>6}  function")
    for lines, params, name in fns[:n]:
        print(f"{lines:5d} {params:6d}  {name}")
    print(
        f"# {len(fns)} functions; > 50 lines: {sum(f[0] > 50 for f in fns)}; > 80 lines: "
        f"{sum(f[0] > 80 for f in fns)}; > 8 parameters: {sum(f[1] > 8 for f in fns)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
